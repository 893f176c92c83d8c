//! `kv`: the command-line tool for the kv storage engine.
//!
//! A thin layer over `kv-engine`: every command opens the database, makes
//! one call, and closes it.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kv_engine::{Db, Error};

/// Exit codes, documented in `--help` and the README.
mod exit {
    pub(crate) const OK: u8 = 0;
    pub(crate) const NOT_FOUND: u8 = 1;
    // 2 is clap's code for a usage error.
    pub(crate) const ERROR: u8 = 3;
    pub(crate) const CORRUPTION: u8 = 4;
    pub(crate) const LOCKED: u8 = 5;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  key not found (get)
  2  usage error
  3  any other error (I/O, bad input, ...)
  4  the database is corrupt
  5  the database is locked by another process";

/// kv: an embedded key-value store, on a local directory.
#[derive(Debug, Parser)]
#[command(name = "kv", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The database directory; created if missing.
    #[arg(long, env = "KV_DIR", default_value = "kv-data", global = true)]
    dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to VALUE.
    #[command(after_help = AFTER_HELP)]
    Put {
        /// The key (1 to 65535 bytes).
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY; exit 1 if it is absent.
    ///
    /// On a terminal, bytes that are not printable text are escaped; to a
    /// pipe the value is written raw.
    #[command(after_help = AFTER_HELP)]
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY; deleting an absent key is not an error.
    #[command(after_help = AFTER_HELP)]
    Delete {
        /// The key.
        key: String,
    },
    /// Print every key, one per line, in no particular order.
    #[command(after_help = AFTER_HELP)]
    Keys,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("kv: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Error>() {
        Some(Error::Corruption { .. } | Error::UnsupportedFile { .. }) => exit::CORRUPTION,
        Some(Error::Locked { .. }) => exit::LOCKED,
        _ => exit::ERROR,
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let db = Db::open(&cli.dir)?;
    let code = match cli.command {
        Command::Put { key, value } => {
            db.put(key.as_bytes(), value.as_bytes())?;
            exit::OK
        }
        Command::Get { key } => match db.get(key.as_bytes())? {
            Some(value) => {
                let mut out = std::io::stdout().lock();
                write_value(&mut out, &value, std::io::stdout().is_terminal())?;
                exit::OK
            }
            None => {
                eprintln!("kv: key not found");
                exit::NOT_FOUND
            }
        },
        Command::Delete { key } => {
            db.delete(key.as_bytes())?;
            exit::OK
        }
        Command::Keys => {
            let tty = std::io::stdout().is_terminal();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for key in db.keys() {
                write_value(&mut out, &key, tty)?;
            }
            out.flush()?;
            exit::OK
        }
    };
    db.close()?;
    Ok(code)
}

/// Writes `bytes` and a newline: raw to a pipe, escaped on a terminal so
/// that binary data cannot garble it.
fn write_value(out: &mut impl Write, bytes: &[u8], terminal: bool) -> std::io::Result<()> {
    if terminal {
        write!(out, "{}", bytes.escape_ascii())?;
    } else {
        out.write_all(bytes)?;
    }
    out.write_all(b"\n")
}
