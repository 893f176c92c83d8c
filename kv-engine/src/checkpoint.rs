//! The checkpoint marker: which prefix of the history the segments hold
//! durably, and where in the write-ahead log recovery resumes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use kv_log::LogPosition;
use kv_wal::Position;
use xxhash_rust::xxh3::xxh3_64;

use crate::fault::{Faults, Op};
use crate::{Error, Result};

/// The marker's file name in the database directory.
pub(crate) const CHECKPOINT_FILE_NAME: &str = "CHECKPOINT";
const TEMP_NAME: &str = "CHECKPOINT.tmp";

// Format: { magic [u8; 8] | version u16 | reserved u16 | segment u32
//         | segment_offset u64 | seq u64 | wal_file u64 | wal_offset u64
//         | checksum u64 }, little-endian, 56 bytes; the checksum is xxh3-64
// over the 48 bytes before it.
const MAGIC: [u8; 8] = *b"KVCHKPNT";
const VERSION: u16 = 1;
const VERSION_OFFSET: usize = MAGIC.len();
const SEGMENT_OFFSET: usize = VERSION_OFFSET + size_of::<u16>() + size_of::<u16>();
const SEGMENT_POS_OFFSET: usize = SEGMENT_OFFSET + size_of::<u32>();
const SEQ_OFFSET: usize = SEGMENT_POS_OFFSET + size_of::<u64>();
const WAL_FILE_OFFSET: usize = SEQ_OFFSET + size_of::<u64>();
const WAL_POS_OFFSET: usize = WAL_FILE_OFFSET + size_of::<u64>();
const CHECKSUM_OFFSET: usize = WAL_POS_OFFSET + size_of::<u64>();
const MARKER_LEN: usize = CHECKSUM_OFFSET + size_of::<u64>();

/// Why a marker could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DecodeError {
    /// Damaged bytes: wrong length, magic or checksum.
    Damaged(String),
    /// A whole marker of a format version this build does not read.
    Unsupported(String),
}

/// Why writing the marker failed, and what it left.
#[derive(Debug)]
pub(crate) enum MarkerError {
    /// Before the rename: the old marker is in place, the temporary file
    /// removed.
    Unchanged(Error),
    /// The directory sync after the rename failed: which marker a crash
    /// keeps is unknown.
    Unsynced(Error),
}

impl From<MarkerError> for Error {
    fn from(e: MarkerError) -> Error {
        match e {
            MarkerError::Unchanged(e) | MarkerError::Unsynced(e) => e,
        }
    }
}

/// What a checkpoint made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every record with a sequence number up to this is in the segments,
    /// durably, before `segments_end`.
    pub(crate) seq: u64,
    /// The end of the durable segment data.
    pub(crate) segments_end: LogPosition,
    /// Where replay of the write-ahead log starts.
    pub(crate) wal_from: Position,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Checkpoint {
    fn encode(&self) -> [u8; MARKER_LEN] {
        let mut b = [0u8; MARKER_LEN];
        b[..VERSION_OFFSET].copy_from_slice(&MAGIC);
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&VERSION.to_le_bytes());
        b[SEGMENT_OFFSET..SEGMENT_POS_OFFSET]
            .copy_from_slice(&self.segments_end.segment.to_le_bytes());
        b[SEGMENT_POS_OFFSET..SEQ_OFFSET].copy_from_slice(&self.segments_end.offset.to_le_bytes());
        b[SEQ_OFFSET..WAL_FILE_OFFSET].copy_from_slice(&self.seq.to_le_bytes());
        b[WAL_FILE_OFFSET..WAL_POS_OFFSET].copy_from_slice(&self.wal_from.file.to_le_bytes());
        b[WAL_POS_OFFSET..CHECKSUM_OFFSET].copy_from_slice(&self.wal_from.offset.to_le_bytes());
        let sum = xxh3_64(&b[..CHECKSUM_OFFSET]);
        b[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> std::result::Result<Checkpoint, DecodeError> {
        use DecodeError::{Damaged, Unsupported};
        if b.len() != MARKER_LEN {
            return Err(Damaged(format!(
                "it is {} bytes, not {MARKER_LEN}",
                b.len()
            )));
        }
        if b[..VERSION_OFFSET] != MAGIC {
            return Err(Damaged("the magic bytes are wrong".into()));
        }
        if u64_at(b, CHECKSUM_OFFSET) != xxh3_64(&b[..CHECKSUM_OFFSET]) {
            return Err(Damaged("the checksum does not match".into()));
        }
        // Checked after the checksum, so that a damaged version byte reads
        // as damage and only a marker written as a later version as one.
        let version = u16::from_le_bytes([b[VERSION_OFFSET], b[VERSION_OFFSET + 1]]);
        if version != VERSION {
            return Err(Unsupported(format!(
                "checkpoint marker format version {version} is not supported (this build reads version {VERSION})"
            )));
        }
        let mut seg = [0u8; 4];
        seg.copy_from_slice(&b[SEGMENT_OFFSET..SEGMENT_POS_OFFSET]);
        Ok(Checkpoint {
            seq: u64_at(b, SEQ_OFFSET),
            segments_end: LogPosition {
                segment: u32::from_le_bytes(seg),
                offset: u64_at(b, SEGMENT_POS_OFFSET),
            },
            wal_from: Position::new(u64_at(b, WAL_FILE_OFFSET), u64_at(b, WAL_POS_OFFSET)),
        })
    }

    /// Reads the marker in `dir`; `None` if there is none yet.
    pub(crate) fn read(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        // The marker is replaced atomically, so any damage is corruption,
        // never a torn write.
        Checkpoint::decode(&bytes).map(Some).map_err(|e| match e {
            DecodeError::Damaged(reason) => Error::Corruption {
                path,
                offset: 0,
                reason: format!("the checkpoint marker is damaged: {reason}"),
            },
            DecodeError::Unsupported(reason) => Error::UnsupportedFile { path, reason },
        })
    }

    /// Replaces the marker in `dir` atomically: temporary file, sync,
    /// rename, directory sync. A failure before the rename removes the
    /// temporary file and leaves the old marker in place.
    pub(crate) fn write(&self, dir: &Path, faults: &Faults) -> Result<(), MarkerError> {
        let tmp = dir.join(TEMP_NAME);
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let bytes = self.encode();
        (|| {
            faults.check(Op::Create, &tmp)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            if let Err(e) = faults.check(Op::Write, &tmp) {
                file.write_all(&bytes[..bytes.len() / 2])?;
                return Err(e);
            }
            file.write_all(&bytes)?;
            faults.check(Op::Sync, &tmp)?;
            file.sync_all()?;
            faults.check(Op::Rename, &path)?;
            fs::rename(&tmp, &path)
        })()
        .map_err(|source| {
            let _ = fs::remove_file(&tmp);
            MarkerError::Unchanged(Error::Io {
                path: path.clone(),
                source,
            })
        })?;
        faults
            .check(Op::Sync, dir)
            .and_then(|()| File::open(dir)?.sync_all())
            .map_err(|source| MarkerError::Unsynced(Error::Io { path, source }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_every_flipped_byte() {
        let cp = Checkpoint {
            seq: 123_456,
            segments_end: LogPosition {
                segment: 7,
                offset: 4096,
            },
            wal_from: Position::new(3, 16),
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(cp));
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            assert!(Checkpoint::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Checkpoint::decode(&bytes[..MARKER_LEN - 1]).is_err());

        // A later version with a matching checksum is not damage.
        let mut v2 = bytes;
        v2[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&2u16.to_le_bytes());
        let sum = xxh3_64(&v2[..CHECKSUM_OFFSET]);
        v2[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(
            Checkpoint::decode(&v2),
            Err(DecodeError::Unsupported(reason)) if reason.contains("version 2")
        ));
    }

    #[test]
    fn written_marker_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        let cp = Checkpoint {
            seq: 9,
            segments_end: LogPosition {
                segment: 1,
                offset: 32,
            },
            wal_from: Position::new(2, 16),
        };
        cp.write(dir.path(), &Faults::default()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(cp));
        assert!(!dir.path().join(TEMP_NAME).exists());
        fs::write(dir.path().join(CHECKPOINT_FILE_NAME), b"junk").unwrap();
        assert!(Checkpoint::read(dir.path()).unwrap_err().is_corruption());
    }
}
