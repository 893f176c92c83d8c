//! `kv`: the command-line tool for the kv storage engine.
//!
//! A thin layer over `kv-engine`: every command opens the database, makes
//! its calls into the engine, and closes it. `kv shell` keeps one database
//! open for a session of the same commands. `kv verify` never opens the
//! database: it calls the engine's read-only `verify`.

#![forbid(unsafe_code)]

mod encoding;
mod framing;
mod shell;
mod transfer;

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kv_engine::{CompactionReport, Db, Error, Options, Stats};

use crate::encoding::{Encoding, escape_for_terminal};
use crate::transfer::{ExportArgs, ImportArgs};

/// Exit codes, documented in `--help` and the README.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// The key is absent (`get`).
    pub(crate) const NOT_FOUND: u8 = 1;
    /// A usage error: clap's code, and ours for bad arguments.
    pub(crate) const USAGE: u8 = 2;
    /// Any other error.
    pub(crate) const ERROR: u8 = 3;
    /// Damaged data.
    pub(crate) const CORRUPTION: u8 = 4;
    /// Another process has the database open.
    pub(crate) const LOCKED: u8 = 5;
}

pub(crate) const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  key not found (get)
  2  usage error (bad arguments)
  3  any other error (I/O, bad input data, a key or value too large, ...)
  4  the database is corrupt (verify found damage, or a read hit it)
  5  the database is locked: another process has it open";

/// kv: an embedded key-value store, on a local directory.
///
/// Keys are 1 to 65535 bytes, values 0 bytes to 64 MiB. Every command opens
/// the database in --dir (creating it for writes, in a missing or empty
/// directory), runs, and closes it;
/// `kv shell` keeps it open for many commands.
#[derive(Debug, Parser)]
#[command(name = "kv", version, about, long_about, after_help = AFTER_HELP)]
struct Cli {
    /// The database directory; commands that write create a database in
    /// a missing or empty one.
    #[arg(
        long,
        env = "KV_DIR",
        hide_env_values = true,
        default_value = "kv-data",
        global = true
    )]
    dir: PathBuf,

    /// If another process has the database open, wait for it to close it,
    /// up to DURATION (30s, 5m, ...), or with no DURATION for as long as
    /// it takes; exit 5 if it is still held then. Without --wait a held
    /// database is exit 5 at once. Commands that only read (get, ttl,
    /// keys, scan, count, stats, export, verify) never wait: they read the
    /// database beside whoever has it open.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "forever",
        value_parser = parse_wait
    )]
    wait: Option<Wait>,

    #[command(subcommand)]
    command: Command,
}

/// How long `--wait` waits for the lock: `None` for as long as it takes.
#[derive(Debug, Clone, Copy)]
struct Wait(Option<Duration>);

fn parse_wait(text: &str) -> Result<Wait, String> {
    if text == "forever" {
        return Ok(Wait(None));
    }
    humantime::parse_duration(text)
        .map(|d| Wait(Some(d)))
        .map_err(|e| format!("{e}; write a duration such as 500ms, 30s or 5m"))
}

/// How a key or value argument, and printed keys and values, are written.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct EncodingArg {
    /// How KEY, VALUE and PREFIX arguments are read, and keys and values
    /// printed: utf8 (as given; printed raw to a pipe and escaped on a
    /// terminal), hex or base64.
    #[arg(short, long, value_enum, default_value_t)]
    encoding: Encoding,
}

/// The commands, shared by the command line and `kv shell`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Set KEY to VALUE.
    #[command(after_help = AFTER_HELP)]
    Put {
        /// The key (1 to 65535 bytes once decoded).
        key: OsString,
        /// The value (up to 64 MiB once decoded). Or give --value-file.
        #[arg(required_unless_present = "value_file")]
        value: Option<OsString>,
        /// Read the value's bytes from this file ('-' for stdin), as they
        /// are: --encoding does not apply to them.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        value_file: Option<PathBuf>,
        /// Expire the key after this long: 30s, 5m, 1h, 2days, "1h 30m".
        /// After that it reads as absent, and compaction drops it.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print the value of KEY; exit 1 if it is absent.
    ///
    /// On a terminal, bytes that are not printable text are escaped; to a
    /// pipe the value is written raw, then a newline.
    #[command(after_help = AFTER_HELP)]
    Get {
        /// The key.
        key: OsString,
        #[command(flatten)]
        encoding: EncodingArg,
        /// Write the value's bytes exactly as stored, with no newline and
        /// no escaping, even to a terminal; --encoding then applies to KEY
        /// only. Without it the value is printed in --encoding, then a
        /// newline.
        #[arg(long)]
        raw: bool,
    },
    /// Delete KEY; deleting an absent key is not an error.
    #[command(after_help = AFTER_HELP)]
    Delete {
        /// The key.
        key: OsString,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print how long KEY has left to live ("59s", "1h 29m 59s", rounded
    /// down to the second), or "none" if it never expires; exit 1 if it is
    /// absent.
    #[command(after_help = AFTER_HELP)]
    Ttl {
        /// The key.
        key: OsString,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Make KEY expire after DURATION from now (30s, 5m, 1h, "1h 30m"),
    /// keeping its value; exit 1 if it is absent.
    ///
    /// The value is written again, with the new expiry.
    #[command(after_help = AFTER_HELP)]
    Expire {
        /// The key.
        key: OsString,
        /// The time to live from now.
        #[arg(value_parser = parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Make KEY never expire, keeping its value; exit 1 if it is absent.
    ///
    /// The value is written again, without an expiry.
    #[command(after_help = AFTER_HELP)]
    Persist {
        /// The key.
        key: OsString,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print keys, one per line, in no particular order.
    #[command(after_help = AFTER_HELP)]
    Keys {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print keys and values, one `KEY<TAB>VALUE` line each, in no
    /// particular order.
    ///
    /// On a terminal both are escaped (a tab or newline in them shows as \t
    /// or \n); to a pipe they are written raw, so a key or value holding a
    /// tab or newline is ambiguous there: use `export` for data to read
    /// back.
    #[command(after_help = AFTER_HELP)]
    Scan {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print the number of keys (that start with PREFIX, if given).
    #[command(after_help = AFTER_HELP)]
    Count {
        /// Only keys that start with PREFIX. The index is a hash table, not
        /// ordered, so this is a linear scan of every key; without it the
        /// count is the index's, at once.
        #[arg(long, short)]
        prefix: Option<OsString>,
        #[command(flatten)]
        encoding: EncodingArg,
    },
    /// Print sizes, space and activity counters.
    ///
    /// keys, live and dead bytes of records, segments and their bytes, WAL
    /// bytes, compactions run and bytes reclaimed, index memory, and puts,
    /// gets and deletes. The last five count since the database was opened:
    /// in a one-shot `kv stats` that is just now, so run it in `kv shell`
    /// to see a session's.
    #[command(after_help = AFTER_HELP)]
    Stats {
        /// Print one JSON object instead, with the same names (bytes as
        /// plain numbers).
        #[arg(long)]
        json: bool,
    },
    /// Compact now: rewrite every segment that holds dead records, and
    /// report what was reclaimed.
    ///
    /// A spinner shows on a terminal; piped, only the report is printed.
    #[command(after_help = AFTER_HELP)]
    Compact,
    /// Write a consistent copy of the database, as of now, into DIR.
    ///
    /// DIR must not exist, or be an empty directory. The copy is a complete
    /// database (open it with --dir DIR); sealed segments are hard-linked
    /// where the file system allows, so it takes little space at first.
    #[command(after_help = AFTER_HELP)]
    Checkpoint {
        /// The new directory.
        // NOTE: not named `dir`, which would shadow the global --dir.
        #[arg(value_name = "DIR")]
        target: PathBuf,
    },
    /// Copy what a damaged database still holds intact into a new one in
    /// DIR, and report what could not be read.
    ///
    /// Every segment and WAL file is read, past each damaged place to the
    /// next intact record; each key gets its newest intact value. The
    /// damaged database is not changed. Each damaged place is listed
    /// (file, offset, bytes), with the keys whose latest version may be
    /// lost: they are copied with the newest value that could be read, so
    /// check them. Exit 0 if nothing was lost, 4 if something may have
    /// been. DIR must not exist, or be an empty directory.
    #[command(after_help = AFTER_HELP)]
    Salvage {
        /// The new directory.
        #[arg(value_name = "DIR")]
        target: PathBuf,
    },
    /// Check every file of the database (segments, hint files, WAL files,
    /// the CHECKPOINT marker) and every checksum, without changing
    /// anything.
    ///
    /// Each problem is printed with its file and offset; the exit code is 4
    /// if any is found. Warnings (a torn write at the end of the WAL, which
    /// opening the database cuts off; leftover temporary files) do not
    /// change the exit code. If another process has the database open,
    /// what it no longer changes is checked beside it (everything but the
    /// data it wrote since its last checkpoint marker, which is checked in
    /// the WAL), and the output says so.
    #[command(after_help = AFTER_HELP)]
    Verify,
    /// Load keys and values from FILE (or stdin) into the database.
    ///
    /// Formats: jsonl, one {"key": ..., "value": ...} object per line, with
    /// "ttl_ms": N for a key that expires N milliseconds after the import
    /// (any other field is an error); tsv,
    /// one KEY<TAB>VALUE[<TAB>TTL_MS] line each. With --encoding utf8, TSV fields are
    /// escaped: \\ for a backslash, \t, \n and \r for a tab, newline and
    /// carriage return; any other backslash sequence is an error. Records
    /// are written in atomic batches of --batch-size; on an error the
    /// batches before it stay written and the message says how far the
    /// import got.
    #[command(after_help = AFTER_HELP)]
    Import(ImportArgs),
    /// Write every key and value to FILE (or stdout), in no particular
    /// order.
    ///
    /// Formats as for import (which reads them back), with the time a key
    /// has left to live, if it expires, as "ttl_ms" (a third TSV field).
    /// FILE is written as FILE.partial and renamed once complete. With --encoding utf8,
    /// a key or value that is not valid UTF-8 is an error: use hex or
    /// base64 for binary data.
    #[command(after_help = AFTER_HELP)]
    Export(ExportArgs),
    /// An interactive prompt for these commands, on one open database.
    ///
    /// On a terminal: line editing and history (kept in ~/.kv_history).
    /// Otherwise commands are read from stdin, one per line, so the shell
    /// can be scripted. Words are split as a POSIX shell does (quotes,
    /// backslashes). An error is printed and the shell goes on; its exit
    /// code is that of the last command that failed, or 0. `help`, `help
    /// COMMAND`, `exit` and `quit` are also understood.
    ///
    /// Read from stdin, each error starts with its line number ("line 3:
    /// error: ..."). A block pasted at the prompt runs line by line, as if
    /// typed.
    #[command(after_help = AFTER_HELP)]
    Shell {
        /// Stop at the first command that fails, with its exit code,
        /// instead of going on.
        #[arg(long)]
        bail: bool,
    },
    /// Print a completion script for SHELL to stdout; no database is
    /// opened.
    ///
    /// bash: `kv completions bash > ~/.local/share/bash-completion/completions/kv`;
    /// zsh: `kv completions zsh > "${fpath[1]}/_kv"`; fish: `kv completions
    /// fish > ~/.config/fish/completions/kv.fish`.
    #[command(after_help = AFTER_HELP)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Serve the database over the Redis protocol (RESP2 and RESP3), as
    /// `kv-server` does: any Redis client can use it. Stops on SIGTERM,
    /// SIGINT or SHUTDOWN, closing the database cleanly.
    #[command(after_help = AFTER_HELP)]
    Serve {
        #[command(flatten)]
        args: kv_server::ServerArgs,
    },
    /// Print the manual page (roff) to stdout; no database is opened.
    ///
    /// `kv man > kv.1 && man ./kv.1`, or install it as
    /// ~/.local/share/man/man1/kv.1; `kv man put > kv-put.1` gives the page
    /// of one command, which kv(1) refers to.
    #[command(after_help = AFTER_HELP)]
    Man {
        /// A command, for its own page (kv-COMMAND(1)).
        command: Option<String>,
    },
}

/// Which keys `keys` and `scan` print.
#[derive(Debug, Clone, Args)]
pub(crate) struct Filter {
    /// Only keys that start with PREFIX. The index is a hash table, not
    /// ordered, so this is a linear scan of every key.
    #[arg(long, short)]
    prefix: Option<OsString>,
    /// Stop after N keys.
    #[arg(long, short = 'n', value_name = "N")]
    limit: Option<usize>,
}

/// An error in the arguments, reported with exit code 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // The engine's warnings, as sentences in the CLI's own voice:
    // `kv: warning: ...` (RUST_LOG=info or debug shows more, tagged alike).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(buf, "kv: {level}: {}", record.args())
        })
        .init();
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("kv: {}", one_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The command line, parsed. Help and the version go to stdout with exit
/// 0 (`kv help --help` too); a usage error is one line on stderr, as every
/// other error is, with exit 2; a bare `kv` prints the help to stderr, with
/// exit 2.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, ExitCode> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    // clap takes `help --help` for help about a subcommand named --help:
    // make it `--help`.
    if let Some(i) = subcommand_position(&args)
        && args[i] == "help"
        && args.get(i + 1).is_some_and(|a| a == "--help" || a == "-h")
    {
        args.remove(i);
    }
    let parsed = cli_command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    parsed.map_err(|err| {
        if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            // A bare `kv`: the whole help, on stderr, is the answer.
            let _ = err.print();
            ExitCode::from(exit::USAGE)
        } else if err.use_stderr() {
            eprintln!("kv: {}", usage_error_line(&err));
            ExitCode::from(exit::USAGE)
        } else {
            let _ = err.print();
            ExitCode::from(exit::OK)
        }
    })
}

/// The command line's definition, with the version line of this build.
fn cli_command() -> clap::Command {
    Cli::command().version(version())
}

/// [`version_line`] as clap takes it, a `&'static str`: leaked once per
/// process.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| Box::leak(version_line().into_boxed_str()))
}

/// Where the subcommand is in `args`: the first word after the program
/// name that is neither an option nor the value of `--dir`.
fn subcommand_position(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg == "--dir" {
            i += 2;
        } else if arg.as_bytes().starts_with(b"-") {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// What `kv --version` prints after the name: the version, the commit it
/// was built from, and the on-disk formats it writes.
fn version_line() -> String {
    format!(
        "{} (commit {}; record format {}, segment format {})",
        env!("CARGO_PKG_VERSION"),
        env!("KV_BUILD_COMMIT"),
        kv_engine::RECORD_FORMAT_VERSION,
        kv_engine::SEGMENT_VERSION,
    )
}

/// A clap usage error on one line: its message, then the usage it shows.
fn usage_error_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let message = lines.next().unwrap_or("bad arguments");
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let mut line = message.to_string();
    for rest in lines {
        if let Some(usage) = rest.strip_prefix("Usage: ") {
            line.push_str(&format!("; usage: {usage}"));
        } else if let Some(tip) = rest.strip_prefix("tip: ") {
            line.push_str(&format!("; {tip}"));
        } else if !rest.starts_with("For more information") {
            // The rest of the message, such as the missing arguments.
            line.push(' ');
            line.push_str(rest);
        }
    }
    line.push_str(" (kv --help says more)");
    line
}

/// `n` and `noun`, with an `s` unless `n` is 1: "1 record", "2 records".
pub(crate) fn count(n: impl TryInto<u64>, noun: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The error and its causes on one line, `error: cause: cause`, leaving
/// out a cause the message before it already says (the engine's
/// `Error::Io` names its OS error in its own message).
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line.replace('\n', " ")
}

/// The exit code of an error.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        match cause.downcast_ref::<Error>() {
            Some(Error::Corruption { .. } | Error::UnsupportedFile { .. }) => {
                return exit::CORRUPTION;
            }
            Some(Error::Locked { .. }) => return exit::LOCKED,
            _ => {}
        }
    }
    exit::ERROR
}

/// Whether the error is a write to a closed pipe (`kv keys | head`): the
/// reader has all it wanted, so it is no failure.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut out = Output::stdout();
    let mut session = Session::new(cli.dir);
    session.wait = cli.wait;
    match cli.command {
        Command::Serve { args } => match kv_server::run_until_stopped(args.config(&session.dir)) {
            Ok(()) => Ok(exit::OK),
            // The engine's error keeps its exit code (5 for a database
            // held elsewhere).
            Err(kv_server::ServerError::Db { dir, source }) => {
                Err(anyhow::Error::from(source).context(format!("database {}", dir.display())))
            }
            Err(e) => Err(anyhow::Error::from(e)),
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "kv", out.writer());
            out.flush()?;
            Ok(exit::OK)
        }
        Command::Man { command } => {
            // The page's NAME line: what the tool is, not the crate.
            let kv = cli_command().about("an embedded key-value store on a local directory");
            let page = match command {
                None => kv,
                Some(name) => {
                    let Some(sub) = kv.find_subcommand(&name) else {
                        return Err(
                            UsageError(format!("no command {name:?} to show the page of")).into(),
                        );
                    };
                    // Named as kv(1) refers to it; clap takes a
                    // `&'static str`, leaked once by this one-shot command.
                    let full: &'static str =
                        Box::leak(format!("kv-{}", sub.get_name()).into_boxed_str());
                    sub.clone().name(full).version(version())
                }
            };
            clap_mangen::Man::new(page).render(out.writer())?;
            out.flush()?;
            Ok(exit::OK)
        }
        Command::Shell { bail } => {
            // A session lives as long as an application's `Db` might: it
            // compacts in the background like one.
            session.background_compaction = true;
            session.open(Access::Create)?;
            let code = shell::run(&mut session, bail)?;
            session.close()?;
            Ok(code)
        }
        command => {
            let code = session.execute(command, &mut out)?;
            out.flush()?;
            session.close()?;
            Ok(code)
        }
    }
}

/// Where command output goes, and whether it is a terminal (then keys and
/// values are escaped).
pub(crate) struct Output {
    writer: std::io::BufWriter<std::io::StdoutLock<'static>>,
    terminal: bool,
}

impl Output {
    pub(crate) fn stdout() -> Output {
        let stdout = std::io::stdout();
        Output {
            terminal: stdout.is_terminal(),
            writer: std::io::BufWriter::new(stdout.lock()),
        }
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// Writes a key or value: encoded, or in utf8 raw to a pipe and escaped
    /// on a terminal.
    fn bytes(&mut self, bytes: &[u8], encoding: Encoding) -> std::io::Result<()> {
        match encoding {
            Encoding::Utf8 if self.terminal => {
                self.writer.write_all(escape_for_terminal(bytes).as_bytes())
            }
            Encoding::Utf8 => self.writer.write_all(bytes),
            // Hex and base64 always succeed.
            other => self
                .writer
                .write_all(other.encode(bytes).unwrap_or_default().as_bytes()),
        }
    }

    pub(crate) fn writer(&mut self) -> &mut dyn Write {
        &mut self.writer
    }
}

/// How a command opens the database (`Session::open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A read-only view: the command only reads.
    Read,
    /// For writing, a database that exists.
    Write,
    /// For writing, creating the database in a missing or empty directory.
    Create,
}

/// The database a command runs on: opened for one command, or for a whole
/// shell session.
pub(crate) struct Session {
    dir: PathBuf,
    db: Option<Db>,
    /// Running inside `kv shell` (stdin belongs to the shell).
    pub(crate) in_shell: bool,
    /// The number of the shell's line being run, when it reads stdin.
    pub(crate) line: Option<usize>,
    /// `--wait`: how long an open waits for another process's lock.
    wait: Option<Wait>,
    /// Whether the database is opened with background compaction: only for
    /// `kv shell`. A one-shot command is over before the compactor's timer
    /// would fire, and `kv compact` compacts on its own thread.
    background_compaction: bool,
}

impl Session {
    fn new(dir: PathBuf) -> Session {
        Session {
            dir,
            db: None,
            in_shell: false,
            line: None,
            wait: None,
            background_compaction: false,
        }
    }

    /// Opens the database as `access` says: a read-only view for a
    /// command that only reads (it works beside a writer, such as a
    /// `kv shell`, and on files it may not write, and changes nothing);
    /// for writes, a database that exists, or one created in a missing or
    /// empty directory (never in one that holds other files). A directory
    /// that holds no database is refused unless the command creates one,
    /// so that a read of a mistyped --dir leaves nothing behind. In the
    /// shell the session's database, opened for writing, serves every
    /// command.
    fn open(&mut self, access: Access) -> anyhow::Result<&Db> {
        if self.db.is_none() {
            check_dir(&self.dir, access == Access::Create)?;
            let options = self
                .options()
                .create_if_missing(access == Access::Create)
                .read_only(access == Access::Read);
            self.db = Some(self.waiting(|| Db::open_with(&self.dir, options.clone()))?);
        }
        Ok(self.db.as_ref().expect("just opened"))
    }

    /// Runs `f` (an open, or a verify, which takes the lock too), again
    /// while another process holds the database's lock if `--wait` says
    /// so: every 50 ms, until its deadline.
    fn waiting<T>(&self, mut f: impl FnMut() -> kv_engine::Result<T>) -> anyhow::Result<T> {
        let start = std::time::Instant::now();
        loop {
            match f() {
                Err(Error::Locked { .. }) if self.wait.is_some() => {
                    let limit = self.wait.and_then(|w| w.0);
                    let waited = start.elapsed();
                    if let Some(limit) = limit
                        && waited >= limit
                    {
                        return Err(anyhow::Error::from(Error::Locked {
                            path: self.dir.clone(),
                        })
                        .context(format!(
                            "still held after waiting {}",
                            humantime::format_duration(limit)
                        )));
                    }
                    let pause = Duration::from_millis(50);
                    std::thread::sleep(limit.map_or(pause, |l| pause.min(l - waited)));
                }
                other => return Ok(other?),
            }
        }
    }

    /// The options the database is opened with: the defaults, without
    /// background compaction outside `kv shell`.
    fn options(&self) -> Options {
        Options::default().background_compaction(self.background_compaction)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if let Some(db) = self.db.take() {
            db.close()?;
        }
        Ok(())
    }

    /// Runs one command; returns its exit code (0, or 1 for a missing key).
    pub(crate) fn execute(&mut self, command: Command, out: &mut Output) -> anyhow::Result<u8> {
        match command {
            Command::Put {
                key,
                value,
                value_file,
                ttl,
                encoding,
            } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                let value = match (value, value_file) {
                    (Some(value), _) => arg_bytes(&value, encoding.encoding, "VALUE")?,
                    (None, Some(path)) => self.read_value_file(&path)?,
                    (None, None) => return Err(UsageError("VALUE is missing".into()).into()),
                };
                let db = self.open(Access::Create)?;
                match ttl {
                    Some(ttl) => db.put_with_ttl(&key, &value, ttl)?,
                    None => db.put(&key, &value)?,
                }
            }
            Command::Get { key, encoding, raw } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                match self.open(Access::Read)?.get(&key)? {
                    Some(value) if raw => out.writer.write_all(&value)?,
                    Some(value) => {
                        out.bytes(&value, encoding.encoding)?;
                        out.writer.write_all(b"\n")?;
                    }
                    None => return self.not_found(out),
                }
            }
            Command::Delete { key, encoding } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                self.open(Access::Create)?.delete(&key)?;
            }
            Command::Ttl { key, encoding } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                match self.open(Access::Read)?.ttl(&key)? {
                    Some(None) => writeln!(out.writer, "none")?,
                    Some(Some(left)) => {
                        let seconds = Duration::from_secs(left.as_secs());
                        writeln!(out.writer, "{}", humantime::format_duration(seconds))?;
                    }
                    None => return self.not_found(out),
                }
            }
            Command::Expire { key, ttl, encoding } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                let db = self.open(Access::Write)?;
                // This process holds the database's lock and runs one
                // command at a time: nothing writes between the read and
                // the write.
                match db.get(&key)? {
                    Some(value) => db.put_with_ttl(&key, &value, ttl)?,
                    None => return self.not_found(out),
                }
            }
            Command::Persist { key, encoding } => {
                let key = arg_bytes(&key, encoding.encoding, "KEY")?;
                let db = self.open(Access::Write)?;
                match db.get(&key)? {
                    Some(value) => db.put(&key, &value)?,
                    None => return self.not_found(out),
                }
            }
            Command::Keys { filter, encoding } => {
                let prefix = filter_prefix(&filter, encoding.encoding)?;
                let db = self.open(Access::Read)?;
                let keys = db
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .take(filter.limit.unwrap_or(usize::MAX));
                for key in keys {
                    out.bytes(&key, encoding.encoding)?;
                    out.writer.write_all(b"\n")?;
                }
            }
            Command::Scan { filter, encoding } => {
                let prefix = filter_prefix(&filter, encoding.encoding)?;
                let db = self.open(Access::Read)?;
                let records = db
                    .iter()
                    .filter(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                    .take(filter.limit.unwrap_or(usize::MAX));
                for record in records {
                    let (key, value) = record?;
                    out.bytes(&key, encoding.encoding)?;
                    out.writer.write_all(b"\t")?;
                    out.bytes(&value, encoding.encoding)?;
                    out.writer.write_all(b"\n")?;
                }
            }
            Command::Count { prefix, encoding } => {
                let prefix = match prefix {
                    Some(p) => Some(arg_bytes(&p, encoding.encoding, "PREFIX")?),
                    None => None,
                };
                let db = self.open(Access::Read)?;
                let n = match prefix {
                    Some(prefix) => db.keys().filter(|k| k.starts_with(&prefix)).count(),
                    None => db.len(),
                };
                writeln!(out.writer, "{n}")?;
            }
            Command::Stats { json } => {
                let stats = self.open(Access::Read)?.stats();
                print_stats(out.writer(), &stats, json)?;
            }
            Command::Checkpoint { target } => {
                self.open(Access::Write)?.checkpoint(&target)?;
                writeln!(
                    out.writer,
                    "checkpoint written to {}; open it with --dir",
                    target.display()
                )?;
            }
            Command::Compact => {
                let db = self.open(Access::Write)?;
                let spinner = transfer::spinner("compacting");
                let report = db.compact();
                spinner.finish_and_clear();
                let report = report?;
                print_compaction(out.writer(), &report)?;
                if report.segments_skipped > 0 {
                    out.flush()?;
                    eprintln!(
                        "{}compaction left out {}: a record in each fails its checks \
                         (kv verify names them); the other segments were compacted",
                        self.prefix(),
                        count(report.segments_skipped, "damaged segment")
                    );
                    return Ok(exit::CORRUPTION);
                }
            }
            Command::Salvage { target } => {
                if self.db.is_some() {
                    return Err(UsageError(
                        "salvage reads the files with the database closed: run it outside the shell"
                            .into(),
                    )
                    .into());
                }
                check_dir(&self.dir, false)?;
                let report = self.waiting(|| kv_engine::salvage(&self.dir, &target))?;
                return self.print_salvage(out, &target, &report);
            }
            Command::Verify => {
                // Verification reads the files with the database closed: a
                // shell's own handle is closed for it and reopened after.
                let was_open = self.db.is_some();
                self.close()?;
                let result = self.verify(out);
                if was_open {
                    self.open(Access::Write)?;
                }
                return result;
            }
            Command::Import(args) => {
                if args.reads_stdin() && self.in_shell {
                    return Err(UsageError(
                        "in the shell, stdin holds the commands: give import a FILE".into(),
                    )
                    .into());
                }
                let db = self.open(Access::Create)?;
                let summary = transfer::import(db, &args)?;
                out.flush()?;
                eprintln!(
                    "{}imported {}",
                    self.prefix(),
                    count(summary.records, "record")
                );
                if summary.damaged > 0 {
                    eprintln!(
                        "{}warning: the export says it left out {} of its database \
                         (kv export --skip-damaged): what they held is not here",
                        self.prefix(),
                        count(summary.damaged, "damaged place")
                    );
                }
            }
            Command::Export(args) => {
                let prefix = self.prefix();
                let opened = self.open(Access::Read).map(|_| ());
                let summary = match opened {
                    Ok(()) => {
                        let db = self.db.as_ref().expect("just opened");
                        transfer::export(transfer::Source::Db(db), &args, out, &prefix)
                    }
                    // Damage that keeps the database from opening: read
                    // every file around it instead.
                    Err(e)
                        if args.skip_damaged
                            && !self.in_shell
                            && exit_code(&e) == exit::CORRUPTION =>
                    {
                        eprintln!(
                            "{prefix}the database does not open ({}); reading every file \
                             around the damage, as `kv salvage` does",
                            one_line(&e)
                        );
                        let salvage = self.waiting(|| kv_engine::Salvage::read(&self.dir))?;
                        transfer::export(transfer::Source::Salvage(&salvage), &args, out, &prefix)
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| {
                    if exit_code(&e) == exit::CORRUPTION && !args.skip_damaged {
                        e.context(
                            "export stopped at a damaged record (--skip-damaged leaves such \
                             records out and goes on; `kv salvage` copies what is intact)",
                        )
                    } else {
                        e
                    }
                })?;
                out.flush()?;
                if args.file.is_some() || summary.damaged > 0 {
                    eprintln!("{prefix}exported {}", count(summary.records, "record"));
                }
                if summary.damaged > 0 {
                    eprintln!(
                        "{prefix}the export is short of its database: {} left out (listed above)",
                        count(summary.damaged, "damaged place")
                    );
                    return Ok(exit::CORRUPTION);
                }
            }
            Command::Shell { .. } => {
                return Err(UsageError("already in the shell".into()).into());
            }
            Command::Completions { .. } | Command::Man { .. } | Command::Serve { .. } => {
                return Err(UsageError(
                    "completions and man are for the command line, not the shell".into(),
                )
                .into());
            }
        }
        Ok(exit::OK)
    }

    /// Reports a missing key: exit 1.
    fn not_found(&self, out: &mut Output) -> anyhow::Result<u8> {
        out.flush()?;
        eprintln!("{}key not found", self.prefix());
        Ok(exit::NOT_FOUND)
    }

    /// What starts a message on stderr: `kv: ` on the command line; in
    /// the shell, the line number when reading stdin (`line 3: `), else
    /// nothing.
    fn prefix(&self) -> String {
        match (self.in_shell, self.line) {
            (false, _) => "kv: ".into(),
            (true, Some(n)) => format!("line {n}: "),
            (true, None) => String::new(),
        }
    }

    fn read_value_file(&self, path: &Path) -> anyhow::Result<Vec<u8>> {
        if path == Path::new("-") {
            if self.in_shell {
                return Err(UsageError(
                    "in the shell, stdin holds the commands: give --value-file a file".into(),
                )
                .into());
            }
            let mut value = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut value)
                .context("reading the value from stdin")?;
            return Ok(value);
        }
        std::fs::read(path).with_context(|| format!("reading the value from {}", path.display()))
    }

    fn print_salvage(
        &self,
        out: &mut Output,
        target: &Path,
        report: &kv_engine::SalvageReport,
    ) -> anyhow::Result<u8> {
        /// Keys at risk listed by name; the rest are counted.
        const SHOWN: usize = 20;
        let w = out.writer();
        for loss in report.losses.iter().filter(|l| !l.covered) {
            let bytes = loss
                .len
                .map_or_else(String::new, |n| format!(", {}", count(n, "byte")));
            let held = match loss.before_seq {
                Some(before) => format!(
                    "writes {} to {} may be lost",
                    loss.after_seq + 1,
                    before.saturating_sub(1)
                ),
                None => format!("writes after {} may be lost", loss.after_seq),
            };
            let hinted = loss.hinted_records.map_or_else(String::new, |n| {
                format!("; its hint file names {} there", count(n, "record"))
            });
            writeln!(
                w,
                "lost: {} at offset {}{bytes}: {} ({held}{hinted})",
                loss.path.display(),
                loss.offset,
                loss.reason
            )?;
        }
        for loss in report.losses.iter().filter(|l| l.covered) {
            writeln!(
                w,
                "damaged, but read elsewhere: {} at offset {}: {}",
                loss.path.display(),
                loss.offset,
                loss.reason
            )?;
        }
        for warning in &report.warnings {
            writeln!(w, "warning: {warning}")?;
        }
        for key in report.keys_at_risk.iter().take(SHOWN) {
            writeln!(w, "at risk: {}", escape_for_terminal(key))?;
        }
        if report.keys_at_risk.len() > SHOWN {
            writeln!(
                w,
                "at risk: ... and {} more",
                count(report.keys_at_risk.len() - SHOWN, "key")
            )?;
        }
        writeln!(
            w,
            "salvaged {} into {} ({} read; {} deleted and {} expired not copied)",
            count(report.keys_copied, "key"),
            target.display(),
            count(report.records_read, "record"),
            count(report.keys_deleted, "key"),
            report.keys_expired
        )?;
        out.flush()?;
        if report.is_complete() {
            return Ok(exit::OK);
        }
        eprintln!(
            "{}some data may be lost: {} not read, {} whose latest version may be lost (listed above)",
            self.prefix(),
            count(
                report.losses.iter().filter(|l| !l.covered).count(),
                "damaged place"
            ),
            count(report.keys_at_risk.len(), "key")
        );
        Ok(exit::CORRUPTION)
    }

    fn verify(&self, out: &mut Output) -> anyhow::Result<u8> {
        check_dir(&self.dir, false)?;
        let report = self.waiting(|| kv_engine::verify(&self.dir))?;
        let w = out.writer();
        for p in &report.problems {
            writeln!(w, "problem: {p}")?;
        }
        for p in &report.warnings {
            writeln!(w, "warning: {p}")?;
        }
        if report.beside_writer {
            writeln!(
                w,
                "another process has the database open: checked beside it, as of its last \
                 checkpoint marker (what it wrote since then, in the WAL only)"
            )?;
        }
        writeln!(
            w,
            "checked {} ({}, {}, {}, {}) and {} ({} in segments, {} only in the WAL; \
             the WAL holds {} in all): {}, {}",
            count(report.files_checked(), "file"),
            count(report.segments, "segment"),
            count(report.hint_files, "hint file"),
            count(report.wal_files, "WAL file"),
            count(u8::from(report.marker), "CHECKPOINT marker"),
            count(report.records_held(), "record"),
            report.records,
            report.wal_records_pending,
            report.wal_records,
            count(report.problems.len(), "problem"),
            count(report.warnings.len(), "warning"),
        )?;
        out.flush()?;
        if report.is_clean() {
            Ok(exit::OK)
        } else {
            eprintln!(
                "{}the database is damaged: {} (listed above)",
                self.prefix(),
                count(report.problems.len(), "problem")
            );
            Ok(exit::CORRUPTION)
        }
    }
}

/// Checks `--dir` before opening: a regular file is refused, and so is a
/// missing directory unless the command writes.
fn check_dir(dir: &Path, create: bool) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => anyhow::bail!(
            "{} is not a directory, so it cannot be a database (--dir)",
            dir.display()
        ),
        Ok(_) if create && !kv_engine::holds_database(dir)? && !is_empty_dir(dir)? => {
            anyhow::bail!(
                "{} holds other files but no kv database: give a new or empty directory (--dir, KV_DIR)",
                dir.display()
            )
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no database at {}: the directory does not exist (--dir, KV_DIR)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Whether the directory `dir` has no entries.
fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(entries.next().is_none())
}

/// The bytes of a KEY, VALUE or PREFIX argument in `encoding`. In utf8 the
/// argument's bytes are taken as they are, even if not UTF-8.
pub(crate) fn arg_bytes(arg: &OsStr, encoding: Encoding, what: &str) -> anyhow::Result<Vec<u8>> {
    if encoding == Encoding::Utf8 {
        return Ok(arg.as_bytes().to_vec());
    }
    let text = arg.to_str().ok_or_else(|| {
        UsageError(format!(
            "{what} is not valid {}: it is not even text",
            encoding.name()
        ))
    })?;
    encoding
        .decode(text)
        .map_err(|e| UsageError(format!("{what} is {e}")).into())
}

fn filter_prefix(filter: &Filter, encoding: Encoding) -> anyhow::Result<Vec<u8>> {
    match &filter.prefix {
        Some(p) => arg_bytes(p, encoding, "PREFIX"),
        None => Ok(Vec::new()),
    }
}

fn print_compaction(w: &mut dyn Write, r: &CompactionReport) -> std::io::Result<()> {
    if r.runs == 0 {
        return writeln!(
            w,
            "nothing to compact: no segment{} holds dead records",
            if r.segments_skipped > 0 {
                " but the damaged ones"
            } else {
                ""
            }
        );
    }
    writeln!(
        w,
        "compacted {} in {}: {} bytes of records before, {} after, {} reclaimed",
        count(r.segments_compacted, "segment"),
        count(r.runs, "run"),
        r.bytes_before,
        r.bytes_after,
        r.bytes_reclaimed()
    )?;
    writeln!(
        w,
        "records: {} copied, {} dropped; tombstones: {} kept, {} dropped",
        r.records_copied, r.records_dropped, r.tombstones_kept, r.tombstones_dropped
    )
}

/// The counters of `stats`, by the names `--json` uses.
fn stats_fields(s: &Stats) -> [(&'static str, u64, bool); 12] {
    // (name, value, whether it is a size in bytes)
    [
        ("keys", s.keys, false),
        ("live_bytes", s.live_bytes, true),
        ("dead_bytes", s.dead_bytes, true),
        ("segments", s.segments, false),
        ("segment_bytes", s.segment_bytes, true),
        ("wal_bytes", s.wal_bytes, true),
        ("compactions", s.compactions, false),
        ("bytes_reclaimed", s.bytes_reclaimed, true),
        ("index_memory", s.index_memory, true),
        ("puts", s.puts, false),
        ("gets", s.gets, false),
        ("deletes", s.deletes, false),
    ]
}

fn print_stats(w: &mut dyn Write, stats: &Stats, json: bool) -> std::io::Result<()> {
    let fields = stats_fields(stats);
    if json {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|&(name, value, _)| (name.to_owned(), value.into()))
            .collect();
        return writeln!(w, "{}", serde_json::Value::Object(object));
    }
    for (name, value, bytes) in fields {
        if bytes {
            writeln!(w, "{name:<16} {value} ({})", indicatif::HumanBytes(value))?;
        } else {
            writeln!(w, "{name:<16} {value}")?;
        }
    }
    Ok(())
}

/// Parses a `--ttl`: a humantime duration such as 30s, 5m, 1h or "1h 30m".
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 30s, 5m, 1h or \"1h 30m\""))?;
    if ttl.is_zero() {
        return Err("a TTL must be longer than zero".into());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        shell::ShellLine::command().debug_assert();
    }

    #[test]
    fn only_the_shell_compacts_in_the_background() {
        // A one-shot command's background compactor raced `kv compact`'s
        // own compaction (the flaky count_compact_and_verify_report).
        let mut session = Session::new(PathBuf::from("db"));
        assert!(!session.options().background_compaction);
        session.background_compaction = true;
        assert!(session.options().background_compaction);
    }

    #[test]
    fn ttl_parses_humantime_durations() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").unwrap_err().contains("30s"));
    }

    #[test]
    fn exit_codes_follow_the_error() {
        let locked = anyhow::Error::from(Error::Locked { path: "x".into() });
        assert_eq!(exit_code(&locked), exit::LOCKED);
        let corrupt = anyhow::Error::from(Error::Corruption {
            path: "x".into(),
            offset: 1,
            reason: "r".into(),
        });
        assert_eq!(exit_code(&corrupt.context("reading")), exit::CORRUPTION);
        assert_eq!(
            exit_code(&anyhow::Error::from(UsageError("u".into()))),
            exit::USAGE
        );
        assert_eq!(exit_code(&anyhow::anyhow!("other")), exit::ERROR);
    }

    #[test]
    fn one_line_says_each_cause_once() {
        let io = anyhow::Error::from(Error::Io {
            path: "db/LOCK".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        })
        .context("opening");
        let line = one_line(&io);
        assert_eq!(line.matches("permission denied").count(), 1, "{line}");
        assert!(
            line.starts_with("opening: I/O error on db/LOCK: "),
            "{line}"
        );
        let nested = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&nested), "outer: inner");
    }
}
