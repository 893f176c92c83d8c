//! A server on a loopback port of its own, in a thread with its own
//! runtime, for the tests to talk to with the `redis` crate.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::thread::JoinHandle;

use kv_server::{Config, Server, ServerError, ShutdownHandle};

pub struct Running {
    pub addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    /// A client of this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://{}/", self.addr)).unwrap()
    }

    /// A connection to it.
    pub fn connect(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// The database directory.
    pub fn db_dir(&self) -> std::path::PathBuf {
        self.dir.as_ref().unwrap().path().join("db")
    }

    /// Shuts the server down and waits for it to finish.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }

    /// Waits for a server that a client shut down; returns how it ended,
    /// and its directory (kept until dropped).
    pub fn join(mut self) -> (Result<(), ServerError>, tempfile::TempDir) {
        let result = self.thread.take().unwrap().join().unwrap();
        (result, self.dir.take().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// Starts a server on a database in a new temporary directory, on a port
/// the system picks, with `configure` applied to its configuration.
pub fn start(configure: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("db"));
    config.port = 0;
    configure(&mut config);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = match Server::bind(config).await {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok((server.local_addr(), server.shutdown_handle())));
            server.run().await
        })
    });
    let (addr, handle) = rx.recv().unwrap().unwrap();
    Running {
        addr,
        dir: Some(dir),
        handle,
        thread: Some(thread),
    }
}
