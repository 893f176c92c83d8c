//! An open database that nobody uses burns no CPU: the writer waits
//! actively only for a bounded time after its last command (`wait.rs`),
//! then sleeps. Read from `/proc/self/task/*/stat` (Linux), in clock ticks
//! of CPU time, not in seconds of wall time.

use std::fs;
use std::time::Duration;

use kv_engine::{Db, Options, SyncPolicy};

/// The CPU time (user + system, in clock ticks) of this process's thread
/// named `name`, and whether it is asleep now (state `S`).
fn thread_cpu(name: &str) -> (u64, bool) {
    for task in fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.unwrap().path();
        let Ok(comm) = fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let stat = fs::read_to_string(task.join("stat")).unwrap();
        // The fields after the parenthesised name: state is the first,
        // utime and stime the 12th and 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        return (ticks, fields[0] == "S");
    }
    panic!("no thread named {name}");
}

fn idle_writer_sleeps(policy: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Options::default().sync(policy)).unwrap();
    for i in 0u32..1000 {
        db.put(&i.to_le_bytes(), b"value").unwrap();
    }
    db.sync().unwrap();
    // Past the bounded active wait (50 us) by far, and past an interval
    // policy's sync.
    std::thread::sleep(Duration::from_millis(200));
    let (before, _) = thread_cpu("kv-writer");
    std::thread::sleep(Duration::from_secs(1));
    let (after, asleep) = thread_cpu("kv-writer");
    assert!(asleep, "the idle writer thread is not asleep");
    // A tick is 10 ms of CPU time (USER_HZ = 100); a spinning writer
    // would take about 100 in this second.
    assert!(
        after - before <= 1,
        "the idle writer thread used {} clock ticks of CPU in one second",
        after - before
    );
    db.close().unwrap();
}

// One test, so that one `kv-writer` thread exists at a time.
#[test]
fn an_idle_writer_thread_sleeps() {
    idle_writer_sleeps(SyncPolicy::Never);
    idle_writer_sleeps(SyncPolicy::Interval(Duration::from_millis(5)));
    idle_writer_sleeps(SyncPolicy::Always);
}
