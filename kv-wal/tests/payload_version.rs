//! The owner's payload version: stored in each file a `Wal` creates, given
//! back with each payload by replay, and a log whose last file has another
//! payload version goes on in a new file, so that no file mixes payloads
//! of two versions.

use kv_wal::{Position, RecoveryMode, Wal, WalOptions};

fn replayed(dir: &std::path::Path) -> Vec<(Position, u8, Vec<u8>)> {
    let mut replay = Wal::replay(dir, Position::START, RecoveryMode::default()).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(position) = replay.next_into(&mut buf) {
        out.push((position.unwrap(), replay.payload_version(), buf.clone()));
    }
    out
}

#[test]
fn each_payload_comes_back_with_the_payload_version_of_its_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("wal");

    let mut wal = Wal::open(&dir, WalOptions::default()).unwrap();
    let a = wal.append(b"old encoding").unwrap();
    wal.commit().unwrap();
    wal.close().unwrap();

    // Reopened with another payload version: the last file is left as it
    // is, and the new payloads go to a new file.
    let mut wal = Wal::open(&dir, WalOptions::default().with_payload_version(2)).unwrap();
    let b = wal.append(b"new encoding").unwrap();
    wal.commit().unwrap();
    assert_eq!(b.file, a.file + 1, "a new file for the new payload version");
    wal.close().unwrap();

    // The same payload version again: it goes on in the same file.
    let mut wal = Wal::open(&dir, WalOptions::default().with_payload_version(2)).unwrap();
    let c = wal.append(b"new again").unwrap();
    wal.commit().unwrap();
    assert_eq!(c.file, b.file);
    // A Wal's own replay reports the versions too.
    let mut own = wal.read_from(Position::START);
    let mut buf = Vec::new();
    let mut versions = Vec::new();
    while let Some(position) = own.next_into(&mut buf) {
        position.unwrap();
        versions.push(own.payload_version());
    }
    assert_eq!(versions, [0, 2, 2]);
    wal.close().unwrap();

    assert_eq!(
        replayed(&dir),
        [
            (a, 0, b"old encoding".to_vec()),
            (b, 2, b"new encoding".to_vec()),
            (c, 2, b"new again".to_vec()),
        ]
    );
}

#[test]
fn a_log_of_a_later_payload_version_is_refused_and_left_alone() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("wal");
    let mut wal = Wal::open(&dir, WalOptions::default().with_payload_version(3)).unwrap();
    wal.append(b"written by a newer owner").unwrap();
    wal.commit().unwrap();
    wal.rotate().unwrap();
    wal.append(b"and more").unwrap();
    wal.commit().unwrap();
    drop(wal); // no close: the last file keeps its allocated tail
    let listing = || {
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let before = listing();
    for version in [0, 2] {
        match Wal::open(&dir, WalOptions::default().with_payload_version(version)) {
            Err(kv_wal::Error::UnsupportedPayloadVersion {
                version: 3,
                supported,
                ..
            }) => assert_eq!(supported, version),
            other => panic!("expected UnsupportedPayloadVersion, got {other:?}"),
        }
        assert_eq!(listing(), before, "a refused open changed the files");
    }
    // The owner of that version still opens it.
    Wal::open(&dir, WalOptions::default().with_payload_version(3))
        .unwrap()
        .close()
        .unwrap();
}
