//! `import` and `export`: JSON lines or tab-separated text, in batches,
//! with a progress bar on a terminal.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kv_engine::{Db, Error, WriteBatch};

use crate::encoding::{Encoding, tsv_escape, tsv_unescape};
use crate::framing::{self, Digest, Framing};
use crate::{Output, UsageError, arg_bytes};

/// The file formats of `import` and `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line: {"key": "...", "value": "..."}.
    #[default]
    Jsonl,
    /// One KEY<TAB>VALUE line per record.
    Tsv,
}

/// Arguments of `kv import`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ImportArgs {
    /// The file to read; stdin if absent or '-'.
    pub(crate) file: Option<PathBuf>,
    /// The file's format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// How keys and values are written in the file.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) encoding: Encoding,
    /// Records per atomic batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch_size: u32,
}

impl ImportArgs {
    pub(crate) fn reads_stdin(&self) -> bool {
        self.file.as_deref().is_none_or(|f| f == Path::new("-"))
    }
}

/// Arguments of `kv export`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ExportArgs {
    /// The file to write; stdout if absent or '-'. An existing file is
    /// refused unless --force.
    pub(crate) file: Option<PathBuf>,
    /// The file's format.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// How keys and values are written in the file.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) encoding: Encoding,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Only keys that start with PREFIX (given in --encoding). The index
    /// is a hash table, not ordered, so this reads every key.
    #[arg(long, short)]
    pub(crate) prefix: Option<OsString>,
    /// Leave out records that fail their checks, name each on stderr, and
    /// go on; the trailer counts them, and the exit code is 4. If the
    /// database does not open for its damage, read every file around it
    /// instead, as `kv salvage` does.
    #[arg(long)]
    pub(crate) skip_damaged: bool,
}

/// Where an export's records come from.
pub(crate) enum Source<'a> {
    /// An open database.
    Db(&'a Db),
    /// What `kv_engine::Salvage` read of a damaged one.
    Salvage(&'a kv_engine::Salvage),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExportSummary {
    pub(crate) records: u64,
    /// Damaged places left out (`--skip-damaged`).
    pub(crate) damaged: u64,
}

/// A batch is written before it would pass this many bytes of keys and
/// values, whatever its record count: with values of at most 64 MiB, a
/// batch stays below the engine's limit of 256 MiB.
const BATCH_BYTES: usize = 128 << 20;

/// What an import did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ImportSummary {
    pub(crate) records: u64,
    /// Damaged records of its database that the export says it left out
    /// (`export --skip-damaged`).
    pub(crate) damaged: u64,
}

/// A spinner on a terminal (stderr), hidden otherwise.
pub(crate) fn spinner(message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A progress bar of `len` units on a terminal (stderr), hidden otherwise.
fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One record waiting in the batch, with the line it came from.
struct Pending {
    line: u64,
    key_len: usize,
    value_len: usize,
}

/// Reads records from the file (or stdin) and writes them in batches.
pub(crate) fn import(db: &Db, args: &ImportArgs) -> anyhow::Result<ImportSummary> {
    let file = args.file.as_deref().filter(|f| *f != Path::new("-"));
    let (mut input, progress): (Box<dyn BufRead>, ProgressBar) = if let Some(path) = file {
        // An export cut short or changed is refused before anything of it
        // is written (from stdin, only at its end).
        check_framing(path, args.format)?;
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let progress = bar(
            len,
            "importing [{bar:40}] {bytes}/{total_bytes} {per_sec} eta {eta}",
        );
        (Box::new(BufReader::with_capacity(1 << 20, file)), progress)
    } else {
        let progress = spinner("importing");
        (Box::new(std::io::stdin().lock()), progress)
    };
    let mut importer = Importer {
        db,
        batch: WriteBatch::new(),
        pending: Vec::new(),
        batch_bytes: 0,
        batch_size: args.batch_size as usize,
        written: 0,
    };
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut framing = Framing::new(args.format);
    // On an error: where the import stopped, and why.
    let result = (|| -> Result<u64, (String, anyhow::Error)> {
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .context("reading the input")
                .map_err(|e| (format!("after line {number}"), e))?;
            if n == 0 {
                break;
            }
            number += 1;
            progress.inc(n as u64);
            let text = trim_line_end(&line);
            if text.is_empty() {
                continue;
            }
            let is_record = framing
                .line(text)
                .map_err(|e| (format!("at line {number}"), anyhow!(e)))?;
            if !is_record {
                continue;
            }
            let (key, value, ttl_ms) = parse_record(text, args.format, args.encoding)
                .map_err(|e| (format!("at line {number}"), anyhow!(e)))?;
            importer.add(number, &key, &value, ttl_ms)?;
        }
        importer.flush()?;
        framing
            .finish()
            .map_err(|e| (format!("at the end, line {number}"), anyhow!(e)))
    })();
    progress.finish_and_clear();
    let damaged = match result {
        Ok(damaged) => damaged,
        Err((at, cause)) => {
            let first_unwritten = importer.pending.first().map_or(number, |p| p.line);
            return Err(cause.context(format!(
                "import stopped {at} ({} records written, none from line {first_unwritten} on)",
                importer.written
            )));
        }
    };
    Ok(ImportSummary {
        records: importer.written,
        damaged,
    })
}

/// Reads the file at `path` through once, checking its export header and
/// trailer (`framing.rs`) without parsing its records. Returns the damaged
/// records the export says it left out.
fn check_framing(path: &Path, format: Format) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut framing = Framing::new(format);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?
            == 0
        {
            break;
        }
        number += 1;
        let text = trim_line_end(&line);
        if !text.is_empty() {
            framing.line(text).map_err(|e| {
                anyhow!("{e}").context(format!(
                    "{} is refused at line {number}; nothing was imported",
                    path.display()
                ))
            })?;
        }
    }
    framing.finish().map_err(|e| {
        anyhow!("{e}").context(format!(
            "{} is refused; nothing was imported",
            path.display()
        ))
    })
}

struct Importer<'a> {
    db: &'a Db,
    batch: WriteBatch,
    pending: Vec<Pending>,
    batch_bytes: usize,
    batch_size: usize,
    written: u64,
}

impl Importer<'_> {
    fn add(
        &mut self,
        line: u64,
        key: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), (String, anyhow::Error)> {
        if !self.pending.is_empty() && self.batch_bytes + key.len() + value.len() > BATCH_BYTES {
            self.flush()?;
        }
        match ttl_ms {
            Some(ms) => {
                self.batch
                    .put_with_ttl(key, value, Duration::from_millis(ms));
            }
            None => {
                self.batch.put(key, value);
            }
        }
        self.pending.push(Pending {
            line,
            key_len: key.len(),
            value_len: value.len(),
        });
        self.batch_bytes += key.len() + value.len();
        if self.pending.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the batch; on an error, says where: the line of the record
    /// the engine refused, or the batch's lines.
    fn flush(&mut self) -> Result<(), (String, anyhow::Error)> {
        let (Some(first), Some(last)) = (self.pending.first(), self.pending.last()) else {
            return Ok(());
        };
        let batch = std::mem::take(&mut self.batch);
        if let Err(err) = self.db.write(batch) {
            // The engine refuses the whole batch for one bad record: name
            // the record's line.
            let line = self
                .pending
                .iter()
                .find(|p| match err {
                    Error::EmptyKey => p.key_len == 0,
                    Error::KeyTooLarge { len, .. } => p.key_len == len,
                    Error::ValueTooLarge { len, .. } => p.value_len == len,
                    _ => false,
                })
                .map(|p| p.line);
            let at = match line {
                Some(line) => format!("at line {line}"),
                None => format!("writing the batch of lines {} to {}", first.line, last.line),
            };
            return Err((at, err.into()));
        }
        self.written += self.pending.len() as u64;
        self.pending.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

/// A line without its `\n`, and without a `\r` before it (a CRLF file).
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A record read from a line: key, value, and the milliseconds it has
/// left to live if it expires.
type Parsed = (Vec<u8>, Vec<u8>, Option<u64>);

/// The `ttl_ms` field: a whole number of milliseconds, at least 1.
fn parse_ttl_ms(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&ms| ms >= 1)
        .ok_or_else(|| format!("the ttl_ms {text:?} is not a whole number of milliseconds above 0"))
}

fn parse_record(line: &[u8], format: Format, encoding: Encoding) -> Result<Parsed, String> {
    let field = |text: &str, what: &str| -> Result<Vec<u8>, String> {
        encoding
            .decode(text)
            .map_err(|e| format!("the {what} is {e}"))
    };
    match format {
        Format::Jsonl => {
            let value: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
            let get = |name: &str| {
                value.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
                    format!(
                        "expected an object with string fields \"key\" and \"value\", but \"{name}\" is missing or not a string"
                    )
                })
            };
            // A field this build does not read is refused, not dropped:
            // it may hold what the writer of the file meant to keep.
            if let Some(unknown) = value.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !matches!(k.as_str(), "key" | "value" | "ttl_ms"))
            }) {
                return Err(format!(
                    "unknown field \"{unknown}\": a record has only \"key\", \"value\" and \"ttl_ms\""
                ));
            }
            let ttl_ms = match value.get("ttl_ms") {
                None => None,
                Some(ms) => Some(parse_ttl_ms(&ms.to_string())?),
            };
            Ok((
                field(get("key")?, "key")?,
                field(get("value")?, "value")?,
                ttl_ms,
            ))
        }
        Format::Tsv => {
            let text = std::str::from_utf8(line).map_err(|e| {
                format!("not valid UTF-8 ({e}); TSV files are text, whatever the encoding of their fields")
            })?;
            let Some((key, rest)) = text.split_once('\t') else {
                return Err("no tab: a TSV line is KEY<TAB>VALUE[<TAB>TTL_MS]".into());
            };
            let (value, ttl_ms) = match rest.split_once('\t') {
                None => (rest, None),
                Some((value, ttl)) if !ttl.contains('\t') => {
                    let ttl_ms = parse_ttl_ms(ttl).map_err(|e| {
                        format!(
                            "{e}: a third field is the TTL; a tab inside a field must be escaped as \\t (--encoding utf8) or the field encoded (hex, base64)"
                        )
                    })?;
                    (value, Some(ttl_ms))
                }
                Some(_) => {
                    return Err(
                        "more than two tabs: a tab inside a field must be escaped as \\t (--encoding utf8) or the field encoded (hex, base64)"
                            .into(),
                    );
                }
            };
            if encoding == Encoding::Utf8 {
                let key = tsv_unescape(key).map_err(|e| format!("in the key: {e}"))?;
                let value = tsv_unescape(value).map_err(|e| format!("in the value: {e}"))?;
                Ok((key.into_bytes(), value.into_bytes(), ttl_ms))
            } else {
                Ok((field(key, "key")?, field(value, "value")?, ttl_ms))
            }
        }
    }
}

/// Writes every record to the file (or stdout); returns how many, and how
/// many damaged ones were left out. `prefix` starts each message on
/// stderr.
pub(crate) fn export(
    source: Source<'_>,
    args: &ExportArgs,
    out: &mut Output,
    prefix: &str,
) -> anyhow::Result<ExportSummary> {
    let key_prefix = match &args.prefix {
        Some(p) => arg_bytes(p, args.encoding, "PREFIX")?,
        None => Vec::new(),
    };
    let to_file = args.file.as_deref().filter(|f| *f != Path::new("-"));
    let exists = |path: &Path| {
        anyhow::Error::from(UsageError(format!(
            "{} exists; give --force to overwrite it",
            path.display()
        )))
    };
    // A file export is written under a temporary name and gets FILE's
    // name only once complete: an interrupted export (an error, a kill)
    // never leaves a FILE that looks whole.
    let partial = to_file.map(partial_name);
    let mut file_writer = match (to_file, &partial) {
        (Some(path), Some(partial)) => {
            if !args.force && path.exists() {
                return Err(exists(path));
            }
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            Some(std::io::BufWriter::with_capacity(1 << 20, file))
        }
        _ => None,
    };
    let writer: &mut dyn Write = match &mut file_writer {
        Some(file) => file,
        None => out.writer(),
    };
    let total = match source {
        Source::Db(db) => db.len() as u64,
        Source::Salvage(salvage) => salvage.report().keys_copied,
    };
    let progress = bar(
        total,
        "exporting [{bar:40}] {pos}/{len} records {per_sec} eta {eta}",
    );
    let mut line = String::new();
    let mut digest = Digest::new();
    // A record that fails its checks: left out and named, or the end.
    let damaged = |e: Error, key: Option<&[u8]>, digest: &mut Digest| -> anyhow::Result<()> {
        if !args.skip_damaged || !matches!(e, Error::Corruption { .. }) {
            return Err(e.into());
        }
        digest.skip_damaged();
        match key {
            Some(key) => eprintln!(
                "{prefix}left out {}: {e}",
                crate::encoding::escape_for_terminal(key)
            ),
            None => eprintln!("{prefix}left out a damaged record: {e}"),
        }
        Ok(())
    };
    let result = (|| -> anyhow::Result<()> {
        writer.write_all(framing::header(args.format).as_bytes())?;
        let mut emit = |digest: &mut Digest,
                        key: &[u8],
                        value: &[u8],
                        ttl_ms: Option<u64>|
         -> anyhow::Result<()> {
            // The bar counts the records read, exported or not.
            progress.inc(1);
            if !key.starts_with(&key_prefix) {
                return Ok(());
            }
            line.clear();
            format_record(&mut line, key, value, ttl_ms, args.format, args.encoding)?;
            writer.write_all(line.as_bytes())?;
            digest.add(line.trim_end_matches('\n').as_bytes());
            Ok(())
        };
        match source {
            Source::Db(db) => {
                let mut records = db.iter();
                while let Some(record) = records.next() {
                    let (key, value) = match record {
                        Ok(record) => record,
                        Err(e) => {
                            damaged(e, records.damaged_key(), &mut digest)?;
                            continue;
                        }
                    };
                    // The time it has left, carried so that import restores
                    // it; a key that expired since it was read is left out.
                    let ttl_ms = match db.ttl(&key)? {
                        None => continue,
                        Some(None) => None,
                        Some(Some(left)) => Some(millis(left)),
                    };
                    emit(&mut digest, &key, &value, ttl_ms)?;
                }
            }
            Source::Salvage(salvage) => {
                for record in salvage.records() {
                    match record {
                        Ok(r) => emit(&mut digest, &r.key, &r.value, r.ttl.map(millis))?,
                        Err(e) => damaged(e, None, &mut digest)?,
                    }
                }
                // Every place the salvage could not read, and every key
                // whose newest version may be in one of them.
                let report = salvage.report();
                for loss in report.losses.iter().filter(|l| !l.covered) {
                    digest.skip_damaged();
                    eprintln!(
                        "{prefix}left out what {} held at offset {}: {}",
                        loss.path.display(),
                        loss.offset,
                        loss.reason
                    );
                }
                /// Keys at risk listed by name; the rest are counted.
                const SHOWN: usize = 20;
                for key in report.keys_at_risk.iter().take(SHOWN) {
                    eprintln!(
                        "{prefix}at risk: {} (its newest version may be lost; exported with \
                         the newest that could be read)",
                        crate::encoding::escape_for_terminal(key)
                    );
                }
                if report.keys_at_risk.len() > SHOWN {
                    eprintln!(
                        "{prefix}at risk: ... and {} more (`kv salvage` lists them all)",
                        crate::count(report.keys_at_risk.len() - SHOWN, "key")
                    );
                }
            }
        }
        writer.write_all(digest.trailer(args.format).as_bytes())?;
        writer.flush()?;
        Ok(())
    })();
    let n = digest.records();
    let damaged = digest.damaged();
    progress.finish_and_clear();
    let finished = result.and_then(|()| {
        let (Some(path), Some(partial), Some(writer)) = (to_file, &partial, file_writer.take())
        else {
            return Ok(());
        };
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        let faults = kv_fs::Faults::default();
        // A link does not replace a FILE created meanwhile; with --force,
        // or where the file system has no links (after a last look), a
        // rename. Either way the file and its directory are synced.
        let linked = if args.force {
            Err(std::io::ErrorKind::Unsupported.into())
        } else {
            std::fs::hard_link(partial, path)
        };
        match linked {
            Ok(()) => file
                .sync_all()
                .and_then(|()| std::fs::remove_file(partial))
                .and_then(|()| {
                    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                    kv_fs::sync_dir(dir.unwrap_or(Path::new(".")), &faults)
                }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
            Err(_) if !args.force && path.exists() => Err(std::io::ErrorKind::AlreadyExists.into()),
            Err(_) => {
                kv_fs::rename_into_place(&file, partial, path, &faults).map_err(|e| match e {
                    kv_fs::CreateError::Unchanged(e) | kv_fs::CreateError::Unsynced(e) => e,
                })
            }
        }
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path)
            } else {
                anyhow::Error::from(e).context(format!("cannot name the export {}", path.display()))
            }
        })
    });
    if let Err(e) = finished {
        if let Some(partial) = &partial {
            // A partial export is no export: remove it rather than leave
            // something that may be taken for one.
            drop(file_writer);
            let _ = std::fs::remove_file(partial);
        }
        return Err(e);
    }
    Ok(ExportSummary {
        records: n,
        damaged,
    })
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where an export to `path` is written until it is complete:
/// `path.partial`, beside it.
fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn format_record(
    line: &mut String,
    key: &[u8],
    value: &[u8],
    ttl_ms: Option<u64>,
    format: Format,
    encoding: Encoding,
) -> anyhow::Result<()> {
    let key_text = encoding.encode(key).map_err(|_| {
        anyhow!(
            "the key {} is not valid UTF-8; export binary data with --encoding hex or base64",
            crate::encoding::escape_for_terminal(key)
        )
    })?;
    let value_text = encoding.encode(value).map_err(|_| {
        anyhow!(
            "the value of key {} is not valid UTF-8; export binary data with --encoding hex or base64",
            crate::encoding::escape_for_terminal(key)
        )
    })?;
    match format {
        Format::Jsonl => {
            line.push_str("{\"key\":");
            line.push_str(&serde_json::to_string(&key_text)?);
            line.push_str(",\"value\":");
            line.push_str(&serde_json::to_string(&value_text)?);
            if let Some(ms) = ttl_ms {
                line.push_str(&format!(",\"ttl_ms\":{ms}"));
            }
            line.push_str("}\n");
        }
        Format::Tsv if encoding == Encoding::Utf8 => {
            line.push_str(&tsv_escape(&key_text));
            line.push('\t');
            line.push_str(&tsv_escape(&value_text));
            push_tsv_ttl(line, ttl_ms);
            line.push('\n');
        }
        Format::Tsv => {
            line.push_str(&key_text);
            line.push('\t');
            line.push_str(&value_text);
            push_tsv_ttl(line, ttl_ms);
            line.push('\n');
        }
    }
    Ok(())
}

/// A TSV line's third field, the milliseconds left, if the key expires.
fn push_tsv_ttl(line: &mut String, ttl_ms: Option<u64>) {
    if let Some(ms) = ttl_ms {
        line.push('\t');
        line.push_str(&ms.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(key: &[u8], value: &[u8], format: Format, encoding: Encoding) {
        let mut line = String::new();
        for ttl_ms in [None, Some(1), Some(86_400_000)] {
            line.clear();
            format_record(&mut line, key, value, ttl_ms, format, encoding).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let parsed = parse_record(trim_line_end(line.as_bytes()), format, encoding).unwrap();
            assert_eq!(parsed, (key.to_vec(), value.to_vec(), ttl_ms), "{line:?}");
        }
    }

    #[test]
    fn records_round_trip_in_every_format_and_encoding() {
        let text: &[(&[u8], &[u8])] = &[
            (b"k", b""),
            (b"tab\there", b"new\nline\r\\"),
            ("é✓".as_bytes(), b"{\"json\": true}"),
        ];
        for format in [Format::Jsonl, Format::Tsv] {
            for encoding in [Encoding::Utf8, Encoding::Hex, Encoding::Base64] {
                for (k, v) in text {
                    round_trip(k, v, format, encoding);
                }
                if encoding != Encoding::Utf8 {
                    round_trip(b"\x00\xff\t\n", b"\xfe\r\n\x01", format, encoding);
                }
            }
        }
    }

    #[test]
    fn non_utf8_data_is_refused_in_utf8() {
        let mut line = String::new();
        let err = format_record(
            &mut line,
            b"\xff",
            b"v",
            None,
            Format::Jsonl,
            Encoding::Utf8,
        );
        assert!(err.unwrap_err().to_string().contains("--encoding hex"));
        let err = format_record(&mut line, b"k", b"\xff", None, Format::Tsv, Encoding::Utf8);
        assert!(err.unwrap_err().to_string().contains("not valid UTF-8"));
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        let cases: &[(&[u8], Format, Encoding, &str)] = &[
            (
                b"{\"key\": 1, \"value\": \"v\"}",
                Format::Jsonl,
                Encoding::Utf8,
                "\"key\"",
            ),
            (
                b"{\"key\": \"k\"}",
                Format::Jsonl,
                Encoding::Utf8,
                "\"value\"",
            ),
            (b"not json", Format::Jsonl, Encoding::Utf8, "JSON"),
            (
                b"{\"key\": \"zz\", \"value\": \"\"}",
                Format::Jsonl,
                Encoding::Hex,
                "hex",
            ),
            (b"no tab here", Format::Tsv, Encoding::Utf8, "no tab"),
            (
                b"a\tb\tc",
                Format::Tsv,
                Encoding::Utf8,
                "a third field is the TTL",
            ),
            (b"a\tb\t0", Format::Tsv, Encoding::Utf8, "above 0"),
            (
                b"a\tb\t5\td",
                Format::Tsv,
                Encoding::Utf8,
                "more than two tabs",
            ),
            (
                b"{\"key\": \"k\", \"value\": \"v\", \"ttl_ms\": 0}",
                Format::Jsonl,
                Encoding::Utf8,
                "ttl_ms",
            ),
            (
                b"{\"key\": \"k\", \"value\": \"v\", \"ttl_ms\": \"5\"}",
                Format::Jsonl,
                Encoding::Utf8,
                "ttl_ms",
            ),
            (b"a\\x\tb", Format::Tsv, Encoding::Utf8, "unknown escape"),
            (b"\xff\tb", Format::Tsv, Encoding::Utf8, "UTF-8"),
            (b"!!\tb", Format::Tsv, Encoding::Base64, "base64"),
        ];
        for (line, format, encoding, want) in cases {
            let err = parse_record(line, *format, *encoding).unwrap_err();
            assert!(err.contains(want), "{err} does not say {want}");
        }
    }

    #[test]
    fn crlf_line_ends_are_trimmed() {
        assert_eq!(trim_line_end(b"a\tb\r\n"), b"a\tb");
        assert_eq!(trim_line_end(b"a\tb"), b"a\tb");
    }
}
