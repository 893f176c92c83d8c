//! The marker: which prefix of the history the segments hold
//! durably, and where in the write-ahead log recovery resumes.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use kv_fs::{CreateError, Faults};
use kv_log::LogPosition;
use kv_wal::Position;
use xxhash_rust::xxh3::xxh3_64;

use crate::{Error, Result};

/// The marker's file name in the database directory.
pub(crate) const MARKER_FILE_NAME: &str = "CHECKPOINT";
const TEMP_NAME: &str = "CHECKPOINT.tmp";

// Format (version 2): { magic [u8; 8] | version u16 | reserved u16
//         | segment u32 | segment_offset u64 | seq u64 | wal_file u64
//         | wal_offset u64 | next_segment_id u32 | segment_count u32
//         | segment_ids [u32; segment_count] | checksum u64 },
// little-endian; the checksum is xxh3-64 over every byte before it.
// Version 1 is the first 48 bytes of that (to `wal_offset`) and the
// checksum: 56 bytes, no segment list.
const MAGIC: [u8; 8] = *b"KVCHKPNT";
const VERSION: u16 = 2;
const VERSION_OFFSET: usize = MAGIC.len();
const SEGMENT_OFFSET: usize = VERSION_OFFSET + size_of::<u16>() + size_of::<u16>();
const SEGMENT_POS_OFFSET: usize = SEGMENT_OFFSET + size_of::<u32>();
const SEQ_OFFSET: usize = SEGMENT_POS_OFFSET + size_of::<u64>();
const WAL_FILE_OFFSET: usize = SEQ_OFFSET + size_of::<u64>();
const WAL_POS_OFFSET: usize = WAL_FILE_OFFSET + size_of::<u64>();
/// Where version 1 ends its fields (and puts its checksum).
const V1_FIELDS_END: usize = WAL_POS_OFFSET + size_of::<u64>();
const V1_MARKER_LEN: usize = V1_FIELDS_END + size_of::<u64>();
const NEXT_ID_OFFSET: usize = V1_FIELDS_END;
const COUNT_OFFSET: usize = NEXT_ID_OFFSET + size_of::<u32>();
const IDS_OFFSET: usize = COUNT_OFFSET + size_of::<u32>();
/// The most segments a marker lists: far more than a database has (16 Mi
/// segments of the default 256 MiB are 4 PiB), and a bound on the bytes
/// read before the checksum is checked.
const MAX_LISTED: usize = 1 << 24;
const MAX_MARKER_LEN: usize = IDS_OFFSET + 4 * MAX_LISTED + size_of::<u64>();

/// Why a marker could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DecodeError {
    /// Damaged bytes: wrong length, magic or checksum.
    Damaged(String),
    /// A whole marker of a format version this build does not read.
    Unsupported(String),
}

/// What a marker makes durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    /// Every record with a sequence number up to this is in the segments,
    /// durably, before `segments_end`.
    pub(crate) seq: u64,
    /// The end of the durable segment data.
    pub(crate) segments_end: LogPosition,
    /// Where replay of the write-ahead log starts.
    pub(crate) wal_from: Position,
    /// The id the next new segment was to get: ids below it are never
    /// given again. 0 in a version 1 marker.
    pub(crate) next_segment_id: u32,
    /// The segments that existed, none superseded by another of them, in
    /// id order: each must exist at open (or be superseded by an output
    /// that does). `None` in a version 1 marker.
    pub(crate) segments: Option<Vec<u32>>,
}

/// The little-endian `u64` at `at` of `b` (which holds it).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The little-endian `u32` at `at` of `b` (which holds it).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl Marker {
    /// What `kv_log::Log::recover` needs of the marker.
    pub(crate) fn durable(&self) -> kv_log::Durable {
        kv_log::Durable {
            end: self.segments_end,
            segments: self.segments.clone(),
            next_id: self.next_segment_id,
        }
    }

    /// The marker's bytes, as `write` stores them.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let ids = self.segments.as_deref().unwrap_or(&[]);
        let mut b = vec![0u8; IDS_OFFSET];
        b[..VERSION_OFFSET].copy_from_slice(&MAGIC);
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&VERSION.to_le_bytes());
        b[SEGMENT_OFFSET..SEGMENT_POS_OFFSET]
            .copy_from_slice(&self.segments_end.segment.to_le_bytes());
        b[SEGMENT_POS_OFFSET..SEQ_OFFSET].copy_from_slice(&self.segments_end.offset.to_le_bytes());
        b[SEQ_OFFSET..WAL_FILE_OFFSET].copy_from_slice(&self.seq.to_le_bytes());
        b[WAL_FILE_OFFSET..WAL_POS_OFFSET].copy_from_slice(&self.wal_from.file.to_le_bytes());
        b[WAL_POS_OFFSET..V1_FIELDS_END].copy_from_slice(&self.wal_from.offset.to_le_bytes());
        b[NEXT_ID_OFFSET..COUNT_OFFSET].copy_from_slice(&self.next_segment_id.to_le_bytes());
        b[COUNT_OFFSET..IDS_OFFSET].copy_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            b.extend_from_slice(&id.to_le_bytes());
        }
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> std::result::Result<Marker, DecodeError> {
        use DecodeError::{Damaged, Unsupported};
        if b.len() < V1_MARKER_LEN {
            return Err(Damaged(format!(
                "it is {} bytes, shorter than any marker ({V1_MARKER_LEN})",
                b.len()
            )));
        }
        if b[..VERSION_OFFSET] != MAGIC {
            return Err(Damaged("the magic bytes are wrong".into()));
        }
        // Every version ends in a checksum of all the bytes before it.
        let body = b.len() - size_of::<u64>();
        if u64_at(b, body) != xxh3_64(&b[..body]) {
            return Err(Damaged("the checksum does not match".into()));
        }
        // Checked after the checksum, so that a damaged version byte reads
        // as damage and only a marker written as a later version as one.
        let version = u16::from_le_bytes([b[VERSION_OFFSET], b[VERSION_OFFSET + 1]]);
        let fixed = |next_segment_id, segments| Marker {
            seq: u64_at(b, SEQ_OFFSET),
            segments_end: LogPosition {
                segment: u32_at(b, SEGMENT_OFFSET),
                offset: u64_at(b, SEGMENT_POS_OFFSET),
            },
            wal_from: Position::new(u64_at(b, WAL_FILE_OFFSET), u64_at(b, WAL_POS_OFFSET)),
            next_segment_id,
            segments,
        };
        match version {
            1 if b.len() == V1_MARKER_LEN => Ok(fixed(0, None)),
            1 => Err(Damaged(format!(
                "a version 1 marker is {V1_MARKER_LEN} bytes, not {}",
                b.len()
            ))),
            VERSION => {
                if body < IDS_OFFSET {
                    return Err(Damaged("it is cut short".into()));
                }
                let count = u32_at(b, COUNT_OFFSET) as usize;
                if body != IDS_OFFSET + 4 * count {
                    return Err(Damaged(format!(
                        "it lists {count} segments in {} bytes",
                        body - IDS_OFFSET
                    )));
                }
                let ids = (0..count).map(|i| u32_at(b, IDS_OFFSET + 4 * i)).collect();
                Ok(fixed(u32_at(b, NEXT_ID_OFFSET), Some(ids)))
            }
            other => Err(Unsupported(format!(
                "marker format version {other} is not supported (this build reads versions 1 and {VERSION})"
            ))),
        }
    }

    /// Reads the marker in `dir`; `None` if there is none yet.
    pub(crate) fn read(dir: &Path) -> Result<Option<Marker>> {
        let path = dir.join(MARKER_FILE_NAME);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(source)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_MARKER_LEN as u64 {
            return Err(Error::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "the CHECKPOINT marker is damaged: it is {len} bytes, more than a marker can be"
                ),
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io)?;
        // The marker is replaced atomically, so any damage is corruption,
        // never a torn write.
        Marker::decode(&bytes).map(Some).map_err(|e| match e {
            DecodeError::Damaged(reason) => Error::Corruption {
                path,
                offset: 0,
                reason: format!("the CHECKPOINT marker is damaged: {reason}"),
            },
            DecodeError::Unsupported(reason) => Error::UnsupportedFile { path, reason },
        })
    }

    /// Replaces the marker in `dir` atomically (`kv_fs::create_atomically`):
    /// temporary file, sync, rename, directory sync. A failure before the
    /// rename removes the temporary file and leaves the old marker in place
    /// ([`CreateError::Unchanged`]); after it ([`CreateError::Unsynced`]),
    /// which marker a crash keeps is unknown.
    pub(crate) fn write(&self, dir: &Path, faults: &Faults) -> Result<(), CreateError<Error>> {
        let tmp = dir.join(TEMP_NAME);
        let path = dir.join(MARKER_FILE_NAME);
        let bytes = self.encode();
        kv_fs::create_atomically(&tmp, &path, faults, |file| {
            kv_fs::write_or_tear(faults, &tmp, &bytes, |b| file.write_all(b))
        })
        .map(drop)
        .map_err(|e| e.map(|source| Error::Io { path, source }))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn sample() -> Marker {
        Marker {
            seq: 123_456,
            segments_end: LogPosition {
                segment: 7,
                offset: 4096,
            },
            wal_from: Position::new(3, 16),
            next_segment_id: 9,
            segments: Some(vec![2, 5, 7, 8]),
        }
    }

    /// Golden bytes: `sample()` as a version 2 marker. Computed once by
    /// running the encoder, then checked by hand against the CHECKPOINT
    /// table of docs/format.md: each field at the offset the table gives,
    /// little-endian, and the checksum over every byte before it (also
    /// checked with the reference `xxhsum -H3`). Changing the format must
    /// change these bytes, docs/format.md and the version together.
    #[rustfmt::skip]
    const GOLDEN_MARKER: [u8; 80] = [
        0x4b, 0x56, 0x43, 0x48, 0x4b, 0x50, 0x4e, 0x54, // 0..8   magic "KVCHKPNT"
        0x02, 0x00,                                     // 8..10  version 2
        0x00, 0x00,                                     // 10..12 reserved
        0x07, 0x00, 0x00, 0x00,                         // 12..16 segment 7
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 16..24 segment_offset 4096
        0x40, 0xe2, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // 24..32 seq 123,456
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 32..40 wal_file 3
        0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 40..48 wal_offset 16
        0x09, 0x00, 0x00, 0x00,                         // 48..52 next_segment_id 9
        0x04, 0x00, 0x00, 0x00,                         // 52..56 segment_count 4
        0x02, 0x00, 0x00, 0x00,                         // 56..60 segment id 2
        0x05, 0x00, 0x00, 0x00,                         // 60..64 segment id 5
        0x07, 0x00, 0x00, 0x00,                         // 64..68 segment id 7
        0x08, 0x00, 0x00, 0x00,                         // 68..72 segment id 8
        0x06, 0xdd, 0x6b, 0x42, 0xf9, 0x4c, 0xe5, 0x01, // 72..80 checksum of 0..72
    ];

    #[test]
    fn the_version_2_marker_is_frozen() {
        assert_eq!(sample().encode(), GOLDEN_MARKER);
        assert_eq!(Marker::decode(&GOLDEN_MARKER), Ok(sample()));
        assert_eq!(
            GOLDEN_MARKER[72..],
            xxh3_64(&GOLDEN_MARKER[..72]).to_le_bytes()
        );
    }

    #[test]
    fn round_trips_and_rejects_every_flipped_byte() {
        let cp = sample();
        let bytes = cp.encode();
        assert_eq!(bytes.len(), IDS_OFFSET + 4 * 4 + 8);
        assert_eq!(Marker::decode(&bytes), Ok(cp));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Marker::decode(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(Marker::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }

        // A later version with a matching checksum is not damage.
        let mut v3 = bytes.clone();
        v3[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&3u16.to_le_bytes());
        let body = v3.len() - 8;
        let sum = xxh3_64(&v3[..body]);
        v3[body..].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(
            Marker::decode(&v3),
            Err(DecodeError::Unsupported(reason)) if reason.contains("version 3")
        ));
    }

    /// A version 1 marker, as the previous build wrote it (bytes frozen
    /// here): read without a segment list or id floor.
    #[test]
    fn a_version_1_marker_is_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"KVCHKPNT");
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&0u16.to_le_bytes());
        v1.extend_from_slice(&7u32.to_le_bytes());
        v1.extend_from_slice(&4096u64.to_le_bytes());
        v1.extend_from_slice(&123_456u64.to_le_bytes());
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&16u64.to_le_bytes());
        let sum = xxh3_64(&v1);
        v1.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(v1.len(), V1_MARKER_LEN);
        let cp = Marker::decode(&v1).unwrap();
        assert_eq!(
            cp,
            Marker {
                next_segment_id: 0,
                segments: None,
                ..sample()
            }
        );
    }

    #[test]
    fn written_marker_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Marker::read(dir.path()).unwrap(), None);
        let cp = Marker {
            seq: 9,
            segments_end: LogPosition {
                segment: 1,
                offset: 32,
            },
            wal_from: Position::new(2, 16),
            next_segment_id: 2,
            segments: Some(vec![1]),
        };
        cp.write(dir.path(), &Faults::default()).unwrap();
        assert_eq!(Marker::read(dir.path()).unwrap(), Some(cp));
        assert!(!dir.path().join(TEMP_NAME).exists());
        fs::write(dir.path().join(MARKER_FILE_NAME), b"junk").unwrap();
        assert!(Marker::read(dir.path()).unwrap_err().is_corruption());
    }
}
