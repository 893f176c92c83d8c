//! How long `Db::open` takes for a database of N keys of 16 bytes (100-byte
//! values): with hint files, and with the hint files removed (every segment
//! scanned). The page cache is warm (the data was just written); run it on
//! a machine that can drop caches for cold figures.
//!
//! ```sh
//! cargo run --release -p kv-engine --example open_time -- [KEYS]
//! ```
//!
//! Default: 1,000,000 keys.

use std::time::Instant;

use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

fn main() -> Result<(), kv_engine::Error> {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = Options::default().sync(SyncPolicy::Never);

    let start = Instant::now();
    let db = Db::open_with(dir.path(), options.clone())?;
    let mut batch = WriteBatch::new();
    let value = [0x5Au8; 100];
    for i in 0..keys {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        batch.put(&key, &value);
        if batch.len() == 1_000 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        db.write(batch)?;
    }
    // Seal the active segment and write every hint file.
    db.compact()?;
    db.close()?;
    println!(
        "filled {keys} keys in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    for run in ["with hint files", "without hint files"] {
        if run == "without hint files" {
            for entry in std::fs::read_dir(dir.path()).expect("list") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|x| x == "hint") {
                    std::fs::remove_file(path).expect("remove hint");
                }
            }
        }
        let hints = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "hint"))
            })
            .count();
        let start = Instant::now();
        let db = Db::open_with(dir.path(), options.clone().background_compaction(false))?;
        let elapsed = start.elapsed();
        assert_eq!(db.len() as u64, keys);
        println!(
            "open {run} ({hints} hint files): {:.3} s for {} keys",
            elapsed.as_secs_f64(),
            db.len()
        );
        db.close()?;
    }
    Ok(())
}
