//! kv-bench: kv-engine side by side with fjall, redb, LMDB (heed) and,
//! with the `rocksdb` feature, RocksDB. Run it through `cargo xtask bench`,
//! which builds it in release and renders the report.
//!
//! ```text
//! kv-bench run --out DIR [--quick] [--work-dir DIR] [--seed N]
//!              [--order-seed N] [--engines kv,redb] [--command TEXT]
//!              [--keep-data DIR]
//! kv-bench child --engine NAME --step STEP --dir DIR --data DIR
//! ```
//!
//! `run` is the coordinator: it writes the seeded data set once, then
//! starts itself as `child` once per (engine, workload group), in shuffled
//! order, each in a fresh directory, and gathers the children's JSON lines
//! into DIR/results.json, with SVG charts beside it. `--keep-data` keeps
//! the data set, so that one child can be run again by hand, e.g. under
//! `perf record`.
//!
//! This package is its own workspace, outside the root one, so that
//! `cargo test --workspace` never compiles the peer engines.

// LMDB's open is an `unsafe fn`; that module allows it, with its reasons.
#![deny(unsafe_code)]

mod charts;
mod config;
mod coordinator;
mod data;
mod engines;
mod measure;
mod results;
mod workloads;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next();
    let mut flags = Flags::parse(args)?;
    match mode.as_deref() {
        Some("run") => {
            let out = flags.path("--out")?.context("--out DIR is required")?;
            let work_dir = flags
                .path("--work-dir")?
                .unwrap_or_else(|| out.join("work"));
            let args = coordinator::Args {
                out,
                work_dir,
                quick: flags.switch("--quick"),
                seed: flags.number("--seed")?.unwrap_or(42),
                order_seed: flags.number("--order-seed")?,
                engines: flags
                    .value("--engines")
                    .map(|s| s.split(',').map(str::to_string).collect()),
                command: flags
                    .value("--command")
                    .unwrap_or_else(|| "kv-bench run".into()),
                keep_data: flags.path("--keep-data")?,
            };
            flags.done()?;
            coordinator::run(args)
        }
        Some("child") => {
            let engine = flags.value("--engine").context("--engine")?;
            let step = workloads::Step::parse(&flags.value("--step").context("--step")?)?;
            let dir = flags.path("--dir")?.context("--dir")?;
            let data = flags.path("--data")?.context("--data")?;
            flags.done()?;
            let config: config::Config = serde_json::from_slice(
                &std::fs::read(data.join("config.json")).context("reading config.json")?,
            )?;
            workloads::run(&engine, step, &dir, &data, &config)
                .with_context(|| format!("{engine} {}", step.name()))
        }
        _ => bail!("usage: kv-bench run --out DIR [--quick] ... (see the crate docs)"),
    }
}

/// `--name value` pairs and `--switch`es.
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> Result<Flags> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for arg in args {
            if arg.starts_with("--") {
                pairs.push((arg, None));
            } else if let Some((_, value @ None)) = pairs.last_mut() {
                *value = Some(arg);
            } else {
                bail!("unexpected argument {arg:?}");
            }
        }
        Ok(Flags { pairs })
    }

    fn take(&mut self, name: &str) -> Option<Option<String>> {
        let at = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(at).1)
    }

    fn switch(&mut self, name: &str) -> bool {
        self.take(name).is_some()
    }

    fn value(&mut self, name: &str) -> Option<String> {
        self.take(name).flatten()
    }

    fn path(&mut self, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.value(name).map(PathBuf::from))
    }

    fn number(&mut self, name: &str) -> Result<Option<u64>> {
        self.value(name)
            .map(|v| v.parse().with_context(|| format!("{name} {v:?}")))
            .transpose()
    }

    fn done(self) -> Result<()> {
        match self.pairs.first() {
            Some((name, _)) => bail!("unknown or repeated flag {name}"),
            None => Ok(()),
        }
    }
}
