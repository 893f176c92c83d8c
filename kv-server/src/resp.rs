//! The request side of RESP: commands as arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), and inline commands (`GET k\r\n`,
//! as typed into telnet), parsed from the front of a connection's buffer.
//!
//! The parser never trusts a length before checking it against
//! [`Limits`], never allocates more than the bytes it has been given, and
//! reports each malformed stream with the message Redis gives for it, so
//! that the connection can answer it and close (as Redis does).

use std::fmt;

/// The most bytes a header line (`*N` or `$N`) may take before its line
/// end, as Redis's `PROTO_INLINE_MAX_SIZE`; inline commands too.
pub const MAX_LINE: usize = 64 << 10;

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (an argument), in bytes.
    pub max_bulk_len: usize,
    /// The most arguments in one command.
    pub max_args: usize,
    /// The longest inline command, in bytes.
    pub max_inline_len: usize,
}

impl Default for Limits {
    /// Bulk strings up to a value's maximum plus room (64 MiB + 1 KiB: the
    /// engine refuses bigger values anyway), 1,048,576 arguments, 64 KiB
    /// inline commands.
    fn default() -> Limits {
        Limits {
            max_bulk_len: (64 << 20) + 1024,
            max_args: 1 << 20,
            max_inline_len: MAX_LINE,
        }
    }
}

/// Bounds for a client that has not authenticated yet (Redis's): 10
/// arguments of 16 KiB at most.
pub const UNAUTHENTICATED: Limits = Limits {
    max_bulk_len: 16 << 10,
    max_args: 10,
    max_inline_len: MAX_LINE,
};

/// A malformed request. The connection answers it with `-ERR` and the
/// message, and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*N` with N not a number, or above the limit.
    InvalidMultibulkLength,
    /// An unauthenticated client sent more arguments than it may.
    UnauthenticatedMultibulkLength,
    /// `$N` with N not a number, negative, or above the limit.
    InvalidBulkLength,
    /// An unauthenticated client sent a longer argument than it may.
    UnauthenticatedBulkLength,
    /// An array element that does not start with `$`.
    ExpectedBulk(u8),
    /// A bulk string not followed by `\r\n`.
    MissingLineEnd,
    /// A header line longer than [`MAX_LINE`] without its line end.
    TooBigCount,
    /// An inline command longer than its limit.
    TooBigInline,
    /// An inline command with a quote that does not close.
    UnbalancedQuotes,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::UnauthenticatedMultibulkLength => {
                f.write_str("unauthenticated multibulk length")
            }
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
            ProtocolError::ExpectedBulk(got) => {
                write!(
                    f,
                    "expected '$', got '{}'",
                    char::from(*got).escape_default()
                )
            }
            ProtocolError::MissingLineEnd => f.write_str("a bulk string must end with CRLF"),
            ProtocolError::TooBigCount => f.write_str("too big count string"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// One parsed command: its arguments, back to back in one buffer that is
/// reused from command to command.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Frame {
    /// An empty frame.
    pub fn new() -> Frame {
        Frame::default()
    }

    /// The number of arguments (the command name included).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no arguments (an empty inline line, `*0`).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Argument `i`, or an empty slice past the end.
    pub fn arg(&self, i: usize) -> &[u8] {
        let Some(&end) = self.ends.get(i) else {
            return &[];
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..end]
    }

    /// Every argument, in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.arg(i))
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    fn push(&mut self, arg: &[u8]) {
        self.data.extend_from_slice(arg);
        self.ends.push(self.data.len());
    }
}

/// Parses one command from the front of `buf` into `frame`. Returns how
/// many bytes of `buf` it took, or `None` if `buf` does not hold a whole
/// command yet (then `frame` is to be ignored, and the same bytes parsed
/// again once more have come). An empty command (an empty inline line,
/// `*0`, `*-1`) is a frame with no arguments: skip it.
///
/// # Errors
///
/// A [`ProtocolError`] for a malformed stream, as soon as the bytes show
/// it (a header line too long is an error before its end arrives).
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    frame: &mut Frame,
) -> Result<Option<usize>, ProtocolError> {
    frame.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, frame),
        Some(_) => parse_inline(buf, limits, frame),
    }
}

/// The line starting at `at` (without its `\r\n`) and where the next
/// starts, or `None` if its end has not come yet.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[at..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && rest[nl - 1] == b'\r' => Ok(Some((&rest[..nl - 1], at + nl + 1))),
        // A bare `\n` ends a header line too, as in Redis (it then fails
        // the number's parse if a `\r` is missing: see `number`).
        Some(nl) => Ok(Some((&rest[..nl], at + nl + 1))),
        None if rest.len() > MAX_LINE => Err(ProtocolError::TooBigCount),
        None => Ok(None),
    }
}

/// A decimal number of at most 19 digits, maybe negative.
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

fn parse_multibulk(
    buf: &[u8],
    limits: &Limits,
    frame: &mut Frame,
) -> Result<Option<usize>, ProtocolError> {
    let Some((header, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    let count = number(header).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if count <= 0 {
        return Ok(Some(at));
    }
    if count as u64 > limits.max_args as u64 {
        return Err(if limits.max_args == UNAUTHENTICATED.max_args {
            ProtocolError::UnauthenticatedMultibulkLength
        } else {
            ProtocolError::InvalidMultibulkLength
        });
    }
    for _ in 0..count {
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first));
        }
        let Some((header, start)) = line(buf, at + 1)? else {
            return Ok(None);
        };
        let len = number(header).ok_or(ProtocolError::InvalidBulkLength)?;
        if len < 0 {
            return Err(ProtocolError::InvalidBulkLength);
        }
        if len as u64 > limits.max_bulk_len as u64 {
            return Err(if limits.max_bulk_len == UNAUTHENTICATED.max_bulk_len {
                ProtocolError::UnauthenticatedBulkLength
            } else {
                ProtocolError::InvalidBulkLength
            });
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingLineEnd);
        }
        frame.push(&buf[start..end]);
        at = end + 2;
    }
    Ok(Some(at))
}

fn parse_inline(
    buf: &[u8],
    limits: &Limits,
    frame: &mut Frame,
) -> Result<Option<usize>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::TooBigInline);
        }
        return Ok(None);
    };
    if nl > limits.max_inline_len {
        return Err(ProtocolError::TooBigInline);
    }
    let text = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    split_args(text, frame)?;
    Ok(Some(nl + 1))
}

/// Splits an inline command into arguments as Redis's `sdssplitargs`
/// does: blanks separate them; `"..."` takes `\n \r \t \b \a \\ \" \xHH`
/// escapes, `'...'` takes `\'`; a closing quote must be followed by a blank
/// or the end.
fn split_args(text: &[u8], frame: &mut Frame) -> Result<(), ProtocolError> {
    let mut i = 0;
    let mut arg = Vec::new();
    loop {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == text.len() {
            return Ok(());
        }
        arg.clear();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = text.get(i).copied();
            if in_double {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if i + 3 < text.len() && text[i + 1] == b'x' => {
                        let hex = |b: u8| (b as char).to_digit(16);
                        match (hex(text[i + 2]), hex(text[i + 3])) {
                            (Some(h), Some(l)) => {
                                arg.push((h * 16 + l) as u8);
                                i += 3;
                            }
                            _ => arg.push(b'\\'),
                        }
                    }
                    Some(b'\\') if i + 1 < text.len() => {
                        i += 1;
                        arg.push(match text[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if text.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else if in_single {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if text.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    Some(b'\'') => {
                        if text.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        frame.push(&arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut frame = Frame::new();
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(used) = parse(&input[at..], &Limits::default(), &mut frame)? {
            at += used;
            if !frame.is_empty() {
                out.push(frame.args().map(<[u8]>::to_vec).collect());
            }
        }
        Ok(out)
    }

    fn strs(cmds: &[&[&str]]) -> Vec<Vec<Vec<u8>>> {
        cmds.iter()
            .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
            .collect()
    }

    #[test]
    fn multibulk_and_inline_commands_parse_and_pipeline() {
        let input =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET a 'b c'\r\n*0\r\n\r\n*1\r\n$0\r\n\r\nPING\n";
        assert_eq!(
            parse_all(input).unwrap(),
            strs(&[&["GET", "k"], &["SET", "a", "b c"], &[""], &["PING"]])
        );
        assert_eq!(
            parse_all(b"SET k \"a\\x41\\n\\\"\"\r\n").unwrap(),
            vec![vec![b"SET".to_vec(), b"k".to_vec(), b"aA\n\"".to_vec()]]
        );
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete_not_an_error() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut frame = Frame::new();
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut], &Limits::default(), &mut frame),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse(input, &Limits::default(), &mut frame),
            Ok(Some(input.len()))
        );
        assert_eq!(frame.arg(2), b"hello");
    }

    #[test]
    fn malformed_streams_are_the_errors_redis_gives() {
        let limits = Limits::default();
        let mut frame = Frame::new();
        let mut err = |input: &[u8], limits: &Limits| parse(input, limits, &mut frame).unwrap_err();
        assert_eq!(
            err(b"*x\r\n", &limits),
            ProtocolError::InvalidMultibulkLength
        );
        assert_eq!(
            err(b"*99999999999999999999\r\n", &limits),
            ProtocolError::InvalidMultibulkLength
        );
        assert_eq!(
            err(b"*2000000\r\n", &limits),
            ProtocolError::InvalidMultibulkLength
        );
        assert_eq!(
            err(b"*1\r\n$-5\r\n", &limits),
            ProtocolError::InvalidBulkLength
        );
        assert_eq!(
            err(b"*1\r\n$9999999999\r\n", &limits),
            ProtocolError::InvalidBulkLength
        );
        assert_eq!(
            err(b"*1\r\n:1\r\n", &limits),
            ProtocolError::ExpectedBulk(b':')
        );
        assert_eq!(
            err(b"*1\r\n$1\r\nab\r\n", &limits),
            ProtocolError::MissingLineEnd
        );
        assert_eq!(
            err(&[b'*'; MAX_LINE + 2], &limits),
            ProtocolError::TooBigCount
        );
        assert_eq!(
            err(&[b'a'; MAX_LINE + 2], &limits),
            ProtocolError::TooBigInline
        );
        assert_eq!(
            err(b"GET \"k\r\n", &limits),
            ProtocolError::UnbalancedQuotes
        );
        assert_eq!(
            err(b"GET 'k'x\r\n", &limits),
            ProtocolError::UnbalancedQuotes
        );
        assert_eq!(
            err(b"*11\r\n", &UNAUTHENTICATED),
            ProtocolError::UnauthenticatedMultibulkLength
        );
        assert_eq!(
            err(b"*1\r\n$20000\r\n", &UNAUTHENTICATED),
            ProtocolError::UnauthenticatedBulkLength
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'\n').to_string(),
            "Protocol error: expected '$', got '\\n'"
        );
    }

    #[test]
    fn random_bytes_never_panic_and_never_take_more_than_given() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"*$\r\n0123456789-abc \"'\\x";
        let mut frame = Frame::new();
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 5 == 0 {
                        r as u8
                    } else {
                        alphabet[(r as usize >> 8) % alphabet.len()]
                    }
                })
                .collect();
            if let Ok(Some(used)) = parse(&input, &Limits::default(), &mut frame) {
                assert!(used <= input.len() && used > 0, "{input:?}");
            }
        }
    }
}
