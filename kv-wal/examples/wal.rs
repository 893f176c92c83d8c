//! The WAL on its own: four threads append through group commit, the log
//! is checkpointed and reopened, and the records after the checkpoint are
//! replayed.
//!
//! ```text
//! cargo run -p kv-wal --example wal [DIR]
//! ```
//!
//! Without `DIR` the log goes to a temporary directory that is removed at
//! the end.

use std::error::Error;
use std::path::PathBuf;

use kv_wal::{Position, RecoveryMode, SharedWal, SyncPolicy, Wal, WalOptions};

fn main() -> Result<(), Box<dyn Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().join("wal"), PathBuf::from);
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Always)
        .with_max_file_size(4096);

    // Group commit: each append returns once its record is synced, and one
    // sync covers every record that queued up behind the one before.
    let wal = SharedWal::open(&dir, options.clone())?;
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let wal = &wal;
            scope.spawn(move || {
                for i in 0..50 {
                    let record = format!("thread {thread} says {i}");
                    wal.append(record.as_bytes()).expect("append");
                }
            });
        }
    });
    let stats = wal.stats();
    println!(
        "{} appends, {} writes, {} syncs, {} files",
        stats.appends,
        stats.writes,
        stats.syncs,
        stats.rotations + 1
    );

    // A checkpoint: everything before this position is safe elsewhere, so
    // whole files before it can go.
    let checkpoint = wal.end_position();
    let removed = wal.remove_before(checkpoint)?;
    let mut wal = wal.into_inner();
    wal.append(b"written after the checkpoint")?;
    wal.commit()?;
    println!("checkpoint at {checkpoint}: removed {removed} files");
    drop(wal);

    // Recovery: reopen (which would truncate a torn tail), then replay.
    let wal = Wal::open(&dir, options)?;
    let mut replay = Wal::replay(&dir, checkpoint, RecoveryMode::TolerateCorruptedTail)?;
    let mut payload = Vec::new();
    while let Some(position) = replay.next_into(&mut payload) {
        println!("{}: {}", position?, String::from_utf8_lossy(&payload));
    }
    let all = Wal::replay(&dir, Position::START, RecoveryMode::default())?.count();
    println!(
        "{all} records left in {} files, {} bytes",
        wal.file_count(),
        wal.size_on_disk()
    );
    Ok(())
}
