//! Write amplification of a fill: bytes the process caused to be written to
//! storage (`write_bytes` in /proc/self/io) per byte of user data (keys
//! plus values), from open to close.
//!
//! ```sh
//! cargo run --release -p kv-engine --example write_amp -- [KEYS] [KEY_LEN] [VALUE_LEN] [BATCH]
//! ```
//!
//! Defaults: 1,000,000 keys of 16 bytes, 100-byte values, batches of 1,000
//! under `SyncPolicy::Always`. Linux only.

use std::time::Instant;

use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io (Linux only)");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes in /proc/self/io")
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), kv_engine::Error> {
    let keys = arg(1, 1_000_000);
    let key_len = arg(2, 16) as usize;
    let value_len = arg(3, 100) as usize;
    let batch_size = arg(4, 1_000).max(1);
    let dir = tempfile::tempdir().expect("temporary directory");

    let before = write_bytes();
    let start = Instant::now();
    let db = Db::open_with(dir.path(), Options::default().sync(SyncPolicy::Always))?;
    let mut key = vec![0u8; key_len];
    let mut value = vec![0u8; value_len];
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        let ib = i.to_le_bytes();
        for (j, b) in key.iter_mut().enumerate() {
            *b = ib[j % 8] ^ (j as u8);
        }
        // Incompressible-looking values.
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for b in value.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        batch.put(&key, &value);
        if batch.len() as u64 == batch_size {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        db.write(batch)?;
    }
    db.close()?;
    let written = write_bytes() - before;
    let user = keys * (key_len + value_len) as u64;
    println!(
        "{keys} keys, {key_len} B keys, {value_len} B values, batches of {batch_size}: \
         {written} bytes written for {user} bytes of user data: write amplification {:.3} \
         ({:.1} s)",
        written as f64 / user as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
