//! Every command, through the `redis` crate's client, with Redis's replies
//! and error replies.

mod common;

use redis::{Commands, Value, cmd};

fn err(result: redis::RedisResult<Value>) -> String {
    let e = result.unwrap_err();
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

#[test]
fn strings_set_get_and_the_conditional_forms() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(cmd("PING").arg("hi").query::<String>(&mut c).unwrap(), "hi");
    assert_eq!(
        cmd("ECHO")
            .arg(b"\x00\xff")
            .query::<Vec<u8>>(&mut c)
            .unwrap(),
        b"\x00\xff"
    );
    assert_eq!(cmd("SELECT").arg(0).query::<String>(&mut c).unwrap(), "OK");
    assert!(err(cmd("SELECT").arg(1).query(&mut c)).contains("out of range"));

    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("absent").unwrap(), None);
    // NX / XX / GET.
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("w")
            .arg("NX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("SET")
            .arg("n")
            .arg("1")
            .arg("XX")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(c.exists::<_, i64>("n").unwrap(), 0);
    assert_eq!(
        cmd("SET")
            .arg("k")
            .arg("w")
            .arg("XX")
            .arg("GET")
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert_eq!(
        cmd("SET")
            .arg("new")
            .arg("1")
            .arg("NX")
            .arg("GET")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(c.get::<_, String>("new").unwrap(), "1");
    assert!(
        err(cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .arg("XX")
            .query(&mut c))
        .contains("syntax error")
    );
    assert!(
        err(cmd("SET").arg("k").arg("v").arg("EX").arg(0).query(&mut c))
            .contains("invalid expire time in 'set'")
    );
    assert!(
        err(cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg("x")
            .query(&mut c))
        .contains("not an integer")
    );
    // EX, PX, KEEPTTL.
    let _: () = cmd("SET")
        .arg("t")
        .arg("1")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = c.ttl("t").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = cmd("SET")
        .arg("t")
        .arg("2")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert!(c.ttl::<_, i64>("t").unwrap() > 90);
    let _: () = c.set("t", "3").unwrap();
    assert_eq!(c.ttl::<_, i64>("t").unwrap(), -1);
    assert_eq!(c.ttl::<_, i64>("absent").unwrap(), -2);
    let pttl: i64 = {
        let _: () = cmd("SET")
            .arg("p")
            .arg("1")
            .arg("PX")
            .arg(50_000)
            .query(&mut c)
            .unwrap();
        cmd("PTTL").arg("p").query(&mut c).unwrap()
    };
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    // SETNX, SETEX, PSETEX, GETSET, GETDEL, GETEX.
    assert_eq!(
        cmd("SETNX").arg("k").arg("x").query::<i64>(&mut c).unwrap(),
        0
    );
    assert_eq!(
        cmd("SETNX")
            .arg("nx")
            .arg("x")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let _: () = cmd("SETEX")
        .arg("se")
        .arg(100)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!(c.ttl::<_, i64>("se").unwrap() > 90);
    assert!(
        err(cmd("SETEX").arg("se").arg(-1).arg("v").query(&mut c))
            .contains("invalid expire time in 'setex'")
    );
    let _: () = cmd("PSETEX")
        .arg("pe")
        .arg(100_000)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!(c.ttl::<_, i64>("pe").unwrap() > 90);
    assert_eq!(
        cmd("GETSET")
            .arg("se")
            .arg("g")
            .query::<String>(&mut c)
            .unwrap(),
        "v"
    );
    assert_eq!(c.ttl::<_, i64>("se").unwrap(), -1, "GETSET drops the TTL");
    assert_eq!(
        cmd("GETDEL").arg("se").query::<String>(&mut c).unwrap(),
        "g"
    );
    assert_eq!(
        cmd("GETDEL")
            .arg("se")
            .query::<Option<String>>(&mut c)
            .unwrap(),
        None
    );
    assert_eq!(
        cmd("GETEX")
            .arg("k")
            .arg("EX")
            .arg(100)
            .query::<String>(&mut c)
            .unwrap(),
        "w"
    );
    assert!(c.ttl::<_, i64>("k").unwrap() > 90);
    assert_eq!(
        cmd("GETEX")
            .arg("k")
            .arg("PERSIST")
            .query::<String>(&mut c)
            .unwrap(),
        "w"
    );
    assert_eq!(c.ttl::<_, i64>("k").unwrap(), -1);
    // MSET, MGET, MSETNX.
    let _: () = cmd("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("MGET")
            .arg("a")
            .arg("zz")
            .arg("b")
            .query::<Vec<Option<String>>>(&mut c)
            .unwrap(),
        [Some("1".into()), None, Some("2".into())]
    );
    assert!(
        err(cmd("MSET").arg("a").query(&mut c)).contains("wrong number of arguments for 'mset'")
    );
    assert_eq!(
        cmd("MSETNX")
            .arg("a")
            .arg("9")
            .arg("c")
            .arg("3")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        c.exists::<_, i64>("c").unwrap(),
        0,
        "MSETNX is all or nothing"
    );
    assert_eq!(
        cmd("MSETNX")
            .arg("c")
            .arg("3")
            .arg("d")
            .arg("4")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    // DEL, UNLINK, EXISTS, TYPE.
    assert_eq!(
        cmd("DEL")
            .arg("a")
            .arg("a")
            .arg("zz")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(cmd("UNLINK").arg("b").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("EXISTS")
            .arg("c")
            .arg("c")
            .arg("a")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    assert_eq!(
        cmd("TYPE").arg("c").query::<String>(&mut c).unwrap(),
        "string"
    );
    assert_eq!(
        cmd("TYPE").arg("a").query::<String>(&mut c).unwrap(),
        "none"
    );
    // A big value arrives in many reads and comes back whole.
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("big").unwrap(), big);
    assert_eq!(
        cmd("STRLEN").arg("big").query::<i64>(&mut c).unwrap(),
        5 << 20
    );
}

#[test]
fn numbers_appends_and_ranges() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    assert_eq!(cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        cmd("INCRBY").arg("n").arg(10).query::<i64>(&mut c).unwrap(),
        11
    );
    assert_eq!(cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(), 10);
    assert_eq!(
        cmd("DECRBY").arg("n").arg(20).query::<i64>(&mut c).unwrap(),
        -10
    );
    let _: () = c.set("s", "abc").unwrap();
    assert!(
        err(cmd("INCR").arg("s").query(&mut c)).contains("value is not an integer or out of range")
    );
    let _: () = c.set("big", i64::MAX).unwrap();
    assert!(err(cmd("INCR").arg("big").query(&mut c)).contains("would overflow"));
    let _: () = cmd("SET")
        .arg("e")
        .arg("5")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    assert_eq!(cmd("INCR").arg("e").query::<i64>(&mut c).unwrap(), 6);
    assert!(c.ttl::<_, i64>("e").unwrap() > 90, "INCR keeps the TTL");
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("10.5")
            .query::<String>(&mut c)
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        cmd("INCRBYFLOAT")
            .arg("f")
            .arg("0.1")
            .query::<String>(&mut c)
            .unwrap(),
        "10.6"
    );
    assert!(err(cmd("INCRBYFLOAT").arg("s").arg("1").query(&mut c)).contains("not a valid float"));
    assert_eq!(
        cmd("APPEND")
            .arg("ap")
            .arg("Hello")
            .query::<i64>(&mut c)
            .unwrap(),
        5
    );
    assert_eq!(
        cmd("APPEND")
            .arg("ap")
            .arg(" World")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(cmd("STRLEN").arg("ap").query::<i64>(&mut c).unwrap(), 11);
    assert_eq!(cmd("STRLEN").arg("none").query::<i64>(&mut c).unwrap(), 0);
    assert_eq!(
        cmd("GETRANGE")
            .arg("ap")
            .arg(0)
            .arg(4)
            .query::<String>(&mut c)
            .unwrap(),
        "Hello"
    );
    assert_eq!(
        cmd("GETRANGE")
            .arg("ap")
            .arg(-5)
            .arg(-1)
            .query::<String>(&mut c)
            .unwrap(),
        "World"
    );
    assert_eq!(
        cmd("SETRANGE")
            .arg("ap")
            .arg(6)
            .arg("Redis")
            .query::<i64>(&mut c)
            .unwrap(),
        11
    );
    assert_eq!(c.get::<_, String>("ap").unwrap(), "Hello Redis");
    assert_eq!(
        cmd("SETRANGE")
            .arg("pad")
            .arg(3)
            .arg("x")
            .query::<i64>(&mut c)
            .unwrap(),
        4
    );
    assert_eq!(c.get::<_, Vec<u8>>("pad").unwrap(), b"\0\0\0x");
    assert!(
        err(cmd("SETRANGE").arg("pad").arg(-1).arg("x").query(&mut c))
            .contains("offset is out of range")
    );
}

#[test]
fn expiry_commands_and_keys_expiring_in_real_time() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(
        cmd("EXPIRE")
            .arg("k")
            .arg(100)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("absent")
            .arg(100)
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("k")
            .arg(50)
            .arg("GT")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("k")
            .arg(50)
            .arg("LT")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        cmd("EXPIRE")
            .arg("k")
            .arg(500)
            .arg("NX")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert!(
        err(cmd("EXPIRE")
            .arg("k")
            .arg(5)
            .arg("NX")
            .arg("XX")
            .query(&mut c))
        .contains("not compatible")
    );
    let ttl: i64 = c.ttl("k").unwrap();
    assert!((49..=50).contains(&ttl), "{ttl}");
    assert_eq!(cmd("PERSIST").arg("k").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(cmd("PERSIST").arg("k").query::<i64>(&mut c).unwrap(), 0);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 100;
    assert_eq!(
        cmd("EXPIREAT")
            .arg("k")
            .arg(at)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(c.ttl::<_, i64>("k").unwrap() > 90);
    assert_eq!(
        cmd("PEXPIREAT")
            .arg("k")
            .arg(at * 1000)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    // A time in the past deletes the key.
    assert_eq!(
        cmd("PEXPIRE")
            .arg("k")
            .arg(-1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(c.exists::<_, i64>("k").unwrap(), 0);
    // Real expiry, bounded: a 100 ms key is gone within 5 s.
    let _: () = cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.get::<_, Option<String>>("short").unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the key never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(c.ttl::<_, i64>("short").unwrap(), -2);
}

#[test]
fn keyspace_scan_keys_randomkey_dbsize_flushdb() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    assert_eq!(
        cmd("RANDOMKEY").query::<Option<String>>(&mut c).unwrap(),
        None
    );
    for i in 0..500 {
        let _: () = c.set(format!("user:{i}"), i).unwrap();
    }
    let _: () = c.set("other", 1).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 501);
    let mut keys: Vec<String> = cmd("KEYS").arg("user:4?").query(&mut c).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        (40..50).map(|i| format!("user:{i}")).collect::<Vec<_>>()
    );
    // SCAN returns every key exactly once.
    let mut cursor = 0u64;
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(50)
            .query(&mut c)
            .unwrap();
        seen.extend(batch);
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 100);
    }
    seen.sort();
    let mut expected: Vec<String> = (0..500).map(|i| format!("user:{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(
        calls > 1,
        "a COUNT of 50 takes more than one call for 500 keys"
    );
    assert!(err(cmd("SCAN").arg("x").query(&mut c)).contains("invalid cursor"));
    let key: String = cmd("RANDOMKEY").query(&mut c).unwrap();
    assert!(key.starts_with("user:") || key == "other");
    let _: () = cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
}

#[test]
fn server_commands_hello_client_command_config_info() {
    let server = common::start(|_| {});
    let mut c = server.connect();
    // HELLO 3 switches to RESP3: a map, and nulls as `_`.
    let hello: Value = cmd("HELLO").arg(3).query(&mut c).unwrap();
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(c.get::<_, Option<String>>("absent").unwrap(), None);
    assert!(err(cmd("HELLO").arg(4).query(&mut c)).starts_with("NOPROTO"));
    let _: Value = cmd("HELLO").arg(2).query(&mut c).unwrap();
    let _: () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("me")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut c)
            .unwrap(),
        "me"
    );
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(
        info.contains(&format!("id={id} ")) && info.contains("name=me"),
        "{info}"
    );
    assert!(cmd("COMMAND").arg("COUNT").query::<i64>(&mut c).unwrap() > 40);
    let _: Value = cmd("COMMAND").arg("DOCS").query(&mut c).unwrap();
    let entries: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1], Value::Nil);
    let config: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut c)
        .unwrap();
    assert_eq!(config, ["appendonly", "yes"]);
    let all: Vec<String> = cmd("CONFIG").arg("GET").arg("*").query(&mut c).unwrap();
    assert!(all.len() > 10 && all.len().is_multiple_of(2), "{all:?}");
    let _: () = c.set("k", "v").unwrap();
    let info: String = cmd("INFO").query(&mut c).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "{section} in {info}");
    }
    assert!(info.contains("db0:keys=1"), "{info}");
    let keyspace: String = cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(!keyspace.contains("# Server"), "{keyspace}");
    // Anything else: an error, and the connection goes on.
    assert!(err(cmd("LPUSH").arg("l").arg("x").query(&mut c)).contains("unknown command 'LPUSH'"));
    assert!(err(cmd("GET").query(&mut c)).contains("wrong number of arguments for 'get'"));
    assert_eq!(cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(cmd("QUIT").query::<String>(&mut c).unwrap(), "OK");
}

#[test]
fn save_bgsave_and_lastsave_write_a_checkpoint_that_opens() {
    let save = tempfile::tempdir().unwrap();
    let save_dir = save.path().to_path_buf();
    let server = common::start(|config| config.save_dir = Some(save_dir.clone()));
    let mut c = server.connect();
    let _: () = c.set("k", "v1").unwrap();
    let before: i64 = cmd("LASTSAVE").query(&mut c).unwrap();
    let _: () = cmd("SAVE").query(&mut c).unwrap();
    let checkpoint = save.path().join("checkpoint");
    {
        let copy = kv_engine::Db::open_read_only(&checkpoint).unwrap();
        assert_eq!(copy.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    }
    assert!(cmd("LASTSAVE").query::<i64>(&mut c).unwrap() >= before);
    let _: () = c.set("k", "v2").unwrap();
    assert_eq!(
        cmd("BGSAVE").query::<String>(&mut c).unwrap(),
        "Background saving started"
    );
    // Bounded wait for the background save.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let info: String = cmd("INFO").arg("persistence").query(&mut c).unwrap();
        if info.contains("rdb_bgsave_in_progress:0") {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let copy = kv_engine::Db::open_read_only(&checkpoint).unwrap();
    assert_eq!(copy.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    // Without a save directory, SAVE says how to get one.
    let plain = common::start(|_| {});
    let mut c = plain.connect();
    assert!(err(cmd("SAVE").query(&mut c)).contains("--save-dir"));
}
