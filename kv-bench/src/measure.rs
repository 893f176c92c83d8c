//! What is measured and how: latency histograms, and the figures read from
//! /proc and the file system.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// A histogram of nanoseconds: 1 ns to 100 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// Times one operation into `h`.
#[inline]
pub fn timed<T>(h: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    h.saturating_record(nanos(start.elapsed()));
    out
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn status_field(name: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("{name} in /proc/self/status"))?;
    Ok(kib * 1024)
}

/// The process's peak resident set size (`VmHWM`), in bytes.
pub fn peak_rss() -> Result<u64> {
    status_field("VmHWM")
}

/// The process's resident anonymous memory (`RssAnon`), in bytes: heap and
/// stacks, not file pages mapped in.
pub fn rss_anon() -> Result<u64> {
    status_field("RssAnon")
}

/// Bytes this process (all its threads) caused to be written to storage:
/// `write_bytes` less `cancelled_write_bytes` (pages dirtied and then
/// truncated away before write-back) in /proc/self/io.
pub fn bytes_written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    let field = |name: &str| -> Result<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{name} in /proc/self/io"))
    };
    Ok(field("write_bytes")?.saturating_sub(field("cancelled_write_bytes")?))
}

/// Space the files under `dir` take on disk: allocated blocks, not
/// apparent sizes, so sparse and preallocated files count as the disk
/// sees them.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += disk_usage(&entry.path())?;
        } else {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}
