//! Space under steady overwrites: how much disk a database takes, as a
//! multiple of its live data, while a writer keeps overwriting random keys
//! at a fixed rate and background compaction runs at its defaults.
//!
//! It loads KEYS keys of 16 bytes with 100-byte values (batches of 1,000),
//! then overwrites uniformly random keys at RATE puts per second (batches
//! of 1,000, `SyncPolicy::Always`) for SECONDS seconds, and samples the
//! blocks allocated under the directory (every file: segments, hint files,
//! the WAL, the marker) every 100 ms. Live data is keys plus values
//! (116 bytes per key), as in `cargo xtask bench`'s space rows. It prints
//! the median and the largest multiple over the second half of the
//! overwrite phase (the first half lets compaction reach its steady
//! state), then the multiple 5 s after the writes stop, and what the
//! overwrite phase cost: bytes the process wrote to storage
//! (`write_bytes` in /proc/self/io) per byte of keys and values put.
//!
//! ```sh
//! cargo run --release -p kv-engine --example space_steady -- [KEYS] [RATE] [SECONDS] [SEGMENT_MIB] [WAL_MIB] [THRESHOLD_PCT] [SPACE_TARGET_PCT]
//! ```
//!
//! Defaults: 1,000,000 keys, 100,000 puts per second, 30 s, and
//! `Options::default()`; the last four arguments set
//! `Options::segment_size`, `Options::max_wal_size`,
//! `Options::compaction_threshold` and `Options::compaction_space_target`
//! instead (`-` keeps a default), to see what each trades. Linux only
//! (allocated blocks come from `st_blocks`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use kv_engine::{Db, Options, WriteBatch};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const BATCH: u64 = 1_000;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    key
}

/// Bytes allocated to every file under `dir`, recursively.
fn allocated(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => allocated(&e.path()),
            Ok(m) => m.blocks() * 512,
            // Removed between the listing and the stat.
            Err(_) => 0,
        })
        .sum()
}

/// A small xorshift generator: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Bytes this process has caused to be written to storage.
fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io (Linux only)");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("write_bytes in /proc/self/io")
}

fn main() -> Result<(), kv_engine::Error> {
    let keys = arg(1, 1_000_000).max(1);
    let rate = arg(2, 100_000).max(BATCH);
    let seconds = arg(3, 30).max(2);
    let dir = tempfile::tempdir().expect("temporary directory");
    let live = keys * (KEY_LEN + VALUE_LEN) as u64;
    let mut options = Options::default();
    if let Some(mib) = std::env::args().nth(4).and_then(|a| a.parse::<u64>().ok()) {
        options = options.segment_size(mib << 20);
    }
    if let Some(mib) = std::env::args().nth(5).and_then(|a| a.parse::<u64>().ok()) {
        options = options.max_wal_size(mib << 20);
    }
    if let Some(pct) = std::env::args().nth(6).and_then(|a| a.parse::<u64>().ok()) {
        options = options.compaction_threshold(pct as f64 / 100.0);
    }
    if let Some(pct) = std::env::args().nth(7).and_then(|a| a.parse::<u64>().ok()) {
        options = options.compaction_space_target(pct as f64 / 100.0);
    }
    println!(
        "segments of {} MiB, WAL trimmed at {} MiB, compaction at {:.0}% dead, \
         whole directory kept under {:.0}% dead",
        options.segment_size >> 20,
        options.max_wal_size >> 20,
        options.compaction_threshold * 100.0,
        options.compaction_space_target * 100.0
    );
    let db = Db::open_with(dir.path(), options)?;

    let mut batch = WriteBatch::new();
    for i in 0..keys {
        batch.put(&key(i), &[0x11; VALUE_LEN]);
        if batch.len() as u64 == BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        db.write(std::mem::take(&mut batch))?;
    }
    println!(
        "loaded {keys} keys: {:.2}x live",
        allocated(dir.path()) as f64 / live as f64
    );

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let written_before = write_bytes();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let batch_every = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let mut next_batch = start;
    let mut next_sample = start;
    let mut samples = Vec::new();
    let mut written = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            if now >= start + Duration::from_secs(seconds) / 2 {
                samples.push(allocated(dir.path()) as f64 / live as f64);
            }
            next_sample += Duration::from_millis(100);
        }
        if now < next_batch {
            std::thread::sleep((next_batch - now).min(next_sample.saturating_duration_since(now)));
            continue;
        }
        for _ in 0..BATCH {
            let value = [(written % 251) as u8; VALUE_LEN];
            batch.put(&key(rng.below(keys)), &value);
            written += 1;
        }
        db.write(std::mem::take(&mut batch))?;
        next_batch += batch_every;
    }
    let achieved = written as f64 / start.elapsed().as_secs_f64();
    let amplification =
        (write_bytes() - written_before) as f64 / (written * (KEY_LEN + VALUE_LEN) as u64) as f64;
    samples.sort_by(f64::total_cmp);
    println!(
        "overwrites at {achieved:.0}/s for {seconds} s (asked {rate}/s): \
         median {:.2}x live, max {:.2}x over the second half ({} samples); \
         {amplification:.2} bytes written per byte put",
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        samples.len()
    );
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "5 s after the last write: {:.2}x live",
        allocated(dir.path()) as f64 / live as f64
    );
    let stats = db.stats();
    println!(
        "then: live record bytes {} ({:.2}x the keys and values: record headers), \
         dead {} ({:.0}% of segment bytes), {} segments, WAL {} bytes ({:.2}x live), \
         {} compactions",
        stats.live_bytes,
        stats.live_bytes as f64 / live as f64,
        stats.dead_bytes,
        100.0 * stats.dead_bytes as f64 / (stats.live_bytes + stats.dead_bytes).max(1) as f64,
        stats.segments,
        stats.wal_bytes,
        stats.wal_bytes as f64 / live as f64,
        stats.compactions
    );
    db.close()?;
    println!(
        "after close: {:.2}x live",
        allocated(dir.path()) as f64 / live as f64
    );
    Ok(())
}
