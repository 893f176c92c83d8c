//! kv-server's request parser on arbitrary bytes, under the normal and the
//! unauthenticated limits: it never panics, every command it returns took
//! at least one byte and no more than it was given, and parsing a stream
//! cut anywhere gives the same commands as parsing it whole (a cut only
//! makes the parser wait for more). The commands it returns, written back
//! as RESP arrays, parse to the same arguments.
//!
//! The first input byte chooses the limits (bit 0: unauthenticated) and
//! where the stream is cut (the rest of the byte, as a share of it).

#![no_main]

use kv_server::resp::{Frame, Limits, UNAUTHENTICATED, parse};
use libfuzzer_sys::fuzz_target;

/// Every command of `input` (up to its first error), as argument lists,
/// and whether it ended in an error.
fn commands(input: &[u8], limits: &Limits) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut frame = Frame::new();
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match parse(&input[at..], limits, &mut frame) {
            Ok(None) => return (out, false),
            Ok(Some(used)) => {
                assert!(used > 0 && at + used <= input.len());
                at += used;
                if !frame.is_empty() {
                    out.push(frame.args().map(<[u8]>::to_vec).collect());
                }
            }
            Err(_) => return (out, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let limits = if mode & 1 == 1 {
        UNAUTHENTICATED
    } else {
        Limits::default()
    };
    let (whole, failed) = commands(input, &limits);
    // Fed in two reads, cut anywhere: the commands of the first part are a
    // prefix of the whole's.
    let cut = input.len() * usize::from(mode >> 1) / 128;
    let (first, _) = commands(&input[..cut.min(input.len())], &limits);
    assert!(
        first.len() <= whole.len() || failed,
        "a cut stream gave more commands"
    );
    if !failed {
        assert_eq!(&whole[..first.len()], &first[..], "a cut changed a command");
    }
    // Written back as arrays, the commands parse to themselves.
    let mut encoded = Vec::new();
    for args in &whole {
        encoded.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            encoded.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            encoded.extend_from_slice(a);
            encoded.extend_from_slice(b"\r\n");
        }
    }
    let (again, failed) = commands(&encoded, &Limits::default());
    assert!(!failed);
    assert_eq!(again, whole);
});
