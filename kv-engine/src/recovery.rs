//! Recovery: everything opening does before the writer and compactor
//! threads start. It reads the marker (refusing a directory that
//! holds data without one), recovers the segments up to the marker's
//! position (`Log::recover`), loads them into a new index on two threads
//! (`load_segments`, with `Tally` counting the bytes each segment holds and
//! the index points at), and replays the WAL from the marker's position into
//! the segments and the index. What it found is handed back as a
//! [`Recovered`], from which `Db::open_with` (`db.rs`) builds `Shared`, the
//! `Writer` and the threads.
//!
//! It does not take the directory lock or create the directory (`fs.rs`,
//! called by `db.rs` first), and it writes no marker: the marker that
//! makes the replay durable is the writer's, written by `Db::open_with`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kv_format::{NO_EXPIRY, RecordFormat, RecordKind};
use kv_fs::Faults;
use kv_index::{Entry, Index, SHARDS, ShardImage};
use kv_log::{Location, Log, LogPosition, LogReader, SEGMENT_HEADER_LEN, Segment};
use kv_wal::{Position, Wal};

use crate::fs::WAL_DIR_NAME;
use crate::marker::Marker;
use crate::options::wal_records;
use crate::saved_index::{self, Fallback, IndexHealth};
use crate::usage::Usage;
use crate::writer::entry_for;
use crate::{Error, Options, Result};

/// What recovery found and rebuilt, for `Db::open_with` to start from.
pub(crate) struct Recovered {
    /// The log: segments cut back to the marker's position, with the
    /// records replayed from the WAL appended and flushed.
    pub(crate) log: Log,
    /// The write-ahead log, open, for the writer to append to.
    pub(crate) wal: Wal,
    /// The newest record of every key (tombstones taken out once
    /// everything was loaded).
    pub(crate) index: Index,
    /// The usage of every segment (`Tally::finish`).
    pub(crate) usage: BTreeMap<u32, Usage>,
    /// The highest sequence number in the segments, the WAL or the marker.
    pub(crate) max_seq: u64,
    /// Whether any record loaded has an expiry.
    pub(crate) any_expiry: bool,
    /// The segment of the marker's position (`Shared::marker_segment`).
    pub(crate) marker_segment: u32,
    /// The segments there are now (`Shared::listed`).
    pub(crate) live: Vec<u32>,
    /// Records replayed from the WAL into the segments.
    pub(crate) replayed: u64,
    /// Whether the marker is missing or does not list `live`.
    pub(crate) stale_marker: bool,
    /// Whether the index was loaded from the saved index (`saved_index.rs`)
    /// rather than rebuilt.
    pub(crate) index_loaded: bool,
    /// Set if a shard of a loaded index could not be loaded
    /// (`Shared::index_health`).
    pub(crate) index_health: Arc<IndexHealth>,
}

/// Recovers the database in `dir`, which the caller has created and
/// locked: see [`Recovered`] and `Db::open_with`.
pub(crate) fn recover(dir: &Path, options: &Options, faults: &Faults) -> Result<Recovered> {
    let marker = Marker::read(dir)?;
    if marker.is_none() {
        refuse_data_without_marker(dir)?;
    }

    // 1. The segments, up to the last marker: what they hold beyond
    //    it may be incomplete, and the WAL has all of it. Every segment
    //    the marker lists must be there.
    let marker_seq = marker.as_ref().map_or(0, |c| c.seq);
    let durable = durable_of(marker.as_ref());
    let segments_end = durable.end;
    let mut log = Log::recover(dir, options.log_options(faults), Some(&durable))?;
    let (index, mut tally, index_loaded, index_health) =
        load_index(dir, marker.as_ref(), &log.reader())?;
    tally.max_seq = tally.max_seq.max(marker_seq);

    // 2. The WAL after the marker, applied to the segments.
    let wal_dir = dir.join(WAL_DIR_NAME);
    let wal = Wal::open(&wal_dir, options.wal_options())?;
    let mut replay = wal.read_from(marker.as_ref().map_or(Position::START, |c| c.wal_from));
    let replayed = replay_wal(
        &mut replay,
        &wal_dir,
        marker_seq,
        &index,
        &mut tally,
        |encoded| Ok(log.append_encoded(encoded)?),
    )?;
    log.flush()?;
    settle_index(&index, &tally);
    let max_seq = tally.max_seq;
    let any_expiry = tally.any_expiry;
    let usage = tally.finish();
    log::debug!(
        "opened {}: {} keys, {replayed} records replayed from the WAL, next sequence number {}",
        dir.display(),
        index.len(),
        max_seq + 1
    );

    let live = log.reader().segments().live_ids();
    // A marker that does not list exactly the segments there are now (an
    // output finished after it, a superseded input removed, a version 1
    // marker) is replaced before compaction may take any of them.
    let stale_marker = marker
        .as_ref()
        .is_none_or(|c| c.segments.as_ref() != Some(&live));

    Ok(Recovered {
        log,
        wal,
        index,
        usage,
        max_seq,
        any_expiry,
        marker_segment: segments_end.segment,
        live,
        replayed,
        stale_marker,
        index_loaded,
        index_health,
    })
}

/// What `marker` says of the segments; with none (a new database), an
/// empty first segment.
pub(crate) fn durable_of(marker: Option<&Marker>) -> kv_log::Durable {
    marker.map_or(
        kv_log::Durable::at(LogPosition {
            segment: 1,
            offset: SEGMENT_HEADER_LEN as u64,
        }),
        Marker::durable,
    )
}

/// The index of the segments `reader` holds: the saved index if it was
/// saved as of exactly `marker` and these segments, else loaded from the
/// segments (`load_segments`). Also returns the tally, whether the saved
/// index was used, and the health of its shards.
pub(crate) fn load_index(
    dir: &Path,
    marker: Option<&Marker>,
    reader: &LogReader,
) -> Result<(Index, Tally, bool, Arc<IndexHealth>)> {
    let segments = saved_index::segments(reader);
    let index_health = Arc::new(IndexHealth::default());
    let saved = marker.and_then(|marker| {
        let reader = reader.clone();
        let fallback = Fallback {
            rebuild: Box::new(move |shard| rebuild_shard(&reader, shard)),
            health: Arc::clone(&index_health),
        };
        saved_index::read(dir, marker, &segments, fallback)
    });
    let index_loaded = saved.is_some();
    let (index, tally) = match saved {
        // What the last clean close saved, if it matches exactly.
        Some((index, context)) => (index, Tally::saved(&context)),
        None => {
            // Sized from the hint files' record counts (an upper bound on
            // the keys they hold), so that loading does not rehash.
            let hinted: u64 = reader
                .segments()
                .iter()
                .filter_map(|s| s.hinted_records())
                .sum();
            let index = Index::with_capacity(usize::try_from(hinted).unwrap_or(0));
            let tally = load_segments(reader, &index)?;
            (index, tally)
        }
    };
    Ok((index, tally, index_loaded, index_health))
}

/// Finishes an index that loading and replay filled: takes out the
/// tombstones (kept so far against older records of their keys) and the
/// sequence numbers (from here on a record's location names it).
pub(crate) fn settle_index(index: &Index, tally: &Tally) {
    if tally.tombstones_loaded > 0 {
        index.retain(|_, entry| !entry.tombstone);
    }
    forget_seqs(index);
}

/// Replays the records of `replay` with a sequence number above
/// `marker_seq` (those the segments do not hold durably): each is handed to
/// `append`, which puts it into a segment (an older build's record encoded
/// again first), and loaded into `index` where `append` put it. Returns
/// how many were replayed. Used by opening (into the active segment) and
/// by a read-only view (`view.rs`, into memory).
pub(crate) fn replay_wal(
    replay: &mut kv_wal::Replay,
    wal_dir: &Path,
    marker_seq: u64,
    index: &Index,
    tally: &mut Tally,
    mut append: impl FnMut(&[u8]) -> Result<Location>,
) -> Result<u64> {
    let mut payload = Vec::new();
    let mut reencoded = Vec::new();
    let mut replayed = 0u64;
    while let Some(position) = replay.next_into(&mut payload) {
        let position = position?;
        let path = || wal_dir.join(kv_wal::file_name(position.file));
        let version = replay.payload_version();
        let Some(format) = wal_records(version) else {
            return Err(Error::UnsupportedFile {
                path: path(),
                reason: format!(
                    "its records are of payload version {version}, which this build does not \
                     read (it reads record format versions 1 to {})",
                    kv_format::FORMAT_VERSION
                ),
            });
        };
        let mut at = 0;
        while at < payload.len() {
            let decoded = format
                .decode(&payload[at..])
                .map_err(|e| Error::Corruption {
                    path: path(),
                    offset: position.offset,
                    reason: format!("a WAL record holds a bad data record: {e}"),
                })?;
            let r = decoded.record;
            if r.seq > marker_seq {
                // As the writer does (`Writer::load_shards_of`): the key's
                // shard of a saved index is loaded before its record
                // reaches a segment.
                index.load_shard(index.shard_of(r.key));
                // The active segment holds records of the current layout:
                // one of an older build's WAL is encoded again.
                let encoded = if format == RecordFormat::CURRENT {
                    &payload[at..at + decoded.len]
                } else {
                    reencoded.clear();
                    kv_format::encode(&r, &mut reencoded)?;
                    &reencoded[..]
                };
                let loc = append(encoded)?;
                tally.usage.entry(loc.segment).or_default().total += u64::from(loc.len);
                tally.load(index, loc, r.key, r.seq, r.expires_at, r.kind);
                replayed += 1;
            }
            at += decoded.len;
        }
    }
    Ok(replayed)
}

/// Shard `shard` of the index, rebuilt from the records the segments of
/// `reader` hold now: what the loader of a saved index falls back on when
/// the shard's image is bad (`saved_index.rs`). It may run long after the
/// open, on whatever thread first touches the shard, with the shard's
/// writer lock held, and still gives what the image held: the records of
/// the shard's keys in the segments are still exactly those there were
/// when the index was saved, because no record of a key reaches a segment
/// before its shard is loaded (`Writer::load_shards_of`, and the WAL's
/// replay here), and compaction loads every shard before its first pass
/// (so it copies, drops and removes nothing while a shard waits). Newest
/// record per key, tombstones dropped, as a rebuild at open.
pub(crate) fn rebuild_shard(reader: &LogReader, shard: usize) -> Result<ShardImage> {
    let index = Index::new();
    let mut tombstones = false;
    for segment in reader.segments().iter() {
        segment.load(|loc, meta| {
            if index.shard_of(meta.key) == shard {
                tombstones |= meta.kind == RecordKind::Tombstone;
                let entry = entry_for(loc, meta.expires_at, meta.kind);
                let _ = index.insert_if_newer(meta.key, entry, meta.seq);
            }
        })?;
    }
    if tombstones {
        index.retain(|_, entry| !entry.tombstone);
    }
    let mut image = Vec::new();
    index.encode_shard_image(shard, &mut image);
    ShardImage::decode(shard, &image).map_err(|e| Error::Poisoned {
        cause: format!("kv-engine: a rebuilt shard's image does not decode: {e}"),
    })
}

/// What loading learns besides the index: per segment the total bytes,
/// the lowest sequence number and the bytes the index points at; the
/// tombstones loaded; the highest sequence number.
#[derive(Default)]
pub(crate) struct Tally {
    usage: BTreeMap<u32, Usage>,
    /// Bytes of index entries per segment (tombstone entries included), as
    /// entries come and go.
    pointed: BTreeMap<u32, i64>,
    /// The same, for tombstone entries only.
    tombstones: BTreeMap<u32, i64>,
    tombstones_loaded: u64,
    pub(crate) max_seq: u64,
    /// Bytes of entries with an expiry per segment, and the segment's
    /// latest expiry.
    expiring: BTreeMap<u32, (i64, u64)>,
    pub(crate) any_expiry: bool,
}

impl Tally {
    /// The tally of a saved index: its usage, every live byte pointed at,
    /// no tombstone (a saved index holds none).
    pub(crate) fn saved(context: &saved_index::Context) -> Tally {
        let mut tally = Tally {
            max_seq: context.max_seq,
            any_expiry: context.any_expiry,
            ..Tally::default()
        };
        for (&id, u) in &context.usage() {
            tally.usage.insert(
                id,
                Usage {
                    dead: 0,
                    expiring: 0,
                    latest_expiry: 0,
                    ..*u
                },
            );
            tally.pointed.insert(id, u.live() as i64);
            if u.expiring > 0 || u.latest_expiry > 0 {
                tally
                    .expiring
                    .insert(id, (u.expiring as i64, u.latest_expiry));
            }
        }
        tally
    }

    /// Offers one record to the index: the newest record of each key wins.
    /// Tombstones stay in the index until everything is loaded, since a
    /// lower-numbered record of the key may still come.
    fn load(
        &mut self,
        index: &Index,
        loc: Location,
        key: &[u8],
        seq: u64,
        expires_at: u64,
        kind: RecordKind,
    ) {
        let u = self.usage.entry(loc.segment).or_default();
        u.min_seq = u.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        let entry = entry_for(loc, expires_at, kind);
        if let Ok(previous) = index.insert_if_newer(key, entry, seq) {
            self.count(&entry, 1);
            if let Some(previous) = previous {
                self.count(&previous, -1);
            }
        }
        if kind == RecordKind::Tombstone {
            self.tombstones_loaded += 1;
        }
        if expires_at != NO_EXPIRY {
            self.any_expiry = true;
            let e = self.expiring.entry(loc.segment).or_default();
            e.1 = e.1.max(expires_at);
        }
    }

    fn count(&mut self, e: &Entry, sign: i64) {
        let len = i64::from(e.len) * sign;
        *self.pointed.entry(e.segment).or_default() += len;
        if e.tombstone {
            *self.tombstones.entry(e.segment).or_default() += len;
        } else if e.expires_at != NO_EXPIRY {
            self.expiring.entry(e.segment).or_default().0 += len;
        }
    }

    fn merge(&mut self, other: Tally) {
        for (id, u) in other.usage {
            let mine = self.usage.entry(id).or_default();
            mine.total += u.total;
            mine.min_seq = mine.min_seq.min(u.min_seq);
        }
        for (id, n) in other.pointed {
            *self.pointed.entry(id).or_default() += n;
        }
        for (id, n) in other.tombstones {
            *self.tombstones.entry(id).or_default() += n;
        }
        for (id, (bytes, latest)) in other.expiring {
            let mine = self.expiring.entry(id).or_default();
            mine.0 += bytes;
            mine.1 = mine.1.max(latest);
        }
        self.any_expiry |= other.any_expiry;
        self.tombstones_loaded += other.tombstones_loaded;
        self.max_seq = self.max_seq.max(other.max_seq);
    }

    /// The usage of every segment once loading is done: dead bytes are what
    /// no live (non-tombstone) entry points at.
    pub(crate) fn finish(mut self) -> BTreeMap<u32, Usage> {
        for (id, u) in self.usage.iter_mut() {
            let live = self.pointed.get(id).copied().unwrap_or(0)
                - self.tombstones.get(id).copied().unwrap_or(0);
            u.dead = u.total.saturating_sub(live.max(0) as u64);
            if let Some(&(bytes, latest)) = self.expiring.get(id) {
                u.expiring = bytes.max(0) as u64;
                u.latest_expiry = latest;
            }
        }
        self.usage
    }
}

/// Loads every segment into the index, on two threads: from its hint file
/// where it has a valid one, else by scanning it.
fn load_segments(reader: &LogReader, index: &Index) -> Result<Tally> {
    let segments: Vec<Arc<Segment>> = reader.segments().iter().cloned().collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let load = || -> Result<Tally> {
        let mut tally = Tally::default();
        while let Some(segment) = segments.get(next.fetch_add(1, Ordering::Relaxed)) {
            tally.usage.entry(segment.id()).or_default().total += segment.data_len();
            segment.load(|loc, meta| {
                tally.load(index, loc, meta.key, meta.seq, meta.expires_at, meta.kind);
            })?;
        }
        Ok(tally)
    };
    let results: Vec<Result<Tally>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(load)).collect();
        let mut results = vec![load()];
        results.extend(helpers.into_iter().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(Error::Poisoned {
                    cause: "a loader thread panicked".into(),
                })
            })
        }));
        results
    });
    let mut tally = Tally::default();
    for result in results {
        tally.merge(result?);
    }
    Ok(tally)
}

/// Drops the sequence numbers loading kept in the index
/// (`Index::forget_seqs`), shard by shard on two threads, once loading is
/// done: each shard's entries are copied once more.
fn forget_seqs(index: &Index) {
    let next = AtomicUsize::new(0);
    let forget = || loop {
        let shard = next.fetch_add(1, Ordering::Relaxed);
        if shard >= SHARDS {
            break;
        }
        index.forget_seqs_of(shard);
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(forget);
        }
        forget();
    });
}

/// A directory without a marker must hold no data: the engine
/// writes a marker when it creates a database, so segments or WAL frames
/// without one mean the marker was lost, and opening would take the
/// database for an empty one (and cut its segments). Files a first open cut
/// short can leave (an empty segment 1, an empty WAL file) are allowed.
pub(crate) fn refuse_data_without_marker(dir: &Path) -> Result<()> {
    match data_without_marker(dir)? {
        Some(reason) => Err(Error::Corruption {
            path: dir.join(crate::marker::MARKER_FILE_NAME),
            offset: 0,
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a directory without a marker cannot be a new database
/// (the data files it holds), or `None` if it holds none.
pub(crate) fn data_without_marker(dir: &Path) -> Result<Option<String>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let len = entry.metadata().map_err(io(&entry.path()))?.len();
        if (kv_log::parse_segment_file_name(name).is_some() && len > SEGMENT_HEADER_LEN as u64)
            || kv_log::parse_hint_file_name(name).is_some()
        {
            found.push(name.to_string());
        }
    }
    let wal_dir = dir.join(WAL_DIR_NAME);
    if let Ok(entries) = std::fs::read_dir(&wal_dir) {
        for entry in entries {
            let entry = entry.map_err(io(&wal_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let len = entry.metadata().map_err(io(&entry.path()))?.len();
            if name.ends_with(kv_wal::FILE_SUFFIX) && len > kv_wal::FILE_HEADER_LEN as u64 {
                found.push(format!("{WAL_DIR_NAME}/{name}"));
            }
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    found.sort();
    let shown = found.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    Ok(Some(format!(
        "the CHECKPOINT marker is missing, but the directory holds data ({shown}{}); \
             without the marker it cannot be opened safely: restore the CHECKPOINT file",
        if found.len() > 3 {
            format!(" and {} more files", found.len() - 3)
        } else {
            String::new()
        }
    )))
}
