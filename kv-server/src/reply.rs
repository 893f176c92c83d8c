//! The reply side of RESP: values written into a connection's output
//! buffer, in RESP2 or RESP3 (`HELLO 3`), which differ here only in how a
//! null, a map and a double are written.

use std::io::Write as _;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// A connection's output: replies appended, flushed once per batch of
/// commands read.
#[derive(Debug, Default)]
pub struct Out {
    /// The bytes to send.
    pub buf: Vec<u8>,
    /// How nulls, maps and doubles are written.
    pub protocol: Protocol,
}

impl Out {
    /// `+OK`.
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string (`+...`): `text` must hold no line end.
    pub fn simple(&mut self, text: &str) {
        self.buf.push(b'+');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error (`-CODE message`); `text` starts with its code (`ERR`,
    /// `WRONGTYPE`, `NOAUTH`, ...). Line ends in it are made spaces.
    pub fn error(&mut self, text: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An integer (`:N`).
    pub fn int(&mut self, n: i64) {
        let _ = write!(self.buf, ":{n}\r\n");
    }

    /// A bulk string (`$N\r\n...`).
    pub fn bulk(&mut self, bytes: &[u8]) {
        let _ = write!(self.buf, "${}\r\n", bytes.len());
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string, or a null.
    pub fn bulk_or_null(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// A null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// An array's header: `len` elements follow.
    pub fn array(&mut self, len: usize) {
        let _ = write!(self.buf, "*{len}\r\n");
    }

    /// A map's header: `len` key-value pairs follow (in RESP2, an array of
    /// `2 × len` elements).
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.array(len * 2),
            Protocol::Resp3 => {
                let _ = write!(self.buf, "%{len}\r\n");
            }
        }
    }

    /// A double, written as a bulk string in RESP2 (as Redis does for
    /// `INCRBYFLOAT`, both protocols: see the caller).
    pub fn double_text(&mut self, text: &str) {
        self.bulk(text.as_bytes());
    }

    /// A verbatim text (`INFO`): a bulk string in RESP2, `=N\r\ntxt:...`
    /// in RESP3.
    pub fn verbatim(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                let _ = write!(self.buf, "={}\r\ntxt:", text.len() + 4);
                self.buf.extend_from_slice(text.as_bytes());
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_written_as_each_protocol_says() {
        let mut out = Out::default();
        out.ok();
        out.int(-3);
        out.bulk(b"ab");
        out.null();
        out.map(1);
        out.error("ERR bad\r\nthing");
        assert_eq!(
            out.buf,
            b"+OK\r\n:-3\r\n$2\r\nab\r\n$-1\r\n*2\r\n-ERR bad  thing\r\n"
        );
        let mut out = Out {
            protocol: Protocol::Resp3,
            ..Out::default()
        };
        out.null();
        out.map(2);
        out.verbatim("x");
        assert_eq!(out.buf, b"_\r\n%2\r\n=5\r\ntxt:x\r\n");
    }
}
