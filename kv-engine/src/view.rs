//! The read-only open (`Db::open_read_only`): a view of the database as of
//! one moment, built without changing a byte in the directory, while
//! another process may hold it open for writing.
//!
//! The view is what the last marker makes durable plus the WAL after it, as
//! recovery builds it, but the WAL's records go into memory
//! (`kv_log::LogView`) instead of the active segment, and nothing is cut,
//! removed, created or locked. The order of the steps is what makes it
//! consistent beside a writer:
//!
//! 1. The marker `M` is read.
//! 2. The segments are listed and mapped: every compaction output and
//!    sealed log segment, and the segment of `M`'s position up to that
//!    position (bytes a writer never cuts or rewrites). A compaction that
//!    finished before this step dropped only records that a write before it
//!    made dead.
//! 3. The WAL files from `M`'s position on are opened (`Wal::replay_live`),
//!    so that a trim by the writer later cannot take them away. They hold
//!    every write after `M`, those of step 2's compactions included.
//! 4. The index is loaded from the mapped segments (or the saved index, if
//!    it was saved as of `M` and these segments), then the WAL is replayed
//!    on top up to its first incomplete frame: a prefix of the history, of
//!    whole writes (one WAL frame per write call, so whole batches).
//!
//! If a step fails because the writer moved on (a file deleted between the
//! listing and its opening, a WAL file trimmed after `M` was read, a
//! compaction output missed by a listing that raced it), the view is built
//! again from a fresh marker, a bounded number of times. A failure that
//! stays the same while the marker does is real damage and is reported.

use std::path::Path;
use std::time::Duration;

use kv_log::LogView;
use kv_wal::{Position, Wal};

use crate::fs::{WAL_DIR_NAME, writer_holds};
use crate::marker::Marker;
use crate::recovery::{
    durable_of, load_index, refuse_data_without_marker, replay_wal, settle_index,
};
use crate::shared::Loaded;
use crate::{Error, Options, Result};

/// How many times a view is built before the open gives up
/// (`Error::Unsettled`).
const ATTEMPTS: u32 = 20;

/// How many times the same failure, under the same marker, is taken for a
/// race before it is reported as it is.
const SAME_FAILURES: u32 = 3;

/// Builds the read-only view of the database in `dir` (module docs),
/// trying again while a writer beside it changes the files under it.
pub(crate) fn open(dir: &Path, options: &Options) -> Result<Loaded> {
    let mut last: Option<(Option<Marker>, String)> = None;
    let mut same = 0;
    for attempt in 0..ATTEMPTS {
        let live = writer_holds(dir)?;
        let marker = Marker::read(dir)?;
        let error = match build(dir, options, marker.as_ref(), live) {
            Ok(viewed) => return Ok(viewed),
            Err(error) => error,
        };
        // Without a writer, before and after, nothing moved: the failure
        // is the directory's.
        let moved = live || writer_holds(dir)? || Marker::read(dir)? != marker;
        if !moved {
            return Err(error);
        }
        let message = error.to_string();
        match &last {
            Some((m, e)) if *m == marker && *e == message => same += 1,
            _ => same = 1,
        }
        if same >= SAME_FAILURES {
            return Err(error);
        }
        log::debug!(
            "building a read-only view of {} again: {message}",
            dir.display()
        );
        last = Some((marker, message));
        std::thread::sleep(Duration::from_millis(1 << attempt.min(6)));
    }
    Err(Error::Unsettled {
        path: dir.to_path_buf(),
        attempts: ATTEMPTS,
        last: last.map_or_else(String::new, |(_, e)| e),
    })
}

/// One attempt at the view of `dir` as of `marker`; `live` if a writer
/// holds the directory.
fn build(dir: &Path, options: &Options, marker: Option<&Marker>, live: bool) -> Result<Loaded> {
    if marker.is_none() {
        refuse_data_without_marker(dir)?;
    }
    let durable = durable_of(marker);
    let mut view = LogView::open(dir, &durable)?;

    let wal_dir = dir.join(WAL_DIR_NAME);
    let from = marker.map_or(Position::START, |m| m.wal_from);
    let mut replay = if from == Position::START && !wal_dir.exists() {
        // A database whose first open stopped before its WAL existed.
        None
    } else if live {
        Some(Wal::replay_live(&wal_dir, from)?)
    } else {
        Some(Wal::replay(&wal_dir, from, options.wal_recovery)?)
    };

    let (index, mut tally, index_loaded, index_health) = load_index(dir, marker, &view.reader())?;
    let marker_seq = marker.map_or(0, |m| m.seq);
    tally.max_seq = tally.max_seq.max(marker_seq);
    let replayed = match &mut replay {
        Some(replay) => replay_wal(
            replay,
            &wal_dir,
            marker_seq,
            &index,
            &mut tally,
            |encoded| Ok(view.append_encoded(encoded)?),
        )?,
        None => 0,
    };
    let reader = view.finish()?;
    settle_index(&index, &tally);
    log::debug!(
        "opened {} read-only{}: {} keys, {replayed} records of the WAL held in memory",
        dir.display(),
        if live { " beside its writer" } else { "" },
        index.len(),
    );
    Ok(Loaded {
        reader,
        index,
        any_expiry: tally.any_expiry,
        usage: tally.finish(),
        index_loaded,
        index_health,
        // A view never compacts: it needs no marker segment or listing.
        marker_segment: 0,
        listed: Vec::new(),
    })
}
