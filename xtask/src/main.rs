//! Project tasks for kv, run as `cargo xtask <task>` (matklad's cargo-xtask).
//!
//! - `cargo xtask ci`: what `.ci/run` checks: formatting, clippy with
//!   warnings denied, and the test suite.
//! - `cargo xtask bench [ARGS]`: the criterion micro-benchmarks of every
//!   crate (`cargo bench --workspace`); ARGS go to criterion, e.g.
//!   `cargo xtask bench -- --quick`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(),
        Some("bench") => cargo(&["bench", "--workspace"], &rest),
        Some("help") | None => {
            println!(
                "usage: cargo xtask <task>\n\ntasks:\n  ci     fmt check, clippy -D warnings, tests\n  bench  criterion micro-benchmarks of every crate (extra args go to criterion)"
            );
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}; run `cargo xtask help`"),
    }
}

/// The workspace root: xtask lives one level below it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(&["test", "--workspace"], &[])
}

/// Runs cargo (the one that runs xtask, through `$CARGO`) in the root.
fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root()).args(args);
    if !extra.is_empty() {
        // Everything after the task name goes to the tool; make sure cargo
        // passes it on.
        if !extra.iter().any(|a| a == "--") {
            cmd.arg("--");
        }
        cmd.args(extra);
    }
    let status = cmd.status().with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
