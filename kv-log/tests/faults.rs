//! What the segment log does when a write, sync, rename or file creation
//! fails (the `fail-points` seam): a failed write is cut off and the log
//! goes on; a failed sync poisons it; a failed creation leaves the active
//! segment active.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv_format::Record;
use kv_fs::{FaultError, FaultInjector, FaultMode, Faults, FileOp};
use kv_log::{Log, LogError, LogOptions};

fn options(faults: &Arc<FaultInjector>) -> LogOptions {
    LogOptions {
        segment_size: 4096,
        faults: Faults::from(Arc::clone(faults)),
    }
}

/// Fails every operation of kind `op` (ENOSPC) from now on; `None` fails
/// nothing more.
fn arm(faults: &FaultInjector, op: Option<FileOp>) {
    faults.clear();
    if let Some(op) = op {
        faults.fail_next(op, FaultError::NoSpace, FaultMode::Persistent);
    }
}

fn records(dir: &Path) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let _log = Log::open(dir, LogOptions::default(), |_, r| keys.push(r.key.to_vec())).unwrap();
    keys
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[test]
fn a_failed_write_is_discarded_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let mut log = Log::open(dir.path(), options(&faults), |_, _| {}).unwrap();
    log.append(&Record::put(1, b"kept", b"v")).unwrap();
    log.flush().unwrap();
    let before = log.position();

    // Appends copy into the file's mapping; the second one fails (torn:
    // half its bytes are copied), and takes the first, not yet flushed,
    // with it.
    log.append(&Record::put(2, b"failed-1", &[7; 100])).unwrap();
    arm(&faults, Some(FileOp::Write));
    assert!(matches!(
        log.append(&Record::put(3, b"failed-2", &[8; 100])),
        Err(LogError::Io { .. })
    ));
    assert!(faults.hits() > 0);
    assert_eq!(
        log.position(),
        before,
        "nothing of the failed write remains"
    );
    assert!(log.poison_cause().is_none());
    let file_len = std::fs::metadata(log.reader().segments().iter().last().unwrap().path())
        .unwrap()
        .len();
    assert_eq!(
        file_len, before.offset,
        "the half-written bytes were cut off"
    );

    arm(&faults, None);
    let loc = log.append(&Record::put(4, b"after", b"v")).unwrap();
    assert_eq!(u64::from(loc.offset), before.offset);
    log.sync().unwrap();
    drop(log);
    assert_eq!(records(dir.path()), [b"kept".to_vec(), b"after".to_vec()]);
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let mut log = Log::open(dir.path(), options(&faults), |_, _| {}).unwrap();
    log.append(&Record::put(1, b"k", b"v")).unwrap();
    arm(&faults, Some(FileOp::Sync));
    assert!(matches!(log.sync(), Err(LogError::Io { .. })));
    arm(&faults, None);
    assert!(log.poison_cause().is_some());
    assert!(matches!(
        log.append(&Record::put(2, b"k", b"v")),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
}

#[test]
fn a_failed_segment_creation_keeps_the_active_segment() {
    for op in [FileOp::Create, FileOp::Write, FileOp::Rename] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::new());
        let mut log = Log::open(dir.path(), options(&faults), |_, _| {}).unwrap();
        log.append(&Record::put(1, b"first", &[1; 3000])).unwrap();
        log.flush().unwrap();
        let active = log.active_id();
        arm(&faults, Some(op));
        // Does not fit in the 4 KiB segment: the roll's creation fails.
        let result = log.append(&Record::put(2, b"second", &[2; 3000]));
        assert!(matches!(result, Err(LogError::Io { .. })), "{op:?}");
        assert!(faults.hits() > 0, "{op:?}");
        assert_eq!(log.active_id(), active, "{op:?}");
        assert!(log.poison_cause().is_none(), "{op:?}");
        assert!(files(dir.path(), ".tmp").is_empty(), "{op:?}");
        arm(&faults, None);
        log.append(&Record::put(3, b"third", &[3; 3000])).unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(
            records(dir.path()),
            [b"first".to_vec(), b"third".to_vec()],
            "{op:?}"
        );
    }
}

#[test]
fn a_failed_hint_write_leaves_no_hint_and_no_temporary_file() {
    for op in [FileOp::Create, FileOp::Write, FileOp::Sync, FileOp::Rename] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultInjector::new());
        let mut log = Log::open(dir.path(), options(&faults), |_, _| {}).unwrap();
        log.append(&Record::put(1, b"k", b"v")).unwrap();
        log.seal_active().unwrap();
        let sealed = Arc::clone(log.reader().segments().iter().next().unwrap());
        arm(&faults, Some(op));
        assert!(sealed.write_hint().is_err(), "{op:?}");
        assert!(!sealed.has_hint(), "{op:?}");
        assert!(files(dir.path(), ".hint").is_empty(), "{op:?}");
        assert!(files(dir.path(), ".tmp").is_empty(), "{op:?}");
        arm(&faults, None);
        sealed.write_hint().unwrap();
        assert!(sealed.has_hint());
    }
}
