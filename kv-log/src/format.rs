//! Segment file naming and every on-disk constant of a segment file.

use xxhash_rust::xxh3::xxh3_64;

// Format: { magic [u8; 8] | version u16 | reserved u16 | segment_id u32
//         | reserved u64 | checksum u64 }, little-endian, 32 bytes.
// The checksum is xxh3-64 over the 24 bytes before it. Records follow.

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KVSEGMNT";
/// The segment file format version this build writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + SEGMENT_MAGIC.len();
const RESERVED_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
const ID_OFFSET: usize = RESERVED_OFFSET + size_of::<u16>();
const RESERVED2_OFFSET: usize = ID_OFFSET + size_of::<u32>();
const CHECKSUM_OFFSET: usize = RESERVED2_OFFSET + size_of::<u64>();
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = CHECKSUM_OFFSET + size_of::<u64>();

/// The file name extension of segment files.
pub const SEGMENT_EXTENSION: &str = "seg";
/// Suffix of a segment being created; such files are removed at open.
pub(crate) const TEMP_SUFFIX: &str = ".seg.tmp";

/// The default size at which the active segment is sealed: 256 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
/// The largest segment size: offsets and lengths in the index are u32, so
/// every record must start and end below 4 GiB.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64;

/// The file name of segment `id`: ten decimal digits and `.seg`, so that
/// names sort in id order.
pub fn segment_file_name(id: u32) -> String {
    format!("{id:010}.{SEGMENT_EXTENSION}")
}

/// Parses a segment file name back into its id.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header(id: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_OFFSET..RESERVED_OFFSET].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[ID_OFFSET..RESERVED2_OFFSET].copy_from_slice(&id.to_le_bytes());
    let sum = xxh3_64(&h[..CHECKSUM_OFFSET]);
    h[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Checks a segment header and returns the id it names.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<u32, String> {
    let Some(h) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!(
            "the file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    if h[MAGIC_OFFSET..VERSION_OFFSET] != SEGMENT_MAGIC {
        return Err("the magic bytes are wrong".into());
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&h[CHECKSUM_OFFSET..]);
    if u64::from_le_bytes(sum) != xxh3_64(&h[..CHECKSUM_OFFSET]) {
        return Err("the header checksum does not match".into());
    }
    let version = u16::from_le_bytes([h[VERSION_OFFSET], h[VERSION_OFFSET + 1]]);
    if version != SEGMENT_VERSION {
        return Err(format!(
            "segment format version {version} is not supported (this build reads version {SEGMENT_VERSION})"
        ));
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&h[ID_OFFSET..RESERVED2_OFFSET]);
    Ok(u32::from_le_bytes(id))
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
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h), Ok(42));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(decode_header(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode_header(&h[..10]).is_err());
    }
}
