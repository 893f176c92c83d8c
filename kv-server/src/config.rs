//! The server's settings ([`Config`]) and the command line that sets them
//! ([`ServerArgs`], shared by `kv-server` and `kv serve`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use kv_engine::SyncPolicy;

use crate::resp::Limits;

/// Everything the server is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database directory (created if missing or empty).
    pub dir: PathBuf,
    /// The address to listen on.
    pub bind: IpAddr,
    /// The port (0: one the system picks; see `Server::local_addr`).
    pub port: u16,
    /// With a password, every command but `AUTH`, `HELLO` and `QUIT` is
    /// refused until the client authenticates.
    pub requirepass: Option<String>,
    /// When an acknowledged write is durable.
    pub sync: SyncPolicy,
    /// Refuse to listen on an address other than loopback without a
    /// password (Redis's protected mode).
    pub protected_mode: bool,
    /// The most clients connected at once; one more is told so and closed.
    pub maxclients: usize,
    /// A client idle this long is closed (`None`: never).
    pub timeout: Option<Duration>,
    /// Where `SAVE` and `BGSAVE` write their checkpoint.
    pub save_dir: Option<PathBuf>,
    /// Bounds on requests from authenticated clients.
    pub limits: Limits,
}

impl Config {
    /// The defaults for a database in `dir`: 127.0.0.1:6379, no password,
    /// `SyncPolicy::Interval(1s)` (Redis's `appendfsync everysec`),
    /// protected mode, 10,000 clients, no idle timeout, no save directory.
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6379,
            requirepass: None,
            sync: SyncPolicy::Interval(Duration::from_secs(1)),
            protected_mode: true,
            maxclients: 10_000,
            timeout: None,
            save_dir: None,
            limits: Limits::default(),
        }
    }
}

/// The command line of `kv-server` and `kv serve`, but for the database
/// directory (`--dir`, which each binary has of its own).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The address to listen on. Anything but loopback needs
    /// --requirepass, or --protected-mode no.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The port to listen on.
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// The password clients must give (AUTH, or HELLO ... AUTH) before any
    /// other command.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// When a write is durable before it is acknowledged: `always` (each
    /// write synced, in groups), `interval:DURATION` (synced within it:
    /// `interval:1s`), or `never` (left to the OS; a kill of the server
    /// loses nothing acknowledged, a power loss may).
    #[arg(long, default_value = "interval:1s", value_parser = parse_sync)]
    pub sync: SyncPolicy,
    /// `no` to listen on a non-loopback address without a password.
    #[arg(long, default_value = "yes", value_parser = parse_yes_no)]
    pub protected_mode: bool,
    /// The most clients connected at once.
    #[arg(long, default_value_t = 10_000)]
    pub maxclients: usize,
    /// Close a client idle for this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Where SAVE and BGSAVE write a checkpoint of the database (a
    /// directory of its own; the last one is kept).
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
}

impl ServerArgs {
    /// The configuration these arguments give, for the database in `dir`.
    pub fn config(&self, dir: impl Into<PathBuf>) -> Config {
        Config {
            bind: self.bind,
            port: self.port,
            requirepass: self.requirepass.clone(),
            sync: self.sync,
            protected_mode: self.protected_mode,
            maxclients: self.maxclients,
            timeout: (self.timeout > 0).then(|| Duration::from_secs(self.timeout)),
            save_dir: self.save_dir.clone(),
            ..Config::new(dir)
        }
    }
}

/// `always`, `never`, or `interval:DURATION`.
pub fn parse_sync(text: &str) -> Result<SyncPolicy, String> {
    match text {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        _ => {
            let Some(interval) = text.strip_prefix("interval:") else {
                return Err(format!(
                    "'{text}' is not a sync policy: give always, never or interval:DURATION (interval:1s)"
                ));
            };
            let d = humantime::parse_duration(interval)
                .map_err(|e| format!("'{interval}' is not a duration: {e}"))?;
            if d.is_zero() {
                return Err("the interval must be more than zero (or give always)".into());
            }
            Ok(SyncPolicy::Interval(d))
        }
    }
}

fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("'{text}': give yes or no")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policies_parse_and_bad_ones_say_why() {
        assert_eq!(parse_sync("always"), Ok(SyncPolicy::Always));
        assert_eq!(parse_sync("never"), Ok(SyncPolicy::Never));
        assert_eq!(
            parse_sync("interval:250ms"),
            Ok(SyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert!(
            parse_sync("sometimes")
                .unwrap_err()
                .contains("always, never")
        );
        assert!(parse_sync("interval:0s").is_err());
    }
}
