//! `kv shell`: the same commands, on one open database, from a prompt with
//! line editing and history, or line by line from stdin when it is not a
//! terminal.

use std::io::{BufRead, IsTerminal};

use clap::Parser;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::{AFTER_HELP, Command, Output, Session, exit, exit_code, is_broken_pipe, one_line};

const SHELL_HELP: &str = "\
Also: help [COMMAND], exit, quit. Words are split as a POSIX shell does:
quote a key or value that holds spaces (put 'my key' \"a value\").";

/// One line of the shell: the commands of `kv`, without `--dir`.
#[derive(Debug, Parser)]
#[command(
    name = "kv",
    no_binary_name = true,
    disable_version_flag = true,
    about = "kv shell: run kv commands on the open database",
    after_help = SHELL_HELP,
    after_long_help = format!("{SHELL_HELP}\n\n{AFTER_HELP}")
)]
pub(crate) struct ShellLine {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What a line asks of the shell.
enum Flow {
    /// Go on; the line's exit code.
    Continue(u8),
    Exit,
}

/// Runs the shell on the session's open database; returns the exit code of
/// the last command that failed, or 0.
pub(crate) fn run(session: &mut Session) -> anyhow::Result<u8> {
    session.in_shell = true;
    let mut out = Output::stdout();
    let mut last_failure = exit::OK;
    let mut record = |code: u8| {
        if code != exit::OK {
            last_failure = code;
        }
    };
    if std::io::stdin().is_terminal() {
        let mut editor = DefaultEditor::new()?;
        let history =
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".kv_history"));
        if let Some(history) = &history {
            // No history yet is the common case, not an error.
            let _ = editor.load_history(history);
        }
        loop {
            match editor.readline("kv> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    match run_line(session, &line, &mut out) {
                        Flow::Continue(code) => record(code),
                        Flow::Exit => break,
                    }
                }
                // Ctrl-C abandons the line, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(history) = &history
            && let Err(e) = editor.save_history(history)
        {
            eprintln!("could not save the history to {}: {e}", history.display());
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            match run_line(session, &line, &mut out) {
                Flow::Continue(code) => record(code),
                Flow::Exit => break,
            }
        }
    }
    Ok(last_failure)
}

/// Parses and runs one line. Errors are printed; the shell goes on.
fn run_line(session: &mut Session, line: &str, out: &mut Output) -> Flow {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Flow::Continue(exit::OK);
    }
    let Some(words) = shlex::split(line) else {
        eprintln!("error: unbalanced quotes or a trailing backslash");
        return Flow::Continue(exit::USAGE);
    };
    if let [word] = words.as_slice()
        && (word == "exit" || word == "quit")
    {
        return Flow::Exit;
    }
    let parsed = match ShellLine::try_parse_from(&words) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = out.flush();
            // Help goes to stdout and is no failure; errors go to stderr.
            let _ = e.print();
            return Flow::Continue(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let result = session.execute(parsed.command, out);
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Ok(code) => Flow::Continue(code),
        Err(e) if is_broken_pipe(&e) => Flow::Exit,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            Flow::Continue(exit_code(&e))
        }
    }
}
