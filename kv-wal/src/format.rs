//! Every on-disk constant of the WAL: file naming, the file header and the
//! frame, with their encoders and decoders. All integers are little-endian.
//! `docs/format.md` at the repository root draws the same layouts.

use std::fmt;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The suffix of a WAL file's name: `NNNNNNNNNNNNNNNNNNNN.wal`.
pub const FILE_SUFFIX: &str = ".wal";
/// The suffix of a WAL file being created. It is renamed to its final name
/// once its header is durable, and deleted by [`Wal::open`](crate::Wal::open)
/// if a crash left it behind.
pub const TEMP_SUFFIX: &str = ".wal.tmp";
/// The number of decimal digits in a file name: enough for any `u64`.
const FILE_NUMBER_DIGITS: usize = 20;
/// The number of the first file of a new log.
pub const FIRST_FILE_NUMBER: u64 = 1;

// File header.
// Format: { magic [u8; 8] | version u8 | reserved [u8; 7] | file_number u64
//         | checksum u64 }
// The checksum is xxh3-64 over the 24 bytes before it.

/// The first eight bytes of every WAL file. The `\0\r\n` tail catches a file
/// mangled by a text-mode copy, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"KVWAL\0\r\n";
/// The file format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const RESERVED_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
const FILE_NUMBER_OFFSET: usize = RESERVED_OFFSET + 7;
const HEADER_CHECKSUM_OFFSET: usize = FILE_NUMBER_OFFSET + size_of::<u64>();
/// The length of the file header; the first frame starts here.
pub const FILE_HEADER_LEN: usize = HEADER_CHECKSUM_OFFSET + size_of::<u64>();

const _: () = assert!(FILE_HEADER_LEN == 32);

// Frame.
// Format: { checksum u64 | len u32 | payload [len] }
// The checksum is xxh3-64 over the len bytes and the payload, so a torn or
// flipped length is caught as well as a damaged payload. 0 < len <= MAX.

const FRAME_CHECKSUM_OFFSET: usize = 0;
const FRAME_LEN_OFFSET: usize = FRAME_CHECKSUM_OFFSET + size_of::<u64>();
/// The length of a frame's header; the payload starts here.
pub const FRAME_HEADER_LEN: usize = FRAME_LEN_OFFSET + size_of::<u32>();

const _: () = assert!(FRAME_HEADER_LEN == 12);

/// The longest payload the format allows, in bytes (256 MiB).
/// [`WalOptions::max_record_len`](crate::WalOptions::max_record_len) can set
/// a lower limit for writing; reading always accepts up to this.
pub const MAX_RECORD_LEN: u32 = 256 << 20;

/// The name of WAL file `number`: its number in 20 zero-padded digits, then
/// [`FILE_SUFFIX`], so names sort in number order.
pub fn file_name(number: u64) -> String {
    format!("{number:0width$}{FILE_SUFFIX}", width = FILE_NUMBER_DIGITS)
}

/// The name of the temporary file that becomes WAL file `number`.
pub(crate) fn temp_file_name(number: u64) -> String {
    format!("{number:0width$}{TEMP_SUFFIX}", width = FILE_NUMBER_DIGITS)
}

/// The number of a WAL file, if `name` is exactly a WAL file's name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    parse_digits(digits)
}

/// Whether `name` is a temporary file left by an interrupted file creation.
pub(crate) fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX)
        .and_then(parse_digits)
        .is_some()
}

fn parse_digits(digits: &str) -> Option<u64> {
    if digits.len() != FILE_NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of WAL file `number`.
pub(crate) fn encode_file_header(number: u64) -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
    header[VERSION_OFFSET] = FORMAT_VERSION;
    header[FILE_NUMBER_OFFSET..HEADER_CHECKSUM_OFFSET].copy_from_slice(&number.to_le_bytes());
    let checksum = xxh3_64(&header[..HEADER_CHECKSUM_OFFSET]);
    header[HEADER_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Why a file header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadHeader {
    /// Too short to hold the magic: nothing says it is a WAL file.
    NoMagic,
    /// The magic is wrong: a foreign file.
    WrongMagic,
    /// The magic is right but the header is cut short.
    Truncated(usize),
    /// A format version this build does not read.
    Version(u8),
    /// The header's checksum does not match.
    Checksum,
    /// The header names another file number than the file name does.
    WrongNumber(u64),
}

/// Checks the first bytes of a WAL file (up to [`FILE_HEADER_LEN`]) against
/// the header WAL file `number` must have.
pub(crate) fn check_file_header(bytes: &[u8], number: u64) -> Result<(), BadHeader> {
    let Some(magic) = bytes.get(MAGIC_OFFSET..VERSION_OFFSET) else {
        return Err(BadHeader::NoMagic);
    };
    if magic != MAGIC {
        return Err(BadHeader::WrongMagic);
    }
    let Some(header) = bytes.get(..FILE_HEADER_LEN) else {
        return Err(BadHeader::Truncated(bytes.len()));
    };
    let stored = read_u64(&header[HEADER_CHECKSUM_OFFSET..]);
    if stored != xxh3_64(&header[..HEADER_CHECKSUM_OFFSET]) {
        return Err(BadHeader::Checksum);
    }
    // The version is checked after the checksum so that a damaged version
    // byte is reported as damage, not as a future format.
    if header[VERSION_OFFSET] != FORMAT_VERSION {
        return Err(BadHeader::Version(header[VERSION_OFFSET]));
    }
    let stored_number = read_u64(&header[FILE_NUMBER_OFFSET..HEADER_CHECKSUM_OFFSET]);
    if stored_number != number {
        return Err(BadHeader::WrongNumber(stored_number));
    }
    Ok(())
}

/// The number of bytes a frame with a `payload_len`-byte payload takes.
pub(crate) const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// Appends the frame of `payload` to `buf`. The caller has checked that the
/// payload is 1 to [`MAX_RECORD_LEN`] bytes.
pub(crate) fn encode_frame(payload: &[u8], buf: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_RECORD_LEN as usize);
    let start = buf.len();
    buf.reserve(frame_len(payload.len()));
    buf.extend_from_slice(&[0u8; FRAME_LEN_OFFSET]);
    // Checked against MAX_RECORD_LEN, which fits a u32.
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    let checksum = xxh3_64(&buf[start + FRAME_LEN_OFFSET..]);
    buf[start..start + FRAME_LEN_OFFSET].copy_from_slice(&checksum.to_le_bytes());
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// Fewer bytes remain than a frame header takes.
    ShortHeader { remaining: u64 },
    /// The length field is zero; every frame carries at least one byte. A
    /// zero-filled region reads as this.
    ZeroLen,
    /// The length field is above [`MAX_RECORD_LEN`].
    TooLong { len: u32 },
    /// The payload would run past the end of the file.
    PastEnd { len: u32, remaining: u64 },
    /// The stored checksum does not match the length and payload.
    Checksum { stored: u64, computed: u64 },
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadFrame::ShortHeader { remaining } => write!(
                f,
                "the file ends {remaining} bytes into a {FRAME_HEADER_LEN}-byte frame header"
            ),
            BadFrame::ZeroLen => write!(f, "the frame length is zero"),
            BadFrame::TooLong { len } => write!(
                f,
                "the frame length {len} exceeds the maximum of {MAX_RECORD_LEN} bytes"
            ),
            BadFrame::PastEnd { len, remaining } => write!(
                f,
                "the frame's {len}-byte payload runs past the end of the file ({remaining} bytes remain)"
            ),
            BadFrame::Checksum { stored, computed } => write!(
                f,
                "the frame checksum does not match (stored {stored:#018x}, computed {computed:#018x})"
            ),
        }
    }
}

/// Splits a frame header into its stored checksum and payload length.
pub(crate) fn parse_frame_header(header: &[u8; FRAME_HEADER_LEN]) -> (u64, u32) {
    let checksum = read_u64(&header[FRAME_CHECKSUM_OFFSET..FRAME_LEN_OFFSET]);
    let len = read_u32(&header[FRAME_LEN_OFFSET..]);
    (checksum, len)
}

/// Checks a length read from disk before anything is allocated for it:
/// `remaining` is the number of bytes after the frame header.
pub(crate) fn check_frame_len(len: u32, remaining: u64) -> Result<(), BadFrame> {
    if len == 0 {
        return Err(BadFrame::ZeroLen);
    }
    if len > MAX_RECORD_LEN {
        return Err(BadFrame::TooLong { len });
    }
    if u64::from(len) > remaining {
        return Err(BadFrame::PastEnd { len, remaining });
    }
    Ok(())
}

/// The checksum of a frame, from its length field and payload.
pub(crate) fn frame_checksum(len_bytes: &[u8], payload: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.digest()
}

/// Decodes the frame at the front of `bytes` and returns its payload.
pub(crate) fn decode_frame(bytes: &[u8]) -> Result<&[u8], BadFrame> {
    let Some((header, rest)) = bytes.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(BadFrame::ShortHeader {
            remaining: bytes.len() as u64,
        });
    };
    let (stored, len) = parse_frame_header(header);
    check_frame_len(len, rest.len() as u64)?;
    let covered = &bytes[FRAME_LEN_OFFSET..FRAME_HEADER_LEN + len as usize];
    let computed = xxh3_64(covered);
    if computed != stored {
        return Err(BadFrame::Checksum { stored, computed });
    }
    Ok(&rest[..len as usize])
}

/// The 4 bytes of a frame header that hold the length.
pub(crate) fn frame_len_bytes(header: &[u8; FRAME_HEADER_LEN]) -> &[u8] {
    &header[FRAME_LEN_OFFSET..]
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(file_name(7), "00000000000000000007.wal");
        assert_eq!(parse_file_name(&file_name(7)), Some(7));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        for bad in [
            "7.wal",
            "0000000000000000000a.wal",
            "00000000000000000007.log",
            "99999999999999999999.wal",
            "00000000000000000007.wal.tmp",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert!(is_temp_file_name(&temp_file_name(3)));
        assert!(!is_temp_file_name(&file_name(3)));
    }

    #[test]
    fn file_header_round_trips_and_rejects_damage() {
        let header = encode_file_header(42);
        assert_eq!(check_file_header(&header, 42), Ok(()));
        assert_eq!(
            check_file_header(&header, 43),
            Err(BadHeader::WrongNumber(42))
        );
        assert_eq!(check_file_header(&header[..5], 42), Err(BadHeader::NoMagic));
        assert_eq!(
            check_file_header(&header[..20], 42),
            Err(BadHeader::Truncated(20))
        );
        assert_eq!(
            check_file_header(b"hello, world, this is text....!!", 42),
            Err(BadHeader::WrongMagic)
        );
        for i in MAGIC.len()..FILE_HEADER_LEN {
            let mut damaged = header;
            damaged[i] ^= 0x10;
            assert_eq!(check_file_header(&damaged, 42), Err(BadHeader::Checksum));
        }
        let mut future = header;
        future[VERSION_OFFSET] = 2;
        let checksum = xxh3_64(&future[..HEADER_CHECKSUM_OFFSET]);
        future[HEADER_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(check_file_header(&future, 42), Err(BadHeader::Version(2)));
    }

    #[test]
    fn frame_round_trips() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"x", &mut buf);
        assert_eq!(buf.len(), frame_len(5) + frame_len(1));
        assert_eq!(decode_frame(&buf), Ok(&b"hello"[..]));
        assert_eq!(decode_frame(&buf[frame_len(5)..]), Ok(&b"x"[..]));
        let header = buf[..FRAME_HEADER_LEN].try_into().unwrap();
        let (stored, len) = parse_frame_header(header);
        assert_eq!(len, 5);
        assert_eq!(stored, frame_checksum(frame_len_bytes(header), b"hello"));
    }

    #[test]
    fn every_damaged_frame_is_rejected() {
        let mut frame = Vec::new();
        encode_frame(b"some payload", &mut frame);
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[i] ^= 1 << bit;
                assert!(decode_frame(&damaged).is_err(), "byte {i} bit {bit}");
            }
        }
        for cut in 0..frame.len() {
            assert!(decode_frame(&frame[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn zeros_are_never_a_frame() {
        assert_eq!(decode_frame(&[0u8; 64]), Err(BadFrame::ZeroLen));
        assert!(matches!(
            decode_frame(&[0u8; 5]),
            Err(BadFrame::ShortHeader { remaining: 5 })
        ));
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut frame = Vec::new();
        encode_frame(b"abc", &mut frame);
        frame[FRAME_LEN_OFFSET..FRAME_HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&frame),
            Err(BadFrame::TooLong { len: u32::MAX })
        );
        frame[FRAME_LEN_OFFSET..FRAME_HEADER_LEN].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            decode_frame(&frame),
            Err(BadFrame::PastEnd {
                len: 4,
                remaining: 3
            })
        );
    }
}
