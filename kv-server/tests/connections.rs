//! Connections: pipelines, many clients at once, authentication,
//! protected mode, malformed streams, client and idle limits, shutdown,
//! and kill -9 of the server process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis::{Commands, cmd};

/// Sends `bytes` on a new raw connection and reads until the server
/// closes it (bounded by a 10 s read timeout).
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn a_pipeline_of_10000_commands_gets_10000_replies_in_order() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg("counter");
    }
    let counts: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(counts, (1..=5_000).collect::<Vec<i64>>());
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("GET").arg(format!("k{}", i % 5_000));
    }
    let values: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(values, (0..10_000).map(|i| i % 5_000).collect::<Vec<i64>>());
    // Pipelined plain SETs go to the engine together; a bad one among
    // them fails alone, and a read after them sees them.
    let set = |k: &str, v: &str| {
        format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        )
    };
    let input = [
        set("a", "1"),
        set("", "x"),
        set("b", "2"),
        "GET b\r\nQUIT\r\n".into(),
    ]
    .concat();
    let reply = String::from_utf8(raw(server.addr, input.as_bytes())).unwrap();
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(lines[0], "+OK", "{reply}");
    assert!(lines[1].starts_with("-ERR invalid key"), "{reply}");
    assert_eq!(&lines[2..6], ["+OK", "$1", "2", "+OK"], "{reply}");
    assert_eq!(c.get::<_, String>("a").unwrap(), "1");
    // MSETs join them too, each failing alone.
    let reply = raw(
        server.addr,
        b"MSET m1 1 m2 2\r\nMSET m3 3 '' 4\r\nSET m4 4\r\nMGET m1 m3 m4\r\nQUIT\r\n",
    );
    let reply = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(lines[0], "+OK", "{reply}");
    assert!(lines[1].starts_with("-ERR invalid key"), "{reply}");
    assert_eq!(
        &lines[2..10],
        ["+OK", "*3", "$1", "1", "$-1", "$1", "4", "+OK"],
        "{reply}"
    );
    // Pipelined increments are one update, each seeing the ones before it,
    // each failing alone.
    let _: () = cmd("SET")
        .arg("ttl")
        .arg("1")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let reply = raw(
        server.addr,
        b"INCR n\r\nINCR n\r\nINCRBY n x\r\nSET s abc\r\nINCR s\r\nINCR n\r\nDECRBY n 5\r\nINCR ''\r\nINCR ttl\r\nQUIT\r\n",
    );
    let reply = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(&lines[..2], [":1", ":2"], "{reply}");
    assert!(lines[2].contains("not an integer"), "{reply}");
    assert_eq!(lines[3], "+OK", "{reply}");
    assert!(lines[4].contains("not an integer"), "{reply}");
    assert_eq!(&lines[5..7], [":3", ":-2"], "{reply}");
    assert!(lines[7].starts_with("-ERR invalid key"), "{reply}");
    assert_eq!(&lines[8..10], [":2", "+OK"], "{reply}");
    assert_eq!(c.get::<_, i64>("n").unwrap(), -2);
    assert!(
        c.ttl::<_, i64>("ttl").unwrap() > 90,
        "a pipelined INCR keeps the TTL"
    );
}

#[test]
fn a_hundred_concurrent_connections_lose_no_increment() {
    for sync in [kv_engine::SyncPolicy::Never, kv_engine::SyncPolicy::Always] {
        let server = common::start(|config| config.sync = sync);
        let client = server.client();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        const CLIENTS: i64 = 100;
        const EACH: i64 = 20;
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..CLIENTS {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = client.get_multiplexed_async_connection().await.unwrap();
                    for i in 0..EACH {
                        let _: () = cmd("SET")
                            .arg(format!("c{t}"))
                            .arg(i)
                            .query_async(&mut c)
                            .await
                            .unwrap();
                        let _: i64 = cmd("INCR").arg("total").query_async(&mut c).await.unwrap();
                        let v: i64 = cmd("GET")
                            .arg(format!("c{t}"))
                            .query_async(&mut c)
                            .await
                            .unwrap();
                        assert_eq!(v, i);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let mut c = server.connect();
        assert_eq!(
            c.get::<_, i64>("total").unwrap(),
            CLIENTS * EACH,
            "{sync:?}"
        );
        assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), CLIENTS + 1);
    }
}

#[test]
fn with_a_password_nothing_runs_before_auth() {
    let server = common::start(|config| config.requirepass = Some("s3cret".into()));
    let mut c = server.connect();
    let e = cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOAUTH"), "{e}");
    let e = cmd("AUTH")
        .arg("wrong")
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"), "{e}");
    let _: () = cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    let _: () = c.set("k", "v").unwrap();
    // A URL with the password authenticates at connect; HELLO AUTH too.
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut d = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(d.get::<_, String>("k").unwrap(), "v");
    let mut h = server.connect();
    let _: redis::Value = cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut h)
        .unwrap();
    assert_eq!(h.get::<_, String>("k").unwrap(), "v");
    // Before AUTH, a big request is refused and the connection closed.
    let reply = raw(server.addr, b"*20\r\n");
    assert!(
        String::from_utf8_lossy(&reply).contains("unauthenticated multibulk length"),
        "{reply:?}"
    );
    // Without a password, AUTH says none is set.
    let open = common::start(|_| {});
    let mut o = open.connect();
    let e = cmd("AUTH").arg("x").query::<String>(&mut o).unwrap_err();
    assert!(
        e.to_string().contains("without any password configured"),
        "{e}"
    );
}

#[test]
fn protected_mode_refuses_an_open_address_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = kv_server::Config::new(dir.path().join("db"));
    config.bind = "0.0.0.0".parse().unwrap();
    config.port = 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = runtime.block_on(kv_server::Server::bind(config.clone()));
    let e = refused.err().expect("refused");
    assert!(e.to_string().contains("--requirepass"), "{e}");
    assert!(!dir.path().join("db").exists(), "nothing was created");
    // With a password it binds (and is shut down at once, listening on
    // no address a test should keep open).
    config.requirepass = Some("pw".into());
    let server = runtime.block_on(kv_server::Server::bind(config)).unwrap();
    server.shutdown_handle().shutdown();
    runtime.block_on(server.run()).unwrap();
}

#[test]
fn malformed_streams_get_an_error_and_a_close_and_harm_no_one_else() {
    let server = common::start(|_| {});
    let mut bystander = server.connect();
    let _: () = bystander.set("k", "v").unwrap();
    for (input, expected) in [
        (&b"*x\r\n"[..], "invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
        (b"*1\r\n:5\r\n", "expected '$', got ':'"),
        (b"*1\r\n$1\r\nabc\r\n", "CRLF"),
        (b"SET \"unclosed\r\n", "unbalanced quotes"),
        (
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*-3\r\n\x00\xff\xfe garbage \r\n",
            "unknown command",
        ),
    ] {
        let reply = String::from_utf8_lossy(&raw(server.addr, input)).into_owned();
        assert!(reply.contains(expected), "{input:?}: {reply:?}");
    }
    // A header line without its end, longer than 64 KiB: refused at once.
    let reply = raw(server.addr, &[b'*'; 70_000]);
    assert!(
        String::from_utf8_lossy(&reply).contains("too big"),
        "{reply:?}"
    );
    let reply = raw(server.addr, &[b'a'; 70_000]);
    assert!(String::from_utf8_lossy(&reply).contains("too big inline request"));
    // A truncated frame, then the client goes away: nothing happens.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nt\r\n$10\r\nabc")
        .unwrap();
    drop(s);
    // Inline commands work, as from telnet.
    let reply = raw(server.addr, b"SET inline 'a b'\r\nGET inline\r\nQUIT\r\n");
    assert_eq!(reply, b"+OK\r\n$3\r\na b\r\n+OK\r\n");
    assert_eq!(bystander.get::<_, String>("k").unwrap(), "v");
    assert_eq!(bystander.exists::<_, i64>("t").unwrap(), 0);
}

#[test]
fn past_maxclients_a_client_is_told_and_closed_and_idle_ones_are_closed() {
    let server = common::start(|config| {
        config.maxclients = 2;
        config.timeout = Some(Duration::from_millis(300));
    });
    let mut a = server.connect();
    let mut b = server.connect();
    let _: () = a.set("k", "v").unwrap();
    let _: () = b.set("k", "v").unwrap();
    let reply = raw(server.addr, b"PING\r\n");
    assert_eq!(reply, b"-ERR max number of clients reached\r\n");
    // Idle past the timeout: closed (the next command fails), and the
    // slots free up.
    std::thread::sleep(Duration::from_millis(800));
    assert!(cmd("PING").query::<String>(&mut a).is_err());
    let mut c = server.connect();
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn shutdown_finishes_and_closes_the_database_cleanly() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    for i in 0..100 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let _ = cmd("SHUTDOWN").query::<()>(&mut c);
    let dir = server.db_dir();
    let done = std::sync::mpsc::channel();
    let (tx, rx) = done;
    let waiter = std::thread::spawn(move || tx.send(server.join()).unwrap());
    let (result, _kept) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server stopped");
    result.unwrap();
    waiter.join().unwrap();
    let db = kv_engine::Db::open(&dir).unwrap();
    assert_eq!(db.len(), 100);
    assert_eq!(db.get(b"k99").unwrap().as_deref(), Some(&b"99"[..]));
}

/// Starts the `kv-server` binary on `dir` and a free port; returns the
/// child and its address once it answers PING.
#[allow(clippy::zombie_processes)] // the caller kills the child and waits for it
fn spawn_binary(dir: &std::path::Path, port: u16) -> std::process::Child {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kv-server"))
        .arg("--dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string())
        .arg("--sync")
        .arg("always")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let url = format!("redis://127.0.0.1:{port}/");
    loop {
        if let Ok(mut c) = redis::Client::open(url.as_str()).unwrap().get_connection()
            && cmd("PING").query::<String>(&mut c).is_ok()
        {
            return child;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn kill_9_of_the_server_loses_nothing_it_acknowledged_under_sync_always() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let port = free_port();
    let mut child = spawn_binary(&db, port);
    let url = format!("redis://127.0.0.1:{port}/");
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..300 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).unwrap();
        let _: i64 = c.incr("n", 1).unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let port = free_port();
    let mut child = spawn_binary(&db, port);
    let url = format!("redis://127.0.0.1:{port}/");
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..300 {
        assert_eq!(
            c.get::<_, String>(format!("k{i}")).unwrap(),
            format!("v{i}")
        );
    }
    assert_eq!(c.get::<_, i64>("n").unwrap(), 300);
    // SIGTERM: a clean stop.
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(&pid)
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reopened = kv_engine::Db::open(&db).unwrap();
    assert_eq!(reopened.len(), 301);
}
