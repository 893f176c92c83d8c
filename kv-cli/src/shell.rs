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
/// the last command that failed, or 0. With `bail`, the first command that
/// fails ends the shell, with its code.
pub(crate) fn run(session: &mut Session, bail: bool) -> anyhow::Result<u8> {
    session.in_shell = true;
    let mut out = Output::stdout();
    let mut last_failure = exit::OK;
    // Records a line's outcome; false when the shell is to stop.
    let mut record = |flow: Flow| match flow {
        Flow::Continue(code) if code != exit::OK => {
            last_failure = code;
            !bail
        }
        Flow::Continue(_) => true,
        Flow::Exit => false,
    };
    if std::io::stdin().is_terminal() {
        let mut editor = DefaultEditor::new()?;
        let history =
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".kv_history"));
        if let Some(history) = &history {
            // No history yet is the common case, not an error.
            let _ = editor.load_history(history);
        }
        'prompt: loop {
            match editor.readline("kv> ") {
                Ok(text) => {
                    // A pasted block (bracketed paste) comes as one text
                    // with newlines: each of its lines runs, as if typed.
                    for line in text.lines() {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line);
                        }
                        if !record(run_line(session, line, None, &mut out)) {
                            break 'prompt;
                        }
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
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line?;
            if !record(run_line(session, &line, Some(i + 1), &mut out)) {
                break;
            }
        }
    }
    Ok(last_failure)
}

/// Parses and runs one line. Errors are printed, after `number` (the
/// line's, when read from stdin) if given.
fn run_line(session: &mut Session, line: &str, number: Option<usize>, out: &mut Output) -> Flow {
    let at = number.map_or(String::new(), |n| format!("line {n}: "));
    session.line = number;
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Flow::Continue(exit::OK);
    }
    let Some(words) = shlex::split(line) else {
        eprintln!("{at}error: unbalanced quotes or a trailing backslash");
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
            if e.use_stderr() {
                eprint!("{at}");
            }
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
            eprintln!("{at}error: {}", one_line(&e));
            Flow::Continue(exit_code(&e))
        }
    }
}
