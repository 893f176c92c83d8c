//! The first and last lines of an export, which let `import` tell a whole
//! export from one cut short: a header that says the file is an export,
//! and a trailer with the number of records and an xxh3 checksum of their
//! lines. A file without the header (one written by hand or by another
//! tool) is imported as it is; one with it must end with a trailer that
//! matches.
//!
//! ```text
//! jsonl: {"kv_export":1}                          tsv: #kv-export 1
//!        ...records...                                 ...records...
//!        {"kv_export_end":{"records":N,"xxh3":"0123456789abcdef"}}
//!                                                      #kv-export-end N 0123456789abcdef
//! ```
//!
//! The checksum covers each record line's text (without its line end,
//! `\r\n` or `\n`) followed by one `\n`, in order. An export that left
//! out damaged records (`kv export --skip-damaged`) says how many in its
//! trailer, `"damaged":M` after `xxh3` (TSV: a third field `damaged=M`),
//! and `import` of it warns that the file is short of its database.

use xxhash_rust::xxh3::Xxh3;

use crate::transfer::Format;

const JSONL_HEADER: &str = r#"{"kv_export":1}"#;
const TSV_HEADER: &str = "#kv-export 1";
const JSONL_TRAILER_START: &str = r#"{"kv_export_end":"#;
const TSV_TRAILER_START: &str = "#kv-export-end ";

/// The header line of an export in `format`, with its `\n`.
pub(crate) fn header(format: Format) -> String {
    match format {
        Format::Jsonl => format!("{JSONL_HEADER}\n"),
        Format::Tsv => format!("{TSV_HEADER}\n"),
    }
}

/// The count and checksum of the record lines so far.
pub(crate) struct Digest {
    records: u64,
    hash: Xxh3,
    /// Records of the database left out because they were damaged.
    damaged: u64,
}

impl Digest {
    pub(crate) fn new() -> Digest {
        Digest {
            records: 0,
            hash: Xxh3::new(),
            damaged: 0,
        }
    }

    /// Counts a record of the database left out because it was damaged.
    pub(crate) fn skip_damaged(&mut self) {
        self.damaged += 1;
    }

    /// The record lines so far.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The records left out because they were damaged.
    pub(crate) fn damaged(&self) -> u64 {
        self.damaged
    }

    /// Adds one record line, without its line end.
    pub(crate) fn add(&mut self, line: &[u8]) {
        self.hash.update(line);
        self.hash.update(b"\n");
        self.records += 1;
    }

    /// The trailer line for the lines so far, with its `\n`.
    pub(crate) fn trailer(&self, format: Format) -> String {
        let (n, sum, damaged) = (self.records, self.hash.digest(), self.damaged);
        match (format, damaged) {
            (Format::Jsonl, 0) => {
                format!("{JSONL_TRAILER_START}{{\"records\":{n},\"xxh3\":\"{sum:016x}\"}}}}\n")
            }
            (Format::Jsonl, _) => format!(
                "{JSONL_TRAILER_START}{{\"records\":{n},\"xxh3\":\"{sum:016x}\",\"damaged\":{damaged}}}}}\n"
            ),
            (Format::Tsv, 0) => format!("{TSV_TRAILER_START}{n} {sum:016x}\n"),
            (Format::Tsv, _) => format!("{TSV_TRAILER_START}{n} {sum:016x} damaged={damaged}\n"),
        }
    }
}

/// What a line of an import is.
enum Line {
    Header,
    Trailer {
        records: u64,
        xxh3: u64,
        damaged: u64,
    },
    Record,
}

/// Tells a header or trailer line from a record line. A record line never
/// looks like either: a JSON record's first field is `key`, and a TSV
/// record has a tab, which neither has.
fn classify(text: &[u8], format: Format) -> Result<Line, String> {
    let bad = || "the export's trailer line is malformed".to_string();
    match format {
        Format::Jsonl if text == JSONL_HEADER.as_bytes() => Ok(Line::Header),
        Format::Tsv if text == TSV_HEADER.as_bytes() => Ok(Line::Header),
        Format::Jsonl if text.starts_with(JSONL_TRAILER_START.as_bytes()) => {
            let value: serde_json::Value = serde_json::from_slice(text).map_err(|_| bad())?;
            let end = value.get("kv_export_end").ok_or_else(bad)?;
            let records = end
                .get("records")
                .and_then(|r| r.as_u64())
                .ok_or_else(bad)?;
            let xxh3 = end
                .get("xxh3")
                .and_then(|x| x.as_str())
                .and_then(|x| u64::from_str_radix(x, 16).ok())
                .ok_or_else(bad)?;
            let damaged = match end.get("damaged") {
                None => 0,
                Some(d) => d.as_u64().ok_or_else(bad)?,
            };
            Ok(Line::Trailer {
                records,
                xxh3,
                damaged,
            })
        }
        Format::Tsv if text.starts_with(TSV_TRAILER_START.as_bytes()) && !text.contains(&b'\t') => {
            let rest = std::str::from_utf8(&text[TSV_TRAILER_START.len()..]).map_err(|_| bad())?;
            let mut fields = rest.split(' ');
            let records = fields.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let xxh3 = fields
                .next()
                .and_then(|x| u64::from_str_radix(x, 16).ok())
                .ok_or_else(bad)?;
            let damaged = match fields.next() {
                None => 0,
                Some(field) => field
                    .strip_prefix("damaged=")
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(bad)?,
            };
            if fields.next().is_some() {
                return Err(bad());
            }
            Ok(Line::Trailer {
                records,
                xxh3,
                damaged,
            })
        }
        _ => Ok(Line::Record),
    }
}

/// Follows the framing of an import, line by line.
pub(crate) struct Framing {
    format: Format,
    /// Whether the first line was the header.
    framed: bool,
    /// Whether any line has been seen.
    started: bool,
    /// Whether the trailer has been seen (and matched).
    ended: bool,
    digest: Digest,
}

impl Framing {
    pub(crate) fn new(format: Format) -> Framing {
        Framing {
            format,
            framed: false,
            started: false,
            ended: false,
            digest: Digest::new(),
        }
    }

    /// Takes the next non-empty line (without its line end): whether it is
    /// a record to import, or an error.
    pub(crate) fn line(&mut self, text: &[u8]) -> Result<bool, String> {
        let first = !self.started;
        self.started = true;
        if self.ended {
            return Err("a line comes after the export's trailer".into());
        }
        match classify(text, self.format)? {
            Line::Header if first => {
                self.framed = true;
                Ok(false)
            }
            Line::Header => Err("an export header that is not the first line".into()),
            Line::Trailer { .. } if !self.framed => {
                Err("an export trailer, but the file does not start with an export header".into())
            }
            Line::Trailer {
                records,
                xxh3,
                damaged,
            } => {
                let sum = self.digest.hash.digest();
                if records != self.digest.records {
                    return Err(format!(
                        "the export's trailer counts {records} records, but {} came before it",
                        self.digest.records
                    ));
                }
                if xxh3 != sum {
                    return Err(format!(
                        "the export's checksum does not match: the trailer says {xxh3:016x}, \
                         the records give {sum:016x} (a record was changed)"
                    ));
                }
                self.ended = true;
                self.digest.damaged = damaged;
                Ok(false)
            }
            Line::Record => {
                if self.framed {
                    self.digest.add(text);
                }
                Ok(true)
            }
        }
    }

    /// At the end of the input: an export that has its header must have
    /// had its trailer. Returns how many damaged records the export says
    /// it left out of its database.
    pub(crate) fn finish(&self) -> Result<u64, String> {
        if self.framed && !self.ended {
            return Err(format!(
                "the export ends without its trailer after {} records: it was cut short",
                self.digest.records
            ));
        }
        Ok(self.digest.damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&[u8]], format: Format) -> Result<u64, String> {
        let mut framing = Framing::new(format);
        let mut records = 0;
        for line in lines {
            records += u64::from(framing.line(line)?);
        }
        framing.finish().map(|_| records)
    }

    #[test]
    fn a_whole_export_passes_and_every_cut_or_change_is_refused() {
        for format in [Format::Jsonl, Format::Tsv] {
            let records: Vec<&[u8]> = match format {
                Format::Jsonl => vec![br#"{"key":"a","value":"1"}"#, br#"{"key":"b","value":"2"}"#],
                Format::Tsv => vec![b"a\t1", b"b\t2"],
            };
            let mut digest = Digest::new();
            for r in &records {
                digest.add(r);
            }
            let header = header(format);
            let trailer = digest.trailer(format);
            let (header, trailer) = (header.trim_end().as_bytes(), trailer.trim_end().as_bytes());
            let whole: Vec<&[u8]> = [&[header][..], &records, &[trailer]].concat();
            assert_eq!(run(&whole, format), Ok(2));
            // Cut anywhere before the trailer: refused.
            for cut in 1..whole.len() {
                let err = run(&whole[..cut], format).unwrap_err();
                assert!(err.contains("cut short"), "{err}");
            }
            // A record changed, dropped or added: refused.
            let changed: Vec<&[u8]> = match format {
                Format::Jsonl => vec![br#"{"key":"a","value":"9"}"#],
                Format::Tsv => vec![b"a\t9"],
            };
            let tampered: Vec<&[u8]> =
                [&[header][..], &changed, &records[1..], &[trailer]].concat();
            assert!(run(&tampered, format).unwrap_err().contains("checksum"));
            let dropped: Vec<&[u8]> = [&[header][..], &records[1..], &[trailer]].concat();
            assert!(run(&dropped, format).unwrap_err().contains("counts 2"));
            let after: Vec<&[u8]> = [&whole[..], &records[..1]].concat();
            assert!(run(&after, format).unwrap_err().contains("after"));
            // Without the header, records import as they are.
            assert_eq!(run(&records, format), Ok(2));
            let no_header: Vec<&[u8]> = [&records[..], &[trailer]].concat();
            assert!(run(&no_header, format).is_err());
            // A trailer that counts damaged records left out: whole, and
            // the count comes back.
            digest.skip_damaged();
            digest.skip_damaged();
            let trailer = digest.trailer(format);
            let whole: Vec<&[u8]> =
                [&[header][..], &records, &[trailer.trim_end().as_bytes()]].concat();
            let mut framing = Framing::new(format);
            for line in &whole {
                framing.line(line).unwrap();
            }
            assert_eq!(framing.finish(), Ok(2), "{trailer}");
        }
    }
}
