//! `kv-server`: serves a kv database over the Redis protocol.

#![forbid(unsafe_code)]

use clap::Parser;

/// Serve a kv database over the Redis protocol (RESP2 and RESP3): any
/// Redis client (redis-cli, redis-py, ioredis, Jedis, go-redis) can use
/// it. Stops on SIGTERM, SIGINT or SHUTDOWN, finishing the commands in
/// flight and closing the database cleanly.
#[derive(Debug, Parser)]
#[command(name = "kv-server", version)]
struct Cli {
    /// The database directory; created if missing or empty.
    #[arg(long, env = "KV_DIR", default_value = "kv-data")]
    dir: std::path::PathBuf,
    #[command(flatten)]
    args: kv_server::ServerArgs,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    match kv_server::run_until_stopped(cli.args.config(&cli.dir)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-server: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
