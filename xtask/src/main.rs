//! Project tasks for kv, run as `cargo xtask <task>` (matklad's cargo-xtask).
//!
//! - `cargo xtask ci`: the one CI definition, which `.ci/run` calls:
//!   formatting (the workspace, kv-bench and fuzz), clippy with warnings
//!   denied (all targets, the libraries without `fail-points`, and the fuzz
//!   targets), the
//!   libraries' docs with warnings denied, and the test suite.
//! - `cargo xtask bench [--quick] [--with-rocksdb] [--engines kv,redb]
//!   [--seed N] [--update-benchmarks-md]`: builds kv-bench (its own
//!   workspace, so `cargo test` never compiles the peer engines) in
//!   release, runs it, and renders `target/bench-report/<timestamp>/`
//!   (report.md from results.json, beside the SVG charts). With
//!   `--update-benchmarks-md`, a full run also becomes
//!   `bench-results/latest.json` and the generated part of BENCHMARKS.md.
//! - `cargo xtask bench --render DIR [--update-benchmarks-md]`: renders an
//!   earlier run's results.json again.
//! - `cargo xtask lint-bench`: clippy with warnings denied in `kv-bench/`.
//!   Not part of `ci`, because it compiles the peer engines (fjall, redb,
//!   LMDB), which the test command never builds.
//! - `cargo xtask tidy`: the tidy checks of the source tree (`src/tidy.rs`,
//!   `#[test]`s that also run with `cargo test --workspace`).
//! - `cargo xtask loom [ARGS]`: the loom models of the concurrency
//!   protocols (kv-index's seqlock, kv-log's segment retirement, kv-engine's
//!   hand-off between callers and the writer), built with `--cfg loom`
//!   (kv-engine: `--cfg kv_engine_loom`) in release into `target/loom-*`
//!   (so the normal build cache is untouched); ARGS go to the test binaries (a test name to
//!   filter, `--nocapture`). `LOOM_MAX_PREEMPTIONS` (default 3 in the
//!   models) widens the search.
//! - `cargo xtask bench --micro [ARGS]`: the criterion micro-benchmarks of
//!   every crate (`cargo bench --workspace`); ARGS go to criterion, e.g.
//!   `cargo xtask bench --micro -- --quick`.
//! - `cargo xtask bench-server [--requests N] [--runs R]
//!   [--update-benchmarks-md]`: kv-server against redis-server with
//!   `redis-benchmark` (`bench_server.rs`).
//! - `cargo xtask fuzz [--seconds N] [--target T] [-- LIBFUZZER_ARGS]`: runs
//!   each cargo-fuzz target of `fuzz/` (its own workspace) for N seconds
//!   (default 60), one after another, installing cargo-fuzz if it is
//!   missing, and prints the executions per target. The toolchain is
//!   stable, so cargo-fuzz runs with `RUSTC_BOOTSTRAP=1` (it passes `-Z`
//!   flags); libFuzzer needs a C++ compiler.

#![forbid(unsafe_code)]

mod bench_server;
mod report;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci     fmt check, clippy -D warnings (also without fail-points, and fuzz/), docs -D warnings,
         tidy and the tests
  lint-bench  clippy -D warnings in kv-bench/ (compiles the peer engines, so not in ci)
  tidy   the tidy checks of the source tree (doc comments, file names in docs/format.md, ...)
  loom   the loom models (kv-index seqlock, kv-log segment retirement, kv-engine hand-off):
           cargo xtask loom [TEST-NAME-FILTER] [-- --nocapture]
  bench  side-by-side benchmarks against fjall, redb and LMDB:
           cargo xtask bench [--quick] [--with-rocksdb] [--engines kv,redb] [--seed N]
                             [--update-benchmarks-md]
           cargo xtask bench --render DIR [--update-benchmarks-md]
           cargo xtask bench --micro [ARGS]   (criterion micro-benchmarks; ARGS go to criterion)
  bench-server  kv-server against redis-server with redis-benchmark (installs redis-tools and
           redis-server with apt-get where missing):
           cargo xtask bench-server [--requests N] [--runs R] [--update-benchmarks-md]
  fuzz   run the cargo-fuzz targets of fuzz/, one after another:
           cargo xtask fuzz [--seconds N] [--target T] [-- LIBFUZZER_ARGS]
           (N seconds per target, default 60; targets: format_decode, wal_replay,
            hint_load, db_ops, resp_parse)";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(),
        Some("lint-bench") => clippy_of("kv-bench/Cargo.toml"),
        Some("tidy") => cargo(&["test", "--package", "xtask", "--", "tidy::"], &[]),
        Some("loom") => loom(&rest),
        Some("bench") => bench(&rest),
        Some("bench-server") => bench_server::run(&rest, &root()),
        Some("fuzz") => fuzz(&rest),
        Some("help") | None => {
            println!("{USAGE}");
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

/// `cargo xtask ci`: the one CI definition (`.ci/run` calls it). Every step
/// must pass; the last is exactly the test command README.md gives.
fn ci() -> Result<()> {
    // Formatting of the workspace, and of the two crates kept out of it
    // (fmt does not compile them, so the peer engines are not built).
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    for manifest in ["kv-bench/Cargo.toml", "fuzz/Cargo.toml"] {
        cargo(&["fmt", "--manifest-path", manifest, "--", "--check"], &[])?;
    }
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
    // The libraries as dependents build them: without the `fail-points`
    // feature that the crates' own tests turn on.
    cargo(
        &["clippy", "--workspace", "--lib", "--", "-D", "warnings"],
        &[],
    )?;
    // The fuzz targets (their own workspace; libFuzzer builds with the
    // machine's C++ compiler). kv-bench is left to `lint-bench`: it would
    // compile the peer engines.
    clippy_of("fuzz/Cargo.toml")?;
    // The libraries' docs, with broken links and bad markup refused.
    cargo_with_env(
        &["doc", "--workspace", "--no-deps", "--lib"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace"], &[])
}

/// Clippy with warnings denied, every target, in the workspace of
/// `manifest` (one kept out of the root workspace).
fn clippy_of(manifest: &str) -> Result<()> {
    cargo(
        &[
            "clippy",
            "--manifest-path",
            manifest,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

/// The crates with loom models, each in `src/loom.rs`, and the cfg that
/// swaps in loom's primitives for each (kv-engine's hand-off has a cfg of
/// its own: under `loom` the lower crates swap theirs too).
const LOOM_CRATES: [(&str, &str); 3] = [
    ("kv-index", "loom"),
    ("kv-log", "loom"),
    ("kv-engine", "kv_engine_loom"),
];

/// `cargo xtask loom`: see the crate docs.
fn loom(args: &[String]) -> Result<()> {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (krate, cfg) in LOOM_CRATES {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join(format!("loom-{cfg}"));
        let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
        rustflags.push_str(&format!(" --cfg {cfg}"));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .env("RUSTFLAGS", rustflags.trim())
            .env("CARGO_TARGET_DIR", &target)
            .args(["test", "--release", "--lib", "-p", krate, "--"]);
        // The models' names start with `loom::`; a filter of the caller's
        // replaces that one (libtest runs what matches any filter).
        let args: Vec<&String> = args.iter().filter(|a| *a != "--").collect();
        if !args.iter().any(|a| !a.starts_with('-')) {
            cmd.arg("loom::");
        }
        cmd.args(args);
        let status = cmd.status().with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("the loom models of {krate} failed ({status})");
        }
    }
    Ok(())
}

/// `cargo xtask bench`: see the crate docs.
fn bench(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--micro") {
        return cargo(&["bench", "--workspace"], &args[1..]);
    }
    let mut quick = false;
    let mut rocksdb = false;
    let mut update = false;
    let mut render_dir = None;
    let mut passed = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--with-rocksdb" => rocksdb = true,
            "--update-benchmarks-md" => update = true,
            "--render" => render_dir = Some(PathBuf::from(it.next().context("--render DIR")?)),
            "--engines" | "--seed" | "--order-seed" => {
                passed.push(arg.clone());
                passed.push(
                    it.next()
                        .with_context(|| format!("{arg} needs a value"))?
                        .clone(),
                );
            }
            other => bail!("unknown flag {other:?} for bench\n\n{USAGE}"),
        }
    }

    let dir = match render_dir {
        Some(dir) => dir,
        None => {
            let root = root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            let mut build = vec![
                "build",
                "--release",
                "--manifest-path",
                "kv-bench/Cargo.toml",
            ];
            if rocksdb {
                build.extend(["--features", "rocksdb"]);
            }
            let target_arg = target.to_string_lossy().into_owned();
            build.extend(["--target-dir", &target_arg]);
            cargo(&build, &[])?;

            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let dir = root
                .join("target")
                .join("bench-report")
                .join(report::stamp(now));
            let command = std::iter::once("cargo xtask bench".to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            let mut run = Command::new(target.join("release").join("kv-bench"));
            run.current_dir(&root)
                .arg("run")
                .arg("--out")
                .arg(&dir)
                .arg("--work-dir")
                .arg(root.join("target").join("bench-work"))
                .args(["--command", &command])
                .args(&passed);
            if quick {
                run.arg("--quick");
            }
            let status = run.status().context("running kv-bench")?;
            if !status.success() {
                bail!("kv-bench failed ({status})");
            }
            dir
        }
    };

    let json = std::fs::read_to_string(dir.join("results.json"))
        .with_context(|| format!("reading {}", dir.join("results.json").display()))?;
    let run = report::parse(&json)?;
    let report_path = dir.join("report.md");
    std::fs::write(&report_path, report::report(&run))?;
    println!("{}", report_path.display());
    if update {
        publish(&run, &json, &dir)?;
    }
    Ok(())
}

/// The cargo-fuzz targets in `fuzz/fuzz_targets/`, in the order they run.
const FUZZ_TARGETS: [&str; 5] = [
    "format_decode",
    "wal_replay",
    "hint_load",
    "db_ops",
    "resp_parse",
];

/// What one fuzz target's run did.
struct FuzzRun {
    target: String,
    /// The `#N DONE ... exec/s: X` line's N and X, if libFuzzer printed it.
    execs: Option<(u64, u64)>,
    ok: bool,
}

/// `cargo xtask fuzz`: see the crate docs.
fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds N")?
                    .parse()
                    .context("--seconds takes a whole number")?;
            }
            "--target" => {
                let t = it.next().context("--target T")?;
                if !FUZZ_TARGETS.contains(&t.as_str()) {
                    bail!("unknown fuzz target {t:?}; the targets are {FUZZ_TARGETS:?}");
                }
                targets = vec![t.clone()];
            }
            "--" => extra.extend(it.by_ref().cloned()),
            other => bail!("unknown flag {other:?} for fuzz\n\n{USAGE}"),
        }
    }
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_fuzz = Command::new(&cargo_bin)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        eprintln!("cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)");
        cargo(&["install", "cargo-fuzz", "--locked"], &[])?;
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if !Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!(
            "libFuzzer is C++ and needs a C++ compiler, but `{cxx} --version` failed; \
             install one (Debian: apt-get install g++) or set CXX"
        );
    }

    let root = root();
    // One build of every target first, so that each run's time is fuzzing.
    let status = Command::new(&cargo_bin)
        .current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "build", "--fuzz-dir", "fuzz"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("`cargo fuzz build` failed ({status})");
    }
    let mut runs = Vec::new();
    for target in &targets {
        runs.push(fuzz_one(&cargo_bin, &root, target, seconds, &extra)?);
    }
    println!("\nfuzz summary ({seconds} s per target):");
    println!(
        "{:<15} {:>14} {:>10}  result",
        "target", "executions", "exec/s"
    );
    for run in &runs {
        let (execs, rate) = run
            .execs
            .map_or(("?".to_string(), "?".to_string()), |(n, r)| {
                (n.to_string(), r.to_string())
            });
        let result = if run.ok {
            "no crash".to_string()
        } else {
            format!("FAILED: see fuzz/artifacts/{}/", run.target)
        };
        println!("{:<15} {execs:>14} {rate:>10}  {result}", run.target);
    }
    if runs.iter().any(|r| !r.ok) {
        bail!("a fuzz target failed; `cargo fuzz fmt TARGET ARTIFACT` shows the input");
    }
    Ok(())
}

/// Runs one target for `seconds`, passing libFuzzer's output through, and
/// reads its final `#N DONE ... exec/s: X` line.
fn fuzz_one(
    cargo_bin: &str,
    root: &Path,
    target: &str,
    seconds: u64,
    extra: &[String],
) -> Result<FuzzRun> {
    use std::io::{BufRead, BufReader};
    let corpus = root.join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut cmd = Command::new(cargo_bin);
    cmd.current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
        .arg(&corpus);
    // Seeds kept in the repository are read, never written: libFuzzer adds
    // new inputs to the first directory only.
    let seeds = root.join("fuzz").join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A single allocation this large, or this much memory in all, is a
        // crash: sizes read from damaged bytes must never be trusted.
        .arg("-malloc_limit_mb=512")
        .arg("-rss_limit_mb=2048")
        .args(extra)
        .stderr(std::process::Stdio::piped());
    println!("== fuzzing {target} for {seconds} s");
    let mut child = cmd.spawn().context("running cargo fuzz run")?;
    let stderr = child.stderr.take().context("libFuzzer's output")?;
    let mut execs = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        eprintln!("{line}");
        if let Some(done) = parse_done(&line) {
            execs = Some(done);
        }
    }
    let status = child.wait()?;
    Ok(FuzzRun {
        target: target.to_string(),
        execs,
        ok: status.success(),
    })
}

/// `#1114616\tDONE   cov: 195 ... exec/s: 69663 rss: 517Mb` -> (1114616, 69663).
fn parse_done(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix('#')?;
    let (count, rest) = rest.split_once(char::is_whitespace)?;
    if !rest.trim_start().starts_with("DONE") {
        return None;
    }
    let rate = rest.split("exec/s:").nth(1)?.split_whitespace().next()?;
    Some((count.parse().ok()?, rate.parse().ok()?))
}

/// Makes a full run the published one: bench-results/latest.json, its
/// charts, and the generated part of BENCHMARKS.md.
fn publish(run: &report::Run, json: &str, dir: &Path) -> Result<()> {
    if run.quick {
        bail!("a --quick run is not published; run `cargo xtask bench --update-benchmarks-md`");
    }
    let results = root().join("bench-results");
    std::fs::create_dir_all(&results)?;
    for entry in std::fs::read_dir(&results)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::write(results.join("latest.json"), json)?;
    for chart in &run.charts {
        std::fs::copy(dir.join(&chart.file), results.join(&chart.file))
            .with_context(|| format!("copying {}", chart.file))?;
    }
    let path = root().join("BENCHMARKS.md");
    let md = std::fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
    std::fs::write(
        &path,
        report::splice(&md, &report::render(run, CHARTS_PREFIX))?,
    )?;
    println!("{}", path.display());
    Ok(())
}

/// Where BENCHMARKS.md finds the published charts.
const CHARTS_PREFIX: &str = "bench-results/";

/// Runs cargo (the one that runs xtask, through `$CARGO`) in the root.
/// Runs cargo with `args` and the environment variables `env` set.
fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root())
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_done_line_is_parsed() {
        assert_eq!(
            parse_done(
                "#1114616\tDONE   cov: 195 ft: 457 corp: 71/16Kb lim: 4096 exec/s: 69663 rss: 517Mb"
            ),
            Some((1_114_616, 69_663))
        );
        assert_eq!(
            parse_done("#57\tINITED cov: 3630 ft: 5425 exec/s: 0 rss: 81Mb"),
            None
        );
        assert_eq!(parse_done("Done 57 runs in 0 second(s)"), None);
    }

    /// The tables of BENCHMARKS.md are exactly the rendering of the JSON of
    /// the run they claim to be: no figure is typed by hand.
    #[test]
    fn benchmarks_md_is_the_rendering_of_latest_json() {
        let root = root();
        let json = std::fs::read_to_string(root.join("bench-results/latest.json"))
            .expect("bench-results/latest.json");
        let run = report::parse(&json).expect("a valid results.json");
        assert!(!run.quick, "the published run must be a full run");
        let md = std::fs::read_to_string(root.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
        let part = report::generated_part(&md).expect("BENCHMARKS.md has its generated part");
        assert_eq!(
            part,
            report::render(&run, CHARTS_PREFIX),
            "BENCHMARKS.md differs from bench-results/latest.json: \
             run `cargo xtask bench --render DIR --update-benchmarks-md`"
        );
        for chart in &run.charts {
            assert!(
                root.join(CHARTS_PREFIX).join(&chart.file).exists(),
                "{} is missing",
                chart.file
            );
        }
    }
}
