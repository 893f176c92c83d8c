//! Read-only checking of a whole log directory: every file's header and
//! every frame's checksum, reporting each damaged place instead of stopping
//! at the first, and changing nothing.

use std::path::{Path, PathBuf};

use crate::error::io_error;
use crate::format::{self, BadFrame};
use crate::replay::{FileCursor, FrameError, Tail, classify_tail};
use crate::{Error, Position, Result};

/// What [`check`] found in a log directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalCheck {
    /// WAL files read.
    pub files: u64,
    /// Valid frames read.
    pub frames: u64,
    /// Bytes of the WAL files read (with the space allocated ahead at the
    /// end of the last file).
    pub bytes: u64,
    /// Damage: a bad file header, a bad frame in any file but the last, a
    /// bad frame followed by a valid one, or a file missing from the middle
    /// of the log. [`Wal::open`](crate::Wal::open) refuses each.
    pub damage: Vec<Damage>,
    /// A bad frame at the end of the last file with nothing valid after it
    /// and not only zeros: the torn tail of an interrupted write, which
    /// [`Wal::open`] cuts off under
    /// [`RecoveryMode::TolerateCorruptedTail`]. Zeros from the end of the
    /// last frame to the end of the last file are not a torn tail: they are
    /// the space allocated ahead of the frames, the clean end of the log.
    ///
    /// [`Wal::open`]: crate::Wal::open
    /// [`RecoveryMode::TolerateCorruptedTail`]: crate::RecoveryMode::TolerateCorruptedTail
    pub torn_tail: Option<Damage>,
    /// Temporary files left by an interrupted file creation, which
    /// [`Wal::open`](crate::Wal::open) deletes.
    pub leftovers: Vec<PathBuf>,
}

/// One damaged place in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file (0 for the header or a missing file).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Checks the log in `dir` without changing it: every file's header and
/// every frame, in order, handing each valid frame's payload to `visit`
/// with its file, its position and its file's payload version
/// ([`WalOptions::payload_version`](crate::WalOptions::payload_version)).
///
/// After a bad frame the check looks for the next valid frame in the same
/// file and goes on from there, so every damaged place is reported. A
/// directory that does not exist is an empty log.
///
/// # Errors
///
/// [`Error::Io`] if the directory or a file cannot be read. Damage is not
/// an error: it is listed in the returned [`WalCheck`].
pub fn check(dir: &Path, mut visit: impl FnMut(&Path, Position, u8, &[u8])) -> Result<WalCheck> {
    let mut report = WalCheck::default();
    if !dir.exists() {
        return Ok(report);
    }
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(format::is_temp_file_name)
        {
            report.leftovers.push(entry.path());
        }
    }
    report.leftovers.sort();
    let files = crate::fs::list_wal_files(dir)?;
    let last = files.last().map(|&(number, _)| number);
    let mut previous: Option<u64> = None;
    let mut payload = Vec::new();
    for (number, path) in files {
        if let Some(previous) = previous
            && number != previous + 1
        {
            report.damage.push(Damage {
                path: dir.join(format::file_name(previous + 1)),
                offset: 0,
                reason: format!(
                    "WAL files {} to {} are missing, but later ones exist",
                    previous + 1,
                    number - 1
                ),
            });
        }
        previous = Some(number);
        report.files += 1;
        report.bytes += std::fs::metadata(&path).map_err(io_error(&path))?.len();
        let mut cursor = match FileCursor::open(path.clone(), number, 0, None, None) {
            Ok(cursor) => cursor,
            Err(Error::Io { path, source }) => return Err(Error::Io { path, source }),
            Err(error) => {
                report.damage.push(Damage {
                    path,
                    offset: 0,
                    reason: header_reason(error),
                });
                continue;
            }
        };
        loop {
            match cursor.next_frame(&mut payload) {
                Ok(Some(offset)) => {
                    report.frames += 1;
                    let position = Position::new(number, offset);
                    visit(&path, position, cursor.payload_version, &payload);
                }
                Ok(None) => break,
                Err(FrameError::Io(source)) => {
                    return Err(Error::Io {
                        path: path.clone(),
                        source,
                    });
                }
                Err(FrameError::Bad { offset, bad }) => {
                    match classify_tail(&path, offset, cursor.layout)? {
                        (Tail::Undecided { hashed }, tail_len) => {
                            report.damage.push(Damage {
                                path: path.clone(),
                                offset,
                                reason: format!(
                                    "{bad}, and {}; the rest of the file ({tail_len} bytes) \
                                 could not be resynchronised and is not checked",
                                    Tail::undecided_reason(hashed, tail_len)
                                ),
                            });
                            break;
                        }
                        (Tail::Corrupt { next }, _) => {
                            report.damage.push(Damage {
                                path: path.clone(),
                                offset,
                                reason: format!(
                                    "{bad}; {} bytes up to the next valid frame at offset {next} are not frames",
                                    next - offset
                                ),
                            });
                            cursor = FileCursor::open(path.clone(), number, next, None, None)?;
                        }
                        // The space allocated ahead of the frames: the
                        // clean end of the log, if this is its last file.
                        (Tail::Zeros, _) if Some(number) == last => break,
                        // Zeros in an older file are damage, as a torn
                        // tail there is: rotation cuts them off before the
                        // next file is created.
                        (Tail::Torn | Tail::Zeros, _) => {
                            let damage = Damage {
                                path: path.clone(),
                                offset,
                                reason: torn_reason(bad),
                            };
                            if Some(number) == last {
                                report.torn_tail = Some(damage);
                            } else {
                                report.damage.push(Damage {
                                reason: format!(
                                    "{}; only the last WAL file may end with an incomplete frame",
                                    damage.reason
                                ),
                                ..damage
                            });
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

fn torn_reason(bad: BadFrame) -> String {
    format!("{bad}, and no valid frame follows")
}

/// The reason of a header error, without the path it already names.
fn header_reason(error: Error) -> String {
    match error {
        Error::Corruption { reason, .. } => reason,
        Error::NotAWalFile { reason, .. } => format!("not a kv WAL file: {reason}"),
        Error::UnsupportedVersion { version, .. } => format!(
            "WAL format version {version} is not supported (this build reads versions {} to {})",
            format::OLDEST_FORMAT_VERSION,
            format::FORMAT_VERSION
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{FILE_HEADER_LEN, Wal, WalOptions};

    /// A log of two files, three records each; returns the positions.
    fn two_files(dir: &Path) -> Vec<Position> {
        let mut wal = Wal::open(dir, WalOptions::default()).unwrap();
        let mut positions = Vec::new();
        for i in 0..6u8 {
            if i == 3 {
                wal.rotate().unwrap();
            }
            positions.push(wal.append(&[i; 20]).unwrap());
        }
        wal.commit().unwrap();
        wal.close().unwrap();
        positions
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_clean_log_checks_clean_and_every_payload_is_visited() {
        let dir = tempfile::tempdir().unwrap();
        let positions = two_files(dir.path());
        let mut seen = Vec::new();
        let report = check(dir.path(), |_, pos, _, payload| {
            seen.push((pos, payload[0]))
        })
        .unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.frames, 6);
        assert!(report.damage.is_empty() && report.torn_tail.is_none());
        assert_eq!(
            seen,
            positions.iter().copied().zip(0..6u8).collect::<Vec<_>>()
        );
        assert_eq!(
            check(&dir.path().join("absent"), |_, _, _, _| {}).unwrap(),
            WalCheck::default()
        );
    }

    #[test]
    fn every_damaged_frame_is_reported_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let positions = two_files(dir.path());
        // Damage the second frame of each file.
        for pos in [positions[1], positions[4]] {
            let path = dir.path().join(format::file_name(pos.file));
            let mut bytes = fs::read(&path).unwrap();
            bytes[pos.offset as usize + 15] ^= 0x40;
            fs::write(&path, bytes).unwrap();
        }
        let before = snapshot(dir.path());
        let mut seen = 0;
        let report = check(dir.path(), |_, _, _, _| seen += 1).unwrap();
        assert_eq!(seen, 4);
        assert_eq!(report.damage.len(), 2, "{report:?}");
        for (damage, pos) in report.damage.iter().zip([positions[1], positions[4]]) {
            assert_eq!(damage.path, dir.path().join(format::file_name(pos.file)));
            assert_eq!(damage.offset, pos.offset);
        }
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn a_torn_tail_of_the_last_file_is_told_apart_from_damage() {
        let dir = tempfile::tempdir().unwrap();
        two_files(dir.path());
        let last = dir.path().join(format::file_name(2));
        let mut bytes = fs::read(&last).unwrap();
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&[7; 5]);
        fs::write(&last, &bytes).unwrap();
        let report = check(dir.path(), |_, _, _, _| {}).unwrap();
        assert!(report.damage.is_empty(), "{report:?}");
        let torn = report.torn_tail.unwrap();
        assert_eq!((torn.path, torn.offset), (last.clone(), end));

        // The same bytes at the end of the first file are damage.
        let first = dir.path().join(format::file_name(1));
        let mut bytes = fs::read(&first).unwrap();
        bytes.extend_from_slice(&[7; 5]);
        fs::write(&first, &bytes).unwrap();
        let report = check(dir.path(), |_, _, _, _| {}).unwrap();
        assert_eq!(report.damage.len(), 1);
        assert_eq!(report.damage[0].path, first);
    }

    #[test]
    fn bad_headers_and_missing_files_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        two_files(dir.path());
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.rotate().unwrap();
        wal.append(b"x").unwrap();
        wal.close().unwrap();
        fs::remove_file(dir.path().join(format::file_name(2))).unwrap();
        let first = dir.path().join(format::file_name(1));
        let mut bytes = fs::read(&first).unwrap();
        bytes[FILE_HEADER_LEN - 1] ^= 1;
        fs::write(&first, &bytes).unwrap();
        fs::write(dir.path().join(format::temp_file_name(9)), b"").unwrap();
        let report = check(dir.path(), |_, _, _, _| {}).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.damage.len(), 2, "{report:?}");
        assert_eq!(report.damage[0].path, first);
        assert_eq!(report.damage[0].offset, 0);
        assert_eq!(report.damage[1].path, dir.path().join(format::file_name(2)));
        assert_eq!(
            report.leftovers,
            [dir.path().join(format::temp_file_name(9))]
        );
    }
}
