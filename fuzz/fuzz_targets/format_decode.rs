//! kv-format decoding of arbitrary bytes: `decode`, `decode_header` and
//! `decode_with_limits` never panic and agree with one another, and a
//! record that decodes re-encodes to exactly the bytes it came from.
//!
//! The first input byte chooses the mode: odd means "fix the checksum", so
//! that the fuzzer gets past the checksum and explores what a decoder
//! accepts; even means the bytes are used as they are.

#![no_main]

use kv_format::{
    CHECKSUM_OFFSET, HEADER_LEN, Limits, VERSION_OFFSET, checksum, decode, decode_header,
    decode_with_limits, encode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= HEADER_LEN {
        // Make the stored checksum right for the bytes as far as the header
        // says the record goes (or to the end, when it says more).
        let end = decode_header(&bytes, &Limits::default())
            .map(|h| h.record_len())
            .unwrap_or(bytes.len() as u64)
            .min(bytes.len() as u64) as usize;
        let sum = checksum(&bytes[VERSION_OFFSET..end.max(VERSION_OFFSET)]);
        bytes[CHECKSUM_OFFSET..VERSION_OFFSET].copy_from_slice(&sum.to_le_bytes());
    }
    // A lower value limit, taken from the input, exercises the limit checks.
    let low = Limits::with_max_value_len(usize::from(mode >> 1) * 8);

    let header = decode_header(&bytes, &Limits::default());
    let decoded = decode(&bytes);
    let limited = decode_with_limits(&bytes, &low);
    let _ = decode_header(&bytes, &low);

    if let Ok(d) = decoded {
        // decode succeeds only when the header does, and they agree.
        let h = header.expect("decode accepted a header decode_header rejects");
        assert_eq!(h.record_len(), d.len as u64);
        assert_eq!(h.seq, d.record.seq);
        assert_eq!(h.expires_at, d.record.expires_at);
        assert_eq!(h.kind(), d.record.kind);
        assert!(d.len <= bytes.len() && d.len >= HEADER_LEN);
        assert_eq!(d.record.key.len(), usize::from(h.key_len));
        assert_eq!(d.record.value.len(), h.value_len as usize);
        assert!(!d.record.key.is_empty());
        assert!(!d.record.is_tombstone() || d.record.value.is_empty());

        // Re-encoding gives back exactly the bytes.
        let mut again = Vec::new();
        let len = encode(&d.record, &mut again).expect("a decoded record encodes");
        assert_eq!(len, d.len);
        assert_eq!(&again[..], &bytes[..d.len], "re-encoding changed the bytes");

        // The lower limit accepts it exactly when the value fits.
        match limited {
            Ok(l) => {
                assert!(l.record.value.len() <= low.max_value_len);
                assert_eq!(l, d);
            }
            Err(_) => assert!(d.record.value.len() > low.max_value_len),
        }
    } else {
        // Nothing a default decode rejects is accepted under lower limits.
        assert!(
            limited.is_err(),
            "a lower limit accepted what decode rejects"
        );
    }
});
