//! kill -9: a child process writes under `SyncPolicy::Always` from several
//! threads (puts, deletes, batches) and reports each acknowledged operation
//! on stdout; the parent kills it with SIGKILL at a random moment, reopens
//! the database, and checks that every acknowledged write is there, every
//! acknowledged delete is absent, nothing never written appears, and every
//! batch is all or nothing. In the compacting rounds the child also holds
//! pinned values and partly consumed iterators across compactions and
//! reads `stats()` in a loop.
//!
//! `KV_KILL9_ROUNDS` sets the number of rounds (default 50).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Rng, contents};
use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

const THREADS: u64 = 3;
const KEYS_PER_THREAD: u64 = 12;
const CHILD_DIR_VAR: &str = "KV_KILL9_CHILD_DIR";
/// Set in the child to also compact in a loop while it writes.
const CHILD_COMPACT_VAR: &str = "KV_KILL9_CHILD_COMPACT";

/// One operation of a thread's deterministic program.
#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

fn key(t: u64, k: u64) -> Vec<u8> {
    format!("t{t}/k{k:02}").into_bytes()
}

/// Operation `i` of thread `t`: the same in child and parent.
fn op(t: u64, i: u64) -> Op {
    let mix = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let k = mix % KEYS_PER_THREAD;
    let value = format!("t{t}-i{i}-")
        .repeat((mix % 5 + 1) as usize)
        .into_bytes();
    match i % 7 {
        0 | 3 => Op::Delete(key(t, k)),
        5 => Op::Batch(
            (0..4)
                .map(|j| {
                    let bk = key(t, (k + j * 3) % KEYS_PER_THREAD);
                    let v = (j != 2).then(|| format!("batch-t{t}-i{i}-j{j}").into_bytes());
                    (bk, v)
                })
                .collect(),
        ),
        _ => Op::Put(key(t, k), value),
    }
}

fn apply(model: &mut HashMap<Vec<u8>, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(k, v) => {
            model.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            model.remove(k);
        }
        Op::Batch(ops) => {
            for (k, v) in ops {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
        }
    }
}

/// The child: runs the threads' programs until killed.
#[test]
#[ignore = "run by kill_nine_loses_nothing_acknowledged as a child process"]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    let compacting = std::env::var_os(CHILD_COMPACT_VAR).is_some();
    let options = Options::default()
        .sync(SyncPolicy::Always)
        .segment_size(if compacting { 2 << 10 } else { 16 << 10 })
        .max_wal_size(4 << 10)
        .compaction_interval(std::time::Duration::from_millis(5));
    let db = std::sync::Arc::new(Db::open_with(&dir, options).unwrap());
    if compacting {
        // Compaction in a loop, on top of the background thread: the kill
        // lands in the middle of a run (writing the output, syncing it,
        // switching the index, retiring the inputs) as often as not. A
        // failed compaction aborts the child, which the parent notices.
        let compactor = std::sync::Arc::clone(&db);
        std::thread::spawn(move || {
            loop {
                if let Err(e) = compactor.compact() {
                    eprintln!("compaction failed: {e}");
                    std::process::abort();
                }
            }
        });
        // Holders: pinned values and partly consumed iterators kept across
        // many compaction generations (they keep retired segments mapped),
        // and a stats loop reading segment usage while compaction runs.
        // Neither may bring back a deleted or overwritten key.
        let holder = std::sync::Arc::clone(&db);
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut iters = std::collections::VecDeque::new();
            for n in 0u64.. {
                let k = key(n % THREADS, n % KEYS_PER_THREAD);
                if let Ok(Some(value)) = holder.get_pinned(&k) {
                    held.push_back(value);
                }
                let mut iter = holder.iter();
                let _ = iter.next();
                iters.push_back(iter);
                if held.len() > 64 {
                    held.pop_front();
                }
                if iters.len() > 8 {
                    iters.pop_front();
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let stats = std::sync::Arc::clone(&db);
        std::thread::spawn(move || {
            loop {
                let _ = stats.stats();
                std::thread::yield_now();
            }
        });
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = std::sync::Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0.. {
                    match op(t, i) {
                        Op::Put(k, v) => db.put(&k, &v).unwrap(),
                        Op::Delete(k) => db.delete(&k).unwrap(),
                        Op::Batch(ops) => {
                            let mut batch = WriteBatch::new();
                            for (k, v) in &ops {
                                match v {
                                    Some(v) => batch.put(k, v),
                                    None => batch.delete(k),
                                };
                            }
                            db.write(batch).unwrap();
                        }
                    }
                    // Reported only once acknowledged; one line per write
                    // call, so lines never interleave.
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn round(dir: &Path, seed: u64, compacting: bool) {
    let mut rng = Rng::new(seed);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "kill9_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if compacting {
        command.env(CHILD_COMPACT_VAR, "1");
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let kill_after = 5 + rng.below(if compacting { 400 } else { 120 });
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let record = |line: &str, acked: &mut BTreeMap<u64, u64>| {
        // NOTE: the first acknowledgement shares its line with the test
        // harness's "test kill9_child ... ", so "ACK" is looked for
        // anywhere in the line; at its start, the first one was lost, and
        // a kill before that thread's second left two unreported writes.
        if let Some(rest) = line.find("ACK ").map(|at| &line[at + 4..])
            && let Some((t, i)) = rest.trim_end().split_once(' ')
            && let (Ok(t), Ok(i)) = (t.parse::<u64>(), i.parse::<u64>())
        {
            let last = acked.entry(t).or_insert(i);
            assert!(i >= *last, "thread {t} acknowledged {i} after {last}");
            *last = i;
            return true;
        }
        false
    };
    let mut seen = 0;
    let mut line = String::new();
    while seen < kill_after {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the child exited before it was killed");
        }
        if record(&line, &mut acked) {
            seen += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements the child printed before it died are still in the
    // pipe; a line cut short by the kill is ignored.
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    for l in rest.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        record(l, &mut acked);
    }

    let db = Db::open(dir).unwrap();
    let state = contents(&db, &format!("seed {seed}, after the kill"));
    for t in 0..THREADS {
        // Ops 0..=last were acknowledged. At most one more was in flight
        // (or acknowledged but not yet reported): it may or may not be
        // there, but wholly or not at all.
        let mut model = HashMap::new();
        let last = acked.get(&t).copied();
        if let Some(last) = last {
            for i in 0..=last {
                apply(&mut model, &op(t, i));
            }
        }
        let mut with_next = model.clone();
        apply(&mut with_next, &op(t, last.map_or(0, |l| l + 1)));
        let prefix = format!("t{t}/").into_bytes();
        let mine: HashMap<_, _> = state
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(
            mine == model || mine == with_next,
            "seed {seed}: thread {t} (last acknowledged op {last:?}) recovered to a state \
             that is neither the acknowledged prefix nor it plus the op in flight\n\
             recovered: {mine:?}\nexpected: {model:?}"
        );
    }
    // Nothing that was never written appears.
    for k in state.keys() {
        assert!(
            (0..THREADS).any(|t| k.starts_with(format!("t{t}/").as_bytes())),
            "unknown key {k:?}"
        );
    }
    db.close().unwrap();
}

#[test]
fn kill_nine_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("KV_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let base_seed = 0x5EED_0000_u64;
    for r in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        round(dir.path(), base_seed + r * 7919, false);
    }
}

/// The same, with the child compacting in a loop: a crash at any point of
/// a compaction run loses nothing acknowledged and brings back no deleted
/// key. `KV_KILL9_COMPACT_ROUNDS` sets the number of rounds (default 30).
#[test]
fn kill_nine_during_compaction_loses_nothing_and_resurrects_nothing() {
    let rounds: u64 = std::env::var("KV_KILL9_COMPACT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    for r in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        round(dir.path(), 0xC0_FFEE + r * 104_729, true);
    }
}
