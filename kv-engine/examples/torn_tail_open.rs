//! How long `Db::open` takes when the WAL ends in half of a large frame whose
//! payload is the repeated pattern `00 00 01 00` (every fourth offset of the
//! torn tail reads as a plausible little-endian frame length of 64 KiB), the
//! case of review finding §3. A measurement, not a test: it asserts nothing
//! about time.
//!
//! ```sh
//! cargo run --release -p kv-engine --example torn_tail_open -- [MIB...]
//! ```
//!
//! For each value size in MiB (default: 2 and 32) it builds a database with
//! `SyncPolicy::Always`, puts a few small keys and then one value of that
//! size, copies the directory while the `Db` is open (what a crash leaves),
//! cuts the last WAL file in the middle of the large value's frame, and
//! times `Db::open` of fresh copies of that image (`KV_RUNS`, default 5),
//! printing each run and the median. Each open must drop the torn frame and
//! keep the small keys. Scratch files go to `/dev/shm` where it exists.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_engine::{Db, Options, SyncPolicy};

fn main() -> Result<(), kv_engine::Error> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![2, 32] } else { sizes };
    let runs: usize = std::env::var("KV_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let scratch = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    for mib in sizes {
        let image = scratch.path().join(format!("image-{mib}"));
        let (cut, dropped) = build_image(&image, mib << 20)?;
        let mut times = Vec::new();
        for run in 0..runs {
            let copy = scratch.path().join(format!("open-{mib}-{run}"));
            copy_dir(&image, &copy);
            let start = Instant::now();
            let db = Db::open_with(&copy, options())?;
            let elapsed = start.elapsed();
            assert_eq!(db.get(b"big")?, None, "the torn value must be dropped");
            assert_eq!(db.get(b"small-9")?.as_deref(), Some(&b"value"[..]));
            db.close()?;
            fs::remove_dir_all(&copy).expect("remove copy");
            println!("{mib} MiB value, run {run}: Db::open took {elapsed:.3?}");
            times.push(elapsed);
        }
        times.sort();
        let median: Duration = times[times.len() / 2];
        println!(
            "{mib} MiB value torn at WAL offset {cut} ({dropped} bytes of tail): \
             median Db::open {median:.3?} over {runs} runs"
        );
    }
    Ok(())
}

fn options() -> Options {
    Options::default()
        .sync(SyncPolicy::Always)
        .background_compaction(false)
        .max_wal_size(1 << 30)
}

/// Builds the crash image in `image`; returns the offset of the cut in the
/// last WAL file and the bytes after it.
fn build_image(image: &Path, value_len: usize) -> Result<(u64, u64), kv_engine::Error> {
    let live = image.with_extension("live");
    let db = Db::open_with(&live, options())?;
    for i in 0..10 {
        db.put(format!("small-{i}").as_bytes(), b"value")?;
    }
    let wal = last_wal_file(&live.join("wal"));
    let before = fs::metadata(&wal).expect("wal").len();
    let value: Vec<u8> = [0u8, 0, 1, 0].repeat(value_len / 4);
    db.put(b"big", &value)?;
    let after = fs::metadata(&wal).expect("wal").len();
    // What a crash leaves: the files as they are while the Db is open.
    copy_dir(&live, image);
    db.close()?;
    fs::remove_dir_all(&live).expect("remove live");
    let cut = before + (after - before) / 2;
    let image_wal = image.join("wal").join(wal.file_name().expect("name"));
    fs::OpenOptions::new()
        .write(true)
        .open(&image_wal)
        .and_then(|f| f.set_len(cut))
        .expect("cut the WAL");
    Ok((cut, after - cut))
}

fn last_wal_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files.pop().expect("a WAL file")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
