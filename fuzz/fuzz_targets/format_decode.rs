//! kv-format decoding of arbitrary bytes, in both record layouts:
//! `decode`, `decode_header` and `decode_with_limits` never panic and
//! agree with one another, and a record that decodes re-encodes to exactly
//! the bytes it came from (one record has one encoding).
//!
//! The first input byte chooses the mode: bit 0 set means "fix the
//! checksum", so that the fuzzer gets past the checksum and explores what a
//! decoder accepts (clear: the bytes are used as they are); bit 1 chooses
//! the layout (set: version 1, clear: version 2, the current one); the
//! other bits give a lower value limit.

#![no_main]

use kv_format::{Limits, RecordFormat};
use libfuzzer_sys::fuzz_target;
use xxhash_rust::xxh3::xxh3_64;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let format = if mode & 2 == 2 {
        RecordFormat::V1
    } else {
        RecordFormat::V2
    };
    let sum_len = format.checksum_len();
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= sum_len {
        // Make the stored checksum right for the bytes as far as the header
        // says the record goes (or to the end, when it says more).
        let end = format
            .decode_header(&bytes, &Limits::default())
            .map(|h| h.record_len())
            .unwrap_or(bytes.len() as u64)
            .min(bytes.len() as u64) as usize;
        let sum = xxh3_64(&bytes[sum_len..end.max(sum_len)]).to_le_bytes();
        bytes[..sum_len].copy_from_slice(&sum[..sum_len]);
    }
    // A lower value limit, taken from the input, exercises the limit checks.
    let low = Limits::with_max_value_len(usize::from(mode >> 2) * 8);

    let header = format.decode_header(&bytes, &Limits::default());
    let decoded = format.decode(&bytes);
    let limited = format.decode_with_limits(&bytes, &low);
    let _ = format.decode_header(&bytes, &low);

    if let Ok(d) = decoded {
        // decode succeeds only when the header does, and they agree.
        let h = header.expect("decode accepted a header decode_header rejects");
        assert_eq!(h.record_len(), d.len as u64);
        assert_eq!(h.seq, d.record.seq);
        assert_eq!(h.expires_at, d.record.expires_at);
        assert_eq!(h.kind(), d.record.kind);
        assert!(d.len <= bytes.len() && d.len >= usize::from(h.header_len));
        assert_eq!(d.record.key.len(), usize::from(h.key_len));
        assert_eq!(d.record.value.len(), h.value_len as usize);
        assert!(!d.record.key.is_empty());
        assert!(!d.record.is_tombstone() || d.record.value.is_empty());

        // Re-encoding gives back exactly the bytes.
        let mut again = Vec::new();
        let len = format
            .encode(&d.record, &mut again)
            .expect("a decoded record encodes");
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
