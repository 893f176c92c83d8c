//! kv-server: the kv storage engine over the Redis protocol (RESP2 and
//! RESP3), so that every language with a Redis client can use it.
//!
//! ```no_run
//! # async fn run() -> Result<(), kv_server::ServerError> {
//! let mut config = kv_server::Config::new("kv-data");
//! config.port = 6380;
//! let server = kv_server::Server::bind(config).await?;
//! server.run().await
//! # }
//! ```
//!
//! Map: `resp.rs` parses requests (arrays of bulk strings, inline
//! commands) under [`resp::Limits`]; `reply.rs` writes replies;
//! `commands.rs` runs each command against [`kv_engine::Db`], with every
//! read-modify-write as one `Db::update`; `server.rs` holds the listener,
//! the connections and the shared state; `info.rs` the `INFO` text;
//! `glob.rs` Redis's patterns; `config.rs` the settings and the command
//! line that `kv-server` and `kv serve` share.

#![forbid(unsafe_code)]

mod commands;
pub mod config;
mod glob;
mod info;
pub mod reply;
pub mod resp;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use config::{Config, ServerArgs};
pub use server::{Server, ShutdownHandle};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Protected mode: no password, and an address other than loopback.
    #[error(
        "refusing to listen on {bind} without a password: anyone who can reach it could read \
         and write the database. Give --requirepass PASSWORD, bind 127.0.0.1, or pass \
         --protected-mode no if the network is trusted"
    )]
    ProtectedMode {
        /// The address asked for.
        bind: IpAddr,
    },
    /// The database did not open, or did not close cleanly.
    #[error("database {dir}: {source}")]
    Db {
        /// The database directory.
        dir: PathBuf,
        /// The engine's error.
        source: kv_engine::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The runtime could not be started, or a signal handler installed.
    #[error("cannot start the server: {0}")]
    Runtime(std::io::Error),
}

/// Runs a server with `config` until SIGTERM, SIGINT or a client's
/// `SHUTDOWN`: stops accepting, lets connections finish the commands they
/// have read, closes the database. Builds its own tokio runtime; logs the
/// address once listening.
///
/// # Errors
///
/// As [`Server::bind`] and [`Server::run`].
pub fn run_until_stopped(config: Config) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kv-server")
        .build()
        .map_err(ServerError::Runtime)?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let handle = server.shutdown_handle();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ServerError::Runtime)?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
            }
            handle.shutdown();
        });
        eprintln!("kv-server: listening on {}", server.local_addr());
        server.run().await
    })
}
