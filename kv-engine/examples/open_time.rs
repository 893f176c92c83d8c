//! How long `Db::open` plus a first `get` takes for a database of N keys
//! of 16 bytes (100-byte values, every key written twice): with the index
//! saved by the last clean close (`INDEX`), with hint files only (the
//! saved index removed), and with neither (every segment scanned). Each
//! case opens five times and prints the median and the range. The page
//! cache is warm (the data was just written), unless `--cold` is given:
//! then every open follows a `sync` and a drop of the page cache (writing
//! `3` to `/proc/sys/vm/drop_caches`, which needs root), so the open reads
//! what it needs from the disk.
//!
//! ```sh
//! cargo run --release -p kv-engine --example open_time -- [KEYS] [--cold]
//! ```
//!
//! Default: 1,000,000 keys, warm.

use std::path::Path;
use std::time::{Duration, Instant};

use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

/// Opens per case.
const RUNS: usize = 5;

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.to_le_bytes());
    key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    key
}

fn remove_files(dir: &Path, keep: impl Fn(&Path) -> bool) {
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_file() && !keep(&path) {
            std::fs::remove_file(path).expect("remove");
        }
    }
}

/// Writes dirty pages back and drops the page cache.
fn drop_page_cache() {
    let synced = std::process::Command::new("sync").status();
    assert!(synced.is_ok_and(|s| s.success()), "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .expect("dropping the page cache (needs root: run without --cold)");
}

fn main() -> Result<(), kv_engine::Error> {
    let keys: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cold = std::env::args().any(|a| a == "--cold");
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = Options::default().sync(SyncPolicy::Never);

    let start = Instant::now();
    let db = Db::open_with(dir.path(), options.clone())?;
    for round in 0..2u8 {
        let value = [0x5A ^ round; 100];
        let mut batch = WriteBatch::new();
        for i in 0..keys {
            batch.put(&key(i), &value);
            if batch.len() == 1_000 {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            db.write(batch)?;
        }
    }
    // Seal the active segment and write every hint file.
    db.compact()?;
    db.close()?;
    println!(
        "filled {keys} keys twice in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let saved = std::fs::metadata(dir.path().join("INDEX"))
        .expect("the close saved the index")
        .len();

    for case in [
        "the saved index",
        "hint files",
        "neither (segments scanned)",
    ] {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            // Each close of the first case saves the index for the next
            // open; the other cases remove it, and the last the hint files.
            let with_saved = case == "the saved index";
            match case {
                "the saved index" => {}
                "hint files" => remove_files(dir.path(), |p| !p.ends_with("INDEX")),
                _ => remove_files(dir.path(), |p| {
                    !p.ends_with("INDEX") && p.extension().is_none_or(|x| x != "hint")
                }),
            }
            if cold {
                drop_page_cache();
            }
            let start = Instant::now();
            let db = Db::open_with(
                dir.path(),
                options
                    .clone()
                    .background_compaction(false)
                    .save_index(with_saved),
            )?;
            let first = db.get(&key(keys / 2))?;
            let elapsed = start.elapsed();
            assert!(first.is_some(), "the key is there");
            assert_eq!(db.stats().index_loaded, with_saved);
            assert_eq!(db.len() as u64, keys);
            times.push(elapsed);
            db.close()?;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "open + first get with {case}{}: median {:.1} ms (min {:.1}, max {:.1}) over {RUNS} opens of {keys} keys",
            if cold { " (cold cache)" } else { "" },
            ms(times[RUNS / 2]),
            ms(times[0]),
            ms(times[RUNS - 1])
        );
    }
    println!(
        "saved index: {:.1} bytes per key",
        saved as f64 / keys as f64
    );
    Ok(())
}
