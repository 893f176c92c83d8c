//! Model-based test: random appends, commits, rotations, checkpoints, torn
//! writes and reopenings, checked against the lists of written and acknowledged records.

mod common;

use common::{append_raw, last_file, replay_all};
use kv_wal::{Position, RecoveryMode, SyncPolicy, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Commit,
    Rotate,
    /// Drop the Wal (losing what was not committed) and open it again.
    Reopen,
    /// Leave the bytes of a write cut short at the end, then reopen.
    TornReopen(Vec<u8>),
    /// Cut the log at the position of an acknowledged record.
    Checkpoint(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 1..300).prop_map(Op::Append),
        3 => Just(Op::Commit),
        1 => Just(Op::Rotate),
        1 => Just(Op::Reopen),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Op::TornReopen),
        1 => any::<prop::sample::Index>().prop_map(Op::Checkpoint),
    ]
}

fn options(max_file_size: u64) -> WalOptions {
    WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(max_file_size)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_log_replays_what_was_acknowledged(
        ops in prop::collection::vec(op(), 1..60),
        max_file_size in 200u64..3000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(max_file_size)).unwrap();
        // Two images of the truth: what has been written to the files (every
        // acknowledged record, and more), and what is appended but only
        // buffered, which a reopen loses.
        let mut written: Vec<(Position, Vec<u8>)> = Vec::new();
        let mut acknowledged = 0;
        let mut pending: Vec<(Position, Vec<u8>)> = Vec::new();
        let mut checkpoint = Position::START;

        for op in ops {
            match op {
                Op::Append(payload) => {
                    let end = wal.end_position();
                    let position = wal.append(&payload).unwrap();
                    if position.file != end.file {
                        // The record did not fit: the rotation wrote (but did
                        // not acknowledge) what was buffered.
                        written.append(&mut pending);
                    }
                    pending.push((position, payload));
                }
                Op::Commit => {
                    wal.commit().unwrap();
                    written.append(&mut pending);
                    acknowledged = written.len();
                }
                Op::Rotate => {
                    wal.rotate().unwrap();
                    written.append(&mut pending);
                }
                Op::Reopen => {
                    drop(wal);
                    pending.clear();
                    wal = Wal::open(dir.path(), options(max_file_size)).unwrap();
                }
                Op::TornReopen(garbage) => {
                    drop(wal);
                    pending.clear();
                    append_raw(&last_file(dir.path()), &garbage);
                    wal = Wal::open(dir.path(), options(max_file_size)).unwrap();
                    prop_assert!(wal.truncated_tail().is_some());
                }
                Op::Checkpoint(index) => {
                    if acknowledged > 0 {
                        let at = written[index.index(acknowledged)].0;
                        checkpoint = checkpoint.max(at);
                        wal.remove_before(checkpoint).unwrap();
                    }
                }
            }
            // The log always holds exactly what was written, from the
            // checkpoint on; that includes every acknowledged record.
            prop_assert!(acknowledged <= written.len());
            let expected: Vec<_> = written
                .iter()
                .filter(|(position, _)| *position >= checkpoint)
                .cloned()
                .collect();
            let read: Vec<_> = wal.read_from(checkpoint).map(Result::unwrap).collect();
            prop_assert_eq!(&read, &expected);
            let replayed =
                replay_all(dir.path(), checkpoint, RecoveryMode::AbsoluteConsistency).unwrap();
            prop_assert_eq!(&replayed, &expected);
        }
    }
}
