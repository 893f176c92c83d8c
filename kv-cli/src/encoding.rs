//! How keys and values are written as text: on the command line, in
//! `import`/`export` files, and on a terminal.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::ValueEnum;

/// How binary keys and values are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Encoding {
    /// The bytes as UTF-8 text: non-UTF-8 data cannot be exported in it.
    #[default]
    Utf8,
    /// Two lowercase hexadecimal digits per byte (either case on input).
    Hex,
    /// Standard base64 with padding (RFC 4648).
    Base64,
}

impl Encoding {
    /// The name used on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }

    /// Decodes text in this encoding into bytes.
    pub(crate) fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Hex => decode_hex(text),
            Encoding::Base64 => BASE64
                .decode(text)
                .map_err(|e| format!("not valid base64: {e}")),
        }
    }

    /// Encodes bytes as text in this encoding; `Err` only for non-UTF-8
    /// bytes in [`Encoding::Utf8`].
    pub(crate) fn encode(self, bytes: &[u8]) -> Result<String, std::str::Utf8Error> {
        match self {
            Encoding::Utf8 => std::str::from_utf8(bytes).map(str::to_owned),
            Encoding::Hex => Ok(encode_hex(bytes)),
            Encoding::Base64 => Ok(BASE64.encode(bytes)),
        }
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "not valid hex: {} digits, an odd number",
            digits.len()
        ));
    }
    let nibble = |at: usize| -> Result<u8, String> {
        let c = digits[at];
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!(
                "not valid hex: {:?} at position {at}",
                char::from(c)
            )),
        }
    };
    (0..digits.len())
        .step_by(2)
        .map(|at| Ok(nibble(at)? << 4 | nibble(at + 1)?))
        .collect()
}

/// `bytes` made safe to show on a terminal: printable UTF-8 as it is, a
/// backslash doubled, control characters as `\n`, `\t`, `\r` or `\u{..}`,
/// and bytes that are not UTF-8 as `\xNN`. Nothing a value holds can move
/// the cursor or change the terminal's state.
pub(crate) fn escape_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Escapes a UTF-8 field for tab-separated text: backslash, tab, newline and
/// carriage return become `\\`, `\t`, `\n` and `\r`, so a field never holds
/// a separator (the text format of PostgreSQL's COPY does the same).
pub(crate) fn tsv_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`tsv_escape`]; any other backslash sequence is an error.
pub(crate) fn tsv_unescape(text: &str) -> Result<String, String> {
    if !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{other} (only \\\\, \\t, \\n and \\r are)"
                ));
            }
            None => return Err("a lone backslash at the end of a field".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        for e in [Encoding::Hex, Encoding::Base64] {
            let text = e.encode(&all).unwrap();
            assert_eq!(e.decode(&text).unwrap(), all, "{e:?}");
        }
        assert_eq!(Encoding::Hex.encode(b"\x00\xffA").unwrap(), "00ff41");
        assert_eq!(Encoding::Hex.decode("00FFa0").unwrap(), b"\x00\xff\xa0");
        assert_eq!(Encoding::Base64.encode(b"hi").unwrap(), "aGk=");
        assert_eq!(Encoding::Utf8.decode("héllo").unwrap(), "héllo".as_bytes());
        assert!(Encoding::Utf8.encode(b"\xff").is_err());
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        assert!(Encoding::Hex.decode("abc").unwrap_err().contains("odd"));
        assert!(Encoding::Hex.decode("zz").unwrap_err().contains("'z'"));
        assert!(Encoding::Base64.decode("***").is_err());
    }

    #[test]
    fn terminal_escaping_leaves_nothing_that_controls_a_terminal() {
        assert_eq!(escape_for_terminal(b"plain text"), "plain text");
        assert_eq!(escape_for_terminal("héllo ✓".as_bytes()), "héllo ✓");
        assert_eq!(
            escape_for_terminal(b"a\nb\tc\\d\x1b[2J\x7f\xff\xfe"),
            "a\\nb\\tc\\\\d\\u{1b}[2J\\u{7f}\\xff\\xfe"
        );
        let all: Vec<u8> = (0..=255).collect();
        let shown = escape_for_terminal(&all);
        assert!(!shown.chars().any(char::is_control), "{shown}");
    }

    #[test]
    fn tsv_escaping_round_trips_and_removes_separators() {
        for s in ["", "plain", "a\tb\nc\rd\\e", "\\t literally", "\\", "é\t✓"] {
            let escaped = tsv_escape(s);
            assert!(!escaped.contains(['\t', '\n', '\r']), "{escaped:?}");
            assert_eq!(tsv_unescape(&escaped).unwrap(), s);
        }
        assert!(tsv_unescape("bad \\q").is_err());
        assert!(tsv_unescape("end \\").is_err());
    }
}
