//! Segment and hint file naming, and every on-disk constant of both.

use kv_format::RecordFormat;
use xxhash_rust::xxh3::xxh3_64;

// Format: { magic [u8; 8] | version u16 | flags u16 | segment_id u32
//         | supersedes_count u32 | reserved u32 | checksum u64 }
//         [ supersedes: { ids [u32; supersedes_count] | checksum u64 } ]
// little-endian. The header checksum is xxh3-64 over the 24 bytes before
// it; the supersedes block (present when the count is not zero) has its own
// checksum over the ids. Records follow, in the record format version the
// segment version says: segment version 1 holds version 1 records, segment
// version 2 version 2 records.

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KVSEGMNT";
/// The segment file format version this build writes: its records are of
/// record format version 2 ([`RecordFormat::CURRENT`]).
pub const SEGMENT_VERSION: u16 = 2;
/// The oldest segment file format version this build reads: version 1
/// segments hold version 1 records.
pub const SEGMENT_MIN_VERSION: u16 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + SEGMENT_MAGIC.len();
const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
const ID_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>();
const SUPERSEDES_OFFSET: usize = ID_OFFSET + size_of::<u32>();
const RESERVED_OFFSET: usize = SUPERSEDES_OFFSET + size_of::<u32>();
const CHECKSUM_OFFSET: usize = RESERVED_OFFSET + size_of::<u32>();
/// Length of the fixed segment header. In a segment written by the log
/// (not by compaction) the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = CHECKSUM_OFFSET + size_of::<u64>();

/// Header flag: the segment was written by compaction.
const FLAG_COMPACTED: u16 = 1;
/// The most segments one compaction output may supersede.
pub const MAX_SUPERSEDES: usize = 1 << 16;

/// The file name extension of segment files.
pub const SEGMENT_EXTENSION: &str = "seg";
/// Suffix of a segment being created; such files are removed at open.
pub(crate) const TEMP_SUFFIX: &str = ".seg.tmp";

/// The default size at which the active segment is sealed: 256 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
/// The largest segment size: offsets and lengths in the index are u32, so
/// every record must start and end below 4 GiB.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64;

/// Who wrote a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// Appended by the log's writer, in sequence-number order.
    Log,
    /// Written by compaction: live records copied from older segments,
    /// which it supersedes.
    Compacted,
}

/// A decoded segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) id: u32,
    pub(crate) kind: SegmentKind,
    /// Segments whose every live record this one holds; they are deleted
    /// when found at open.
    pub(crate) supersedes: Vec<u32>,
    /// Where the first record starts.
    pub(crate) data_start: u64,
    /// The layout of the segment's records (from its version).
    pub(crate) records: RecordFormat,
}

/// The record layout of the segments of version `version`.
const fn records_of(version: u16) -> Option<RecordFormat> {
    match version {
        1 => Some(RecordFormat::V1),
        2 => Some(RecordFormat::V2),
        _ => None,
    }
}

const _: () = assert!(matches!(
    records_of(SEGMENT_VERSION),
    Some(RecordFormat::CURRENT)
));

/// The file name of segment `id`: ten decimal digits and `.seg`, so that
/// names sort in id order.
pub fn segment_file_name(id: u32) -> String {
    format!("{id:010}.{SEGMENT_EXTENSION}")
}

/// Whether `name` is a segment file's name (`0000000001.seg`); its id if
/// so.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    parse_numbered(name, ".seg")
}

fn parse_numbered(name: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The header (and supersedes block) of a new segment.
pub(crate) fn encode_header(id: u32, kind: SegmentKind, supersedes: &[u32]) -> Vec<u8> {
    let mut h = vec![0u8; SEGMENT_HEADER_LEN];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let flags = match kind {
        SegmentKind::Log => 0,
        SegmentKind::Compacted => FLAG_COMPACTED,
    };
    h[FLAGS_OFFSET..ID_OFFSET].copy_from_slice(&flags.to_le_bytes());
    h[ID_OFFSET..SUPERSEDES_OFFSET].copy_from_slice(&id.to_le_bytes());
    // Callers keep `supersedes` under MAX_SUPERSEDES.
    h[SUPERSEDES_OFFSET..RESERVED_OFFSET].copy_from_slice(&(supersedes.len() as u32).to_le_bytes());
    let sum = xxh3_64(&h[..CHECKSUM_OFFSET]);
    h[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
    if !supersedes.is_empty() {
        let start = h.len();
        for id in supersedes {
            h.extend_from_slice(&id.to_le_bytes());
        }
        let sum = xxh3_64(&h[start..]);
        h.extend_from_slice(&sum.to_le_bytes());
    }
    h
}

/// How many bytes the whole header claims to take (fixed part and
/// supersedes block), read from its fixed part without checking it; capped
/// by [`MAX_SUPERSEDES`], so it is safe to use as a read length.
pub(crate) fn claimed_header_len(fixed: &[u8]) -> usize {
    let count = fixed
        .get(SUPERSEDES_OFFSET..RESERVED_OFFSET)
        .map_or(0, |_| read_u32(fixed, SUPERSEDES_OFFSET) as usize)
        .min(MAX_SUPERSEDES);
    if count == 0 {
        SEGMENT_HEADER_LEN
    } else {
        SEGMENT_HEADER_LEN + count * 4 + 8
    }
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a segment this build reads: another magic number, or a header
    /// whose checksum matches but whose version or flags this build does
    /// not know.
    Unsupported(String),
    /// The bytes are damaged: a checksum does not match, or the header is
    /// cut short (a segment's header is synced before the file gets its
    /// name, so a short header is never a torn write).
    Damaged(String),
}

/// Checks a segment header (and supersedes block) at the front of `bytes`.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    use HeaderError::{Damaged, Unsupported};
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(Damaged(format!(
            "the file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
            bytes.len()
        )));
    };
    if h[MAGIC_OFFSET..VERSION_OFFSET] != SEGMENT_MAGIC {
        return Err(Unsupported("the magic bytes are wrong".into()));
    }
    if read_u64(h, CHECKSUM_OFFSET) != xxh3_64(&h[..CHECKSUM_OFFSET]) {
        return Err(Damaged("the header checksum does not match".into()));
    }
    let version = read_u16(h, VERSION_OFFSET);
    let Some(records) = records_of(version) else {
        return Err(Unsupported(format!(
            "segment format version {version} is not supported (this build reads versions \
             {SEGMENT_MIN_VERSION} to {SEGMENT_VERSION})"
        )));
    };
    let flags = read_u16(h, FLAGS_OFFSET);
    let kind = match flags {
        0 => SegmentKind::Log,
        FLAG_COMPACTED => SegmentKind::Compacted,
        other => return Err(Unsupported(format!("unknown header flags {other:#06x}"))),
    };
    let count = read_u32(h, SUPERSEDES_OFFSET) as usize;
    if count > MAX_SUPERSEDES {
        return Err(Unsupported(format!(
            "it claims to supersede {count} segments"
        )));
    }
    let mut data_start = SEGMENT_HEADER_LEN;
    let mut supersedes = Vec::new();
    if count > 0 {
        let ids_end = SEGMENT_HEADER_LEN + count * 4;
        let Some(block) = bytes.get(SEGMENT_HEADER_LEN..ids_end + 8) else {
            return Err(Damaged(
                "the list of superseded segments is cut short".into(),
            ));
        };
        let (ids, sum) = block.split_at(count * 4);
        if read_u64(sum, 0) != xxh3_64(ids) {
            return Err(Damaged(
                "the checksum of the superseded segments does not match".into(),
            ));
        }
        supersedes = ids.chunks_exact(4).map(|c| read_u32(c, 0)).collect();
        data_start = ids_end + 8;
    }
    if kind == SegmentKind::Log && !supersedes.is_empty() {
        return Err(Unsupported("a log segment cannot supersede others".into()));
    }
    Ok(SegmentHeader {
        id: read_u32(h, ID_OFFSET),
        kind,
        supersedes,
        data_start: data_start as u64,
        records,
    })
}

// Hint file.
//
// Format: { magic [u8; 8] | version u16 | reserved u16 | segment_id u32
//         | segment_len u64 | entry_count u64 } entries... { checksum u64 }
// The entries of each version are in `hint.rs`. The trailing checksum is
// xxh3-64 over every byte before it.

/// The first eight bytes of every hint file.
pub const HINT_MAGIC: [u8; 8] = *b"KVHINTS\0";
/// The hint file format version this build writes. It reads this one and
/// version 1 (fixed-size entries, up to commit 67bd6b7).
pub const HINT_VERSION: u16 = 2;
/// The oldest hint file format version this build reads.
pub const HINT_MIN_VERSION: u16 = 1;
const HINT_VERSION_OFFSET: usize = HINT_MAGIC.len();
const HINT_RESERVED_OFFSET: usize = HINT_VERSION_OFFSET + size_of::<u16>();
const HINT_ID_OFFSET: usize = HINT_RESERVED_OFFSET + size_of::<u16>();
const HINT_SEGMENT_LEN_OFFSET: usize = HINT_ID_OFFSET + size_of::<u32>();
const HINT_COUNT_OFFSET: usize = HINT_SEGMENT_LEN_OFFSET + size_of::<u64>();
pub(crate) const HINT_HEADER_LEN: usize = HINT_COUNT_OFFSET + size_of::<u64>();
const _: () = assert!(HINT_HEADER_LEN == 32);

/// The file name of the hint file of segment `id`.
pub fn hint_file_name(id: u32) -> String {
    format!("{id:010}.hint")
}

/// Whether `name` is a hint file's name (`0000000001.hint`); its
/// segment's id if so.
pub fn parse_hint_file_name(name: &str) -> Option<u32> {
    parse_numbered(name, ".hint")
}

pub(crate) fn encode_hint_header(id: u32, segment_len: u64, count: u64) -> [u8; HINT_HEADER_LEN] {
    let mut h = [0u8; HINT_HEADER_LEN];
    h[..HINT_VERSION_OFFSET].copy_from_slice(&HINT_MAGIC);
    h[HINT_VERSION_OFFSET..HINT_RESERVED_OFFSET].copy_from_slice(&HINT_VERSION.to_le_bytes());
    h[HINT_ID_OFFSET..HINT_SEGMENT_LEN_OFFSET].copy_from_slice(&id.to_le_bytes());
    h[HINT_SEGMENT_LEN_OFFSET..HINT_COUNT_OFFSET].copy_from_slice(&segment_len.to_le_bytes());
    h[HINT_COUNT_OFFSET..HINT_HEADER_LEN].copy_from_slice(&count.to_le_bytes());
    h
}

/// A hint file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HintHeader {
    /// The format version: [`HINT_MIN_VERSION`] to [`HINT_VERSION`].
    pub(crate) version: u16,
    /// The segment it describes.
    pub(crate) segment: u32,
    /// That segment's length when the hint was written.
    pub(crate) segment_len: u64,
    /// How many entries follow.
    pub(crate) count: u64,
}

/// Decodes a hint file's header.
pub(crate) fn decode_hint_header(h: &[u8]) -> Result<HintHeader, String> {
    let Some(h) = h.get(..HINT_HEADER_LEN) else {
        return Err("the file is shorter than its header".into());
    };
    if h[..HINT_VERSION_OFFSET] != HINT_MAGIC {
        return Err("the magic bytes are wrong".into());
    }
    let version = read_u16(h, HINT_VERSION_OFFSET);
    if !(HINT_MIN_VERSION..=HINT_VERSION).contains(&version) {
        return Err(format!("hint format version {version} is not supported"));
    }
    Ok(HintHeader {
        version,
        segment: read_u32(h, HINT_ID_OFFSET),
        segment_len: read_u64(h, HINT_SEGMENT_LEN_OFFSET),
        count: read_u64(h, HINT_COUNT_OFFSET),
    })
}

pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_file_name(7), "0000000007.seg");
        assert_eq!(parse_segment_file_name("0000000007.seg"), Some(7));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u32::MAX)),
            Some(u32::MAX)
        );
        assert_eq!(parse_segment_file_name("7.seg"), None);
        assert_eq!(parse_segment_file_name("0000000007.seg.tmp"), None);
        assert_eq!(parse_segment_file_name("00000000x7.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_hint_file_name(&hint_file_name(12)), Some(12));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42, SegmentKind::Log, &[]);
        let d = decode_header(&h).unwrap();
        assert_eq!((d.id, d.kind, d.data_start), (42, SegmentKind::Log, 32));
        for i in 0..h.len() {
            let mut bad = h.clone();
            bad[i] ^= 0x10;
            // A damaged magic number cannot be told from a foreign file;
            // anything else fails the checksum: damage, not a new format.
            match decode_header(&bad) {
                Err(HeaderError::Unsupported(_)) => assert!(i < 8, "flip at {i}"),
                Err(HeaderError::Damaged(_)) => assert!(i >= 8, "flip at {i}"),
                Ok(_) => panic!("flip at {i} accepted"),
            }
        }
        assert!(matches!(
            decode_header(&h[..10]),
            Err(HeaderError::Damaged(_))
        ));
        let with_version = |version: u16| {
            let mut other = h.clone();
            other[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&version.to_le_bytes());
            let sum = xxh3_64(&other[..CHECKSUM_OFFSET]);
            other[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
            other
        };
        // A later version, with a checksum that matches, is not damage.
        for version in [0, 3, u16::MAX] {
            assert!(matches!(
                decode_header(&with_version(version)),
                Err(HeaderError::Unsupported(reason)) if reason.contains(&format!("version {version} "))
            ));
        }
        // Version 1 is read, and its records are of record format 1.
        assert_eq!(decode_header(&h).unwrap().records, RecordFormat::V2);
        assert_eq!(
            decode_header(&with_version(1)).unwrap().records,
            RecordFormat::V1
        );
    }

    #[test]
    fn compacted_header_carries_what_it_supersedes() {
        let h = encode_header(9, SegmentKind::Compacted, &[3, 5, 7]);
        let d = decode_header(&h).unwrap();
        assert_eq!(d.kind, SegmentKind::Compacted);
        assert_eq!(d.supersedes, vec![3, 5, 7]);
        assert_eq!(d.data_start as usize, h.len());
        for i in 0..h.len() {
            let mut bad = h.clone();
            bad[i] ^= 0x01;
            assert!(decode_header(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode_header(&h[..h.len() - 1]).is_err());
    }

    // Golden bytes: the header of log segment 42, the header of compaction
    // output 9 superseding segments 3, 5 and 7, and the header of the hint
    // file of segment 7 (4096 bytes long, 3 entries). Computed once by
    // running the encoders, then checked by hand against the "Segment
    // file" and "Hint file" layouts of docs/format.md: each field at the
    // offset the layout gives, little-endian, and each checksum over the
    // bytes it says (also checked with the reference `xxhsum -H3`).
    // Changing the format must change these bytes, docs/format.md and the
    // version together.
    #[rustfmt::skip]
    const GOLDEN_LOG_SEGMENT: [u8; 32] = [
        0x4b, 0x56, 0x53, 0x45, 0x47, 0x4d, 0x4e, 0x54, // 0..8   magic "KVSEGMNT"
        0x02, 0x00,                                     // 8..10  version 2
        0x00, 0x00,                                     // 10..12 flags: a log segment
        0x2a, 0x00, 0x00, 0x00,                         // 12..16 segment_id 42
        0x00, 0x00, 0x00, 0x00,                         // 16..20 supersedes_count 0
        0x00, 0x00, 0x00, 0x00,                         // 20..24 reserved
        0x9b, 0x3b, 0x67, 0xb0, 0x00, 0x68, 0xc6, 0xee, // 24..32 checksum of 0..24
    ];

    #[rustfmt::skip]
    const GOLDEN_OUTPUT: [u8; 52] = [
        0x4b, 0x56, 0x53, 0x45, 0x47, 0x4d, 0x4e, 0x54, // 0..8   magic "KVSEGMNT"
        0x02, 0x00,                                     // 8..10  version 2
        0x01, 0x00,                                     // 10..12 flags: bit 0, compaction
        0x09, 0x00, 0x00, 0x00,                         // 12..16 segment_id 9
        0x03, 0x00, 0x00, 0x00,                         // 16..20 supersedes_count 3
        0x00, 0x00, 0x00, 0x00,                         // 20..24 reserved
        0xaf, 0xbd, 0x38, 0x47, 0x66, 0x0a, 0xb8, 0x33, // 24..32 checksum of 0..24
        0x03, 0x00, 0x00, 0x00,                         // 32..36 id 3
        0x05, 0x00, 0x00, 0x00,                         // 36..40 id 5
        0x07, 0x00, 0x00, 0x00,                         // 40..44 id 7
        0x3b, 0x8b, 0x7b, 0x05, 0x15, 0xd1, 0x3a, 0xe4, // 44..52 checksum of the ids
    ];

    #[rustfmt::skip]
    const GOLDEN_HINT_HEADER: [u8; 32] = [
        0x4b, 0x56, 0x48, 0x49, 0x4e, 0x54, 0x53, 0x00, // 0..8   magic "KVHINTS\0"
        0x02, 0x00,                                     // 8..10  version 2
        0x00, 0x00,                                     // 10..12 reserved
        0x07, 0x00, 0x00, 0x00,                         // 12..16 segment_id 7
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 16..24 segment_len 4096
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 24..32 entry_count 3
    ];

    #[test]
    fn the_headers_are_frozen() {
        assert_eq!(encode_header(42, SegmentKind::Log, &[]), GOLDEN_LOG_SEGMENT);
        assert_eq!(
            decode_header(&GOLDEN_LOG_SEGMENT),
            Ok(SegmentHeader {
                id: 42,
                kind: SegmentKind::Log,
                supersedes: Vec::new(),
                data_start: 32,
                records: RecordFormat::V2,
            })
        );
        assert_eq!(
            encode_header(9, SegmentKind::Compacted, &[3, 5, 7]),
            GOLDEN_OUTPUT
        );
        assert_eq!(
            decode_header(&GOLDEN_OUTPUT),
            Ok(SegmentHeader {
                id: 9,
                kind: SegmentKind::Compacted,
                supersedes: vec![3, 5, 7],
                data_start: 52,
                records: RecordFormat::V2,
            })
        );
        for header in [&GOLDEN_LOG_SEGMENT[..], &GOLDEN_OUTPUT[..]] {
            assert_eq!(header[24..32], xxh3_64(&header[..24]).to_le_bytes());
        }
        assert_eq!(
            GOLDEN_OUTPUT[44..],
            xxh3_64(&GOLDEN_OUTPUT[32..44]).to_le_bytes()
        );

        assert_eq!(encode_hint_header(7, 4096, 3), GOLDEN_HINT_HEADER);
        let header = HintHeader {
            version: 2,
            segment: 7,
            segment_len: 4096,
            count: 3,
        };
        assert_eq!(decode_hint_header(&GOLDEN_HINT_HEADER), Ok(header));
        // Version 1 headers are read too; versions around them are not.
        let mut v1 = GOLDEN_HINT_HEADER;
        v1[8] = 1;
        assert_eq!(
            decode_hint_header(&v1),
            Ok(HintHeader {
                version: 1,
                ..header
            })
        );
        for version in [0, 3] {
            let mut other = GOLDEN_HINT_HEADER;
            other[8] = version;
            assert!(decode_hint_header(&other).is_err());
        }
    }
}
