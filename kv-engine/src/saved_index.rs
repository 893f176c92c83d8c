//! The saved index, `INDEX`: the in-memory index as a clean close left it,
//! so that the next open loads it (every shard's slots and entries in slot
//! order, `kv_index::ShardImage`, written back in order) instead of
//! rebuilding it from hint files and segments (a hash, a probe and a random
//! memory access per record).
//!
//! Loading reads the header only: the index is a lazy one
//! (`kv_index::Index::lazy`) whose loader, [`SavedShards`], reads, checks
//! and decodes a shard's image when the index first touches the shard, and
//! falls back on rebuilding that shard from the segments when the image is
//! bad ([`Fallback`], [`IndexHealth`]).
//!
//! It is a cache of what the segments say, never the only copy of
//! anything: it is used only when it matches the marker byte for byte and
//! the segments there are after recovery (ids and lengths), and is
//! otherwise ignored, and the index rebuilt as before. An open that does
//! not load it removes it (one that fails leaves it, as it leaves every
//! file); one that loads it keeps it only until the database changes: the
//! writer removes it before the first write or marker, and a close after a
//! session that changed nothing rewrites nothing. A crash after a change
//! therefore costs a rebuild at the next open, never a wrong index; and if
//! a power loss brings a removed file back, a marker written since no
//! longer matches it, while a marker that still matches means the
//! segments, and so the index, are what they were when it was saved (the
//! replay of the WAL then goes on top, as it goes on top of a rebuilt
//! index). Compaction changes the segments without a marker: the list of
//! segments catches that.
//!
//! It is written without a sync: after a power loss it may be missing or
//! torn, which its checksums catch (and then the index is rebuilt).
//!
//! The byte layout is drawn in docs/format.md, "Saved index".

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use kv_fs::Faults;
use kv_index::{Index, SHARDS, ShardImage, ShardLoader};
use kv_log::LogReader;
use xxhash_rust::xxh3::xxh3_64;

use crate::marker::{Marker, u32_at, u64_at};
use crate::usage::Usage;

/// The file's name in the database directory.
pub(crate) const INDEX_FILE_NAME: &str = "INDEX";
/// The name it is written under before it is renamed into place.
pub(crate) const INDEX_TEMP_NAME: &str = "INDEX.tmp";

const MAGIC: [u8; 8] = *b"KVINDEX\0";
/// The layout version. A build whose index layout (`kv_index`'s slot and
/// entry words, its hash or its shard count) changes must change it.
const VERSION: u16 = 3;
/// Bytes of the fixed header.
const FIXED_LEN: usize = 40;
/// Bytes of one segment's entry.
const SEGMENT_LEN: usize = 56;
/// Bytes of one shard's entry in the shard table.
const SHARD_ENTRY_LEN: usize = 24;
/// Flag: some record loaded had an expiry.
const ANY_EXPIRY: u32 = 1;

/// What a save records besides the index, and what a load gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Context {
    /// Every segment there is, in id order, with its data length and usage.
    pub(crate) segments: Vec<(u32, u64, Usage)>,
    /// The highest sequence number written.
    pub(crate) max_seq: u64,
    /// Whether any record held had an expiry.
    pub(crate) any_expiry: bool,
}

impl Context {
    /// The usage of every segment, as recovery keeps it.
    pub(crate) fn usage(&self) -> BTreeMap<u32, Usage> {
        self.segments.iter().map(|&(id, _, u)| (id, u)).collect()
    }
}

fn put_u32(b: &mut Vec<u8>, x: u32) {
    b.extend_from_slice(&x.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, x: u64) {
    b.extend_from_slice(&x.to_le_bytes());
}

/// The header up to (not including) the shard table.
fn encode_head(marker: &[u8], context: &Context) -> Vec<u8> {
    let mut b = Vec::with_capacity(FIXED_LEN + marker.len() + context.segments.len() * SEGMENT_LEN);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    put_u32(&mut b, SHARDS as u32);
    put_u32(&mut b, marker.len() as u32);
    put_u32(&mut b, context.segments.len() as u32);
    put_u64(&mut b, context.max_seq);
    put_u32(&mut b, if context.any_expiry { ANY_EXPIRY } else { 0 });
    put_u32(&mut b, 0);
    debug_assert_eq!(b.len(), FIXED_LEN);
    b.extend_from_slice(marker);
    for &(id, data_len, u) in &context.segments {
        put_u32(&mut b, id);
        put_u32(&mut b, 0);
        for x in [
            data_len,
            u.total,
            u.dead,
            u.min_seq,
            u.expiring,
            u.latest_expiry,
        ] {
            put_u64(&mut b, x);
        }
    }
    b
}

/// Writes `index` and `context` to `dir/INDEX`, as of `marker` (just
/// written): to `INDEX.tmp`, then renamed, without a sync. The caller must
/// hold every writer of the index still.
///
/// # Errors
///
/// Any write or rename error (or injected fault); `INDEX.tmp` is then
/// removed, best effort.
pub(crate) fn save(
    dir: &Path,
    faults: &Faults,
    index: &Index,
    marker: &Marker,
    context: &Context,
) -> io::Result<()> {
    let tmp = dir.join(INDEX_TEMP_NAME);
    let result = write_to(&tmp, faults, index, marker, context)
        .and_then(|()| kv_fs::rename(&tmp, &dir.join(INDEX_FILE_NAME), faults));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(
    tmp: &Path,
    faults: &Faults,
    index: &Index,
    marker: &Marker,
    context: &Context,
) -> io::Result<()> {
    let file = kv_fs::create_temp(tmp, faults)?;
    let mut head = encode_head(&marker.encode(), context);
    let images_at = (head.len() + SHARDS * SHARD_ENTRY_LEN + size_of::<u64>()) as u64;
    let mut at = images_at;
    let mut image = Vec::new();
    for shard in 0..SHARDS {
        image.clear();
        index.encode_shard_image(shard, &mut image);
        put_u64(&mut head, image.len() as u64);
        // The image starts with its key count (`kv_index::ShardImage`).
        put_u64(&mut head, u64_at(&image, 0));
        put_u64(&mut head, xxh3_64(&image));
        kv_fs::write_or_tear(faults, tmp, &image, |b| file.write_all_at(b, at))?;
        at += image.len() as u64;
    }
    let sum = xxh3_64(&head);
    put_u64(&mut head, sum);
    debug_assert_eq!(head.len() as u64, images_at);
    kv_fs::write_or_tear(faults, tmp, &head, |b| file.write_all_at(b, 0))
}

/// Why a saved index was not used.
enum Unused {
    /// It describes another state of the database: a normal leftover.
    Stale(&'static str),
    /// It is damaged or of another build.
    Bad(String),
    /// It could not be read.
    Io(io::Error),
}

impl From<io::Error> for Unused {
    fn from(e: io::Error) -> Unused {
        Unused::Io(e)
    }
}

/// The segments of `reader`'s set, in id order, with their data lengths:
/// what a saved index must match.
pub(crate) fn segments(reader: &LogReader) -> Vec<(u32, u64)> {
    let set = reader.segments();
    set.iter().map(|s| (s.id(), s.data_len())).collect()
}

/// Reads `dir/INDEX`: the index and context it holds, if it was saved as
/// of exactly `marker` and the segments are `segments` (as [`segments`]
/// gives them). A missing, stale or damaged file gives `None`, the last
/// two with a log line saying why; the caller then rebuilds the index. The
/// file is left in place: an open that fails changes no file; one that
/// succeeds calls [`remove`] if it did not load the file, and the writer
/// does once the database changes if it did.
pub(crate) fn read(
    dir: &Path,
    marker: &Marker,
    segments: &[(u32, u64)],
    fallback: Fallback,
) -> Option<(Index, Context)> {
    let path = dir.join(INDEX_FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!(
                "could not open the saved index {} ({e}); rebuilding the index from the segments",
                path.display()
            );
            return None;
        }
    };
    match read_file(file, &path, &marker.encode(), segments, fallback) {
        Ok(loaded) => Some(loaded),
        Err(Unused::Stale(why)) => {
            log::info!(
                "the saved index {} is out of date ({why}); rebuilding the index from the segments",
                path.display()
            );
            None
        }
        Err(Unused::Bad(why)) => {
            log::warn!(
                "the saved index {} is damaged ({why}); rebuilding the index from the segments",
                path.display()
            );
            None
        }
        Err(Unused::Io(e)) => {
            log::warn!(
                "could not read the saved index {} ({e}); rebuilding the index from the segments",
                path.display()
            );
            None
        }
    }
}

fn read_file(
    file: File,
    path: &Path,
    marker: &[u8],
    segments: &[(u32, u64)],
    fallback: Fallback,
) -> Result<(Index, Context), Unused> {
    let file_len = file.metadata()?.len();
    let mut fixed = [0u8; FIXED_LEN];
    if file_len < FIXED_LEN as u64 {
        return Err(Unused::Bad(format!(
            "it is {file_len} bytes, shorter than its header"
        )));
    }
    file.read_exact_at(&mut fixed, 0)?;
    if fixed[..8] != MAGIC {
        return Err(Unused::Bad("the magic bytes are wrong".into()));
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    let shards = u32_at(&fixed, 12) as usize;
    let marker_len = u32_at(&fixed, 16) as usize;
    let segment_count = u32_at(&fixed, 20) as usize;
    if version != VERSION || shards != SHARDS {
        return Err(Unused::Stale(
            "it was saved by a build with another index layout",
        ));
    }
    if marker_len != marker.len() || segment_count != segments.len() {
        return Err(Unused::Stale("the marker or the segments changed since"));
    }
    let head_len = FIXED_LEN + marker_len + segment_count * SEGMENT_LEN;
    let table_end = head_len + SHARDS * SHARD_ENTRY_LEN;
    let header_len = table_end + size_of::<u64>();
    if file_len < header_len as u64 {
        return Err(Unused::Bad(format!(
            "it is {file_len} bytes, shorter than its header"
        )));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact_at(&mut header, 0)?;
    if u64_at(&header, table_end) != xxh3_64(&header[..table_end]) {
        return Err(Unused::Bad("the header checksum does not match".into()));
    }
    if header[FIXED_LEN..FIXED_LEN + marker_len] != *marker {
        return Err(Unused::Stale("the marker changed since"));
    }
    let mut saved = Vec::with_capacity(segment_count);
    for (i, &(id, data_len)) in segments.iter().enumerate() {
        let at = FIXED_LEN + marker_len + i * SEGMENT_LEN;
        if u32_at(&header, at) != id || u64_at(&header, at + 8) != data_len {
            return Err(Unused::Stale("the segments changed since"));
        }
        let field = |n: usize| u64_at(&header, at + 16 + 8 * n);
        let usage = Usage {
            total: field(0),
            dead: field(1),
            min_seq: field(2),
            expiring: field(3),
            latest_expiry: field(4),
        };
        saved.push((id, data_len, usage));
    }
    let context = Context {
        segments: saved,
        max_seq: u64_at(&fixed, 24),
        any_expiry: u32_at(&fixed, 32) & ANY_EXPIRY != 0,
    };

    // Where each image lies, its key count and its checksum.
    let mut images = Vec::with_capacity(SHARDS);
    let mut keys = Vec::with_capacity(SHARDS);
    let mut at = header_len as u64;
    for shard in 0..SHARDS {
        let entry = head_len + shard * SHARD_ENTRY_LEN;
        let len = u64_at(&header, entry);
        if len > file_len - at {
            return Err(Unused::Bad(format!(
                "the image of shard {shard} passes the end of the file"
            )));
        }
        let count = usize::try_from(u64_at(&header, entry + 8))
            .map_err(|_| Unused::Bad(format!("shard {shard} claims too many keys")))?;
        images.push(Image {
            at,
            len: len as usize,
            keys: count,
            checksum: u64_at(&header, entry + 16),
        });
        keys.push(count);
        at += len;
    }
    if at != file_len {
        return Err(Unused::Bad(format!(
            "it is {file_len} bytes, but its header accounts for {at}"
        )));
    }
    let loader = SavedShards {
        path: path.to_path_buf(),
        file,
        images,
        fallback,
    };
    let index = Index::lazy(&keys, Arc::new(loader)).map_err(|e| Unused::Bad(e.to_string()))?;
    Ok((index, context))
}

/// Where one shard's image lies in the file, and what it must hold.
struct Image {
    at: u64,
    len: usize,
    keys: usize,
    checksum: u64,
}

/// What a loader does when a shard's image turns out bad: rebuild the
/// shard from the segments (`recovery::rebuild_shard`), and record the
/// failure if that fails too.
pub(crate) struct Fallback {
    /// Builds shard `n` from the records the segments hold now.
    pub(crate) rebuild: Box<dyn Fn(usize) -> crate::Result<ShardImage> + Send + Sync>,
    /// What went wrong, for the rest of the engine.
    pub(crate) health: Arc<IndexHealth>,
}

/// What the loader of a saved index found wrong, for the rest of the
/// engine. A bad image (its shard then rebuilt from the segments) means the
/// file must not be kept: a close rewrites it even after a session that
/// changed nothing. A shard that could not be rebuilt either is missing
/// (empty): a miss proves nothing then, so reads check this before they
/// report one (`Shared::read_live`), and iteration, compaction and the
/// close's save check it before they rely on the whole index.
#[derive(Debug, Default)]
pub(crate) struct IndexHealth {
    bad_image: AtomicBool,
    missing: OnceLock<(PathBuf, String)>,
}

impl IndexHealth {
    /// `Err` with the reason if a shard is missing.
    pub(crate) fn check(&self) -> crate::Result<()> {
        match self.missing.get() {
            None => Ok(()),
            Some((path, reason)) => Err(crate::Error::Corruption {
                path: path.clone(),
                offset: 0,
                reason: reason.clone(),
            }),
        }
    }

    /// `check`, after loading every shard of `index`: `Err` also if one
    /// is still not loaded (its loader panicked). What a caller that needs
    /// the whole index (compaction, the close's save) runs first.
    pub(crate) fn check_whole(&self, index: &Index) -> crate::Result<()> {
        index.load_all();
        self.check()?;
        match index.pending_shards() {
            0 => Ok(()),
            n => Err(crate::Error::Poisoned {
                cause: format!("{n} shards of the saved index could not be loaded"),
            }),
        }
    }

    /// Whether some shard's image was bad.
    pub(crate) fn bad_image(&self) -> bool {
        self.bad_image.load(Ordering::Relaxed)
    }
}

/// The loader of a saved index (`kv_index::ShardLoader`): a shard's image
/// is read, checked against its checksum and key count and decoded when
/// the index first touches the shard, so that an open reads the header
/// only and a process that reads a few keys decodes only their shards.
///
/// The file stays open meanwhile: removing or replacing `INDEX` (the
/// writer does both, by name) does not change what it reads.
struct SavedShards {
    path: PathBuf,
    file: File,
    images: Vec<Image>,
    fallback: Fallback,
}

impl SavedShards {
    fn image(&self, shard: usize) -> Result<ShardImage, String> {
        let image = &self.images[shard];
        let mut bytes = vec![0u8; image.len];
        self.file
            .read_exact_at(&mut bytes, image.at)
            .map_err(|e| format!("reading the image of shard {shard} failed: {e}"))?;
        if xxh3_64(&bytes) != image.checksum {
            return Err(format!("the image of shard {shard} fails its checksum"));
        }
        let decoded = ShardImage::decode(shard, &bytes).map_err(|e| e.to_string())?;
        if decoded.len() != image.keys {
            return Err(format!(
                "the image of shard {shard} holds {} keys, the header says {}",
                decoded.len(),
                image.keys
            ));
        }
        Ok(decoded)
    }
}

impl ShardLoader for SavedShards {
    fn load(&self, shard: usize) -> ShardImage {
        let why = match self.image(shard) {
            Ok(image) => return image,
            Err(why) => why,
        };
        log::warn!(
            "the saved index {} is damaged ({why}); rebuilding shard {shard} of the index from the segments",
            self.path.display()
        );
        // The next open must not meet it again: the close rewrites it.
        self.fallback
            .health
            .bad_image
            .store(true, Ordering::Relaxed);
        match (self.fallback.rebuild)(shard) {
            Ok(image) => image,
            Err(e) => {
                let reason = format!(
                    "shard {shard} of the index is missing: the saved index {} is damaged ({why}) \
                     and rebuilding the shard from the segments failed ({e}); \
                     the database must be reopened",
                    self.path.display(),
                );
                log::error!("{reason}");
                let _ = self
                    .fallback
                    .health
                    .missing
                    .set((self.path.clone(), reason));
                ShardImage::empty()
            }
        }
    }
}

/// Removes `dir/INDEX` and any `INDEX.tmp`: after an open that did not
/// load it, or before the first change to a database that did. Not
/// synced: a file that a power loss brings back no longer matches a marker
/// written since.
pub(crate) fn remove(dir: &Path) {
    for name in [INDEX_FILE_NAME, INDEX_TEMP_NAME] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("could not remove {} ({e})", path.display()),
        }
    }
}
