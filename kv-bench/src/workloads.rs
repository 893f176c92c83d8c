//! The workloads, run inside a child process: one engine, one group of
//! workloads, a fresh directory. Every figure is printed to standard
//! output as a JSON line as soon as it is measured.
//!
//! Timers cover only the engine's work: the data and the traces are in
//! memory before a timer starts, and opening and closing are outside it
//! except where they are what is measured (reopen).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;

use crate::config::{Config, thousands};
use crate::data::{self, DataSet, Op};
use crate::engines::{self, Durability, Engine};
use crate::measure::{self, histogram, latency, timed};
use crate::results::{Line, Measurement};

/// The workload groups; each runs in its own process per engine.
pub const GROUPS: [&str; 8] = [
    "fill",
    "fill-big",
    "reads",
    "ycsb",
    "synced",
    "space",
    "reopen-clean",
    "reopen-kill",
];

/// What a child does: one group, or one step of the two-process reopen
/// groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Group(&'static str),
    /// Fill and close cleanly, for `reopen-clean`.
    ReopenPrepare,
    /// Fill under `sync` until killed, for `reopen-kill`.
    KillFill,
    /// Time the open; `true` after a clean close.
    ReopenOpen {
        clean: bool,
    },
}

impl Step {
    pub fn name(self) -> String {
        match self {
            Step::Group(g) => g.into(),
            Step::ReopenPrepare => "reopen-prepare".into(),
            Step::KillFill => "kill-fill".into(),
            Step::ReopenOpen { clean: true } => "reopen-open-clean".into(),
            Step::ReopenOpen { clean: false } => "reopen-open-kill".into(),
        }
    }

    pub fn parse(s: &str) -> Result<Step> {
        Ok(match s {
            "reopen-prepare" => Step::ReopenPrepare,
            "kill-fill" => Step::KillFill,
            "reopen-open-clean" => Step::ReopenOpen { clean: true },
            "reopen-open-kill" => Step::ReopenOpen { clean: false },
            g => match GROUPS.iter().find(|x| **x == g) {
                Some(g) => Step::Group(g),
                None => bail!("unknown step {g:?}"),
            },
        })
    }
}

struct Ctx<'a> {
    engine: &'a str,
    dir: &'a Path,
    c: &'a Config,
    data: &'a DataSet,
    data_dir: &'a Path,
}

fn emit(line: &Line) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

impl Ctx<'_> {
    fn emit(&self, mut m: Measurement) -> Result<()> {
        m.engine = self.engine.into();
        emit(&Line::Result(Box::new(m)))
    }

    fn open(&self, path: &Path, durability: Durability) -> Result<Box<dyn Engine>> {
        engines::open(self.engine, path, durability, self.c)
            .with_context(|| format!("opening {} in {}", self.engine, path.display()))
    }

    /// A fresh directory for one case.
    fn fresh(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        Ok(path)
    }

    fn value(&self, i: usize, version: u64) -> &[u8] {
        self.data.value(i, version, self.c.value_len)
    }

    /// Writes keys `0..n` (version `version`) in batches of `c.batch`.
    fn load(&self, db: &dyn Engine, n: usize, version: u64) -> Result<()> {
        let mut batch = Vec::with_capacity(self.c.batch);
        for start in (0..n).step_by(self.c.batch) {
            batch.clear();
            for i in start..(start + self.c.batch).min(n) {
                batch.push((self.data.key(i), self.value(i, version)));
            }
            db.write_batch(&batch)?;
        }
        Ok(())
    }
}

/// Runs one step of one engine, printing its figures.
pub fn run(engine: &str, step: Step, dir: &Path, data_dir: &Path, c: &Config) -> Result<()> {
    let data = data::load(c, data_dir)?;
    let ctx = Ctx {
        engine,
        dir,
        c,
        data: &data,
        data_dir,
    };
    std::fs::create_dir_all(dir)?;
    let memory_case = match step {
        Step::Group("fill") => fill(&ctx).map(|()| Some("fill"))?,
        Step::Group("fill-big") => {
            fill_big(&ctx).map(|()| Some("fill, 8 B keys / 1 KiB values"))?
        }
        Step::Group("reads") => reads(&ctx).map(|()| Some("random reads"))?,
        Step::Group("ycsb") => ycsb(&ctx).map(|()| Some("YCSB"))?,
        Step::Group("synced") => synced(&ctx).map(|()| Some("synced puts"))?,
        Step::Group("space") => space(&ctx).map(|()| Some("overwrite and compact"))?,
        Step::ReopenPrepare => reopen_prepare(&ctx).map(|()| None)?,
        Step::KillFill => kill_fill(&ctx).map(|()| None)?,
        Step::ReopenOpen { clean } => {
            reopen_open(&ctx, clean).map(|()| clean.then_some("reopen after a clean close"))?
        }
        Step::Group(g) => bail!("group {g:?} runs as two steps"),
    };
    if let Some(case) = memory_case {
        ctx.emit(
            Measurement::new("memory", case, "bytes", "lower").value(measure::peak_rss()? as f64),
        )?;
    }
    Ok(())
}

const FILL_SMALL: &str = "16 B keys, 100 B values";

fn fill(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    for durability in [Durability::Buffered, Durability::Sync] {
        let path = ctx.fresh(&format!("batched-{}", durability.label()))?;
        let db = ctx.open(&path, durability)?;
        let start = Instant::now();
        ctx.load(&*db, c.keys, 0)?;
        if durability == Durability::Buffered {
            db.sync()?;
        }
        let secs = start.elapsed().as_secs_f64();
        db.close()?;
        std::fs::remove_dir_all(&path)?;
        ctx.emit(
            Measurement::throughput(
                "fill",
                format!("{FILL_SMALL}, batches of {}", thousands(c.batch)),
                c.keys as u64,
                secs,
            )
            .durability(durability),
        )?;
    }

    // Single puts, one commit each; under `sync` they are the synced-puts
    // workload, capped there by count.
    let path = ctx.fresh("single-buffered")?;
    let db = ctx.open(&path, Durability::Buffered)?;
    let mut h = histogram();
    let start = Instant::now();
    for i in 0..c.keys {
        timed(&mut h, || db.put(ctx.data.key(i), ctx.value(i, 0)))?;
    }
    db.sync()?;
    let secs = start.elapsed().as_secs_f64();
    db.close()?;
    std::fs::remove_dir_all(&path)?;
    ctx.emit(
        Measurement::throughput(
            "fill",
            format!("{FILL_SMALL}, single puts"),
            c.keys as u64,
            secs,
        )
        .durability(Durability::Buffered)
        .latency(latency(&h)),
    )
}

fn fill_big(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    for durability in [Durability::Buffered, Durability::Sync] {
        let path = ctx.fresh(&format!("big-{}", durability.label()))?;
        let db = ctx.open(&path, durability)?;
        let mut batch = Vec::with_capacity(c.batch);
        let start = Instant::now();
        for first in (0..c.big_keys).step_by(c.batch) {
            batch.clear();
            for i in first..(first + c.batch).min(c.big_keys) {
                batch.push((ctx.data.big_key(i), ctx.data.value(i, 0, c.big_value_len)));
            }
            db.write_batch(&batch)?;
        }
        if durability == Durability::Buffered {
            db.sync()?;
        }
        let secs = start.elapsed().as_secs_f64();
        db.close()?;
        std::fs::remove_dir_all(&path)?;
        ctx.emit(
            Measurement::throughput(
                "fill",
                format!(
                    "{} B keys, {} B values, batches of {}",
                    c.big_key_len,
                    c.big_value_len,
                    thousands(c.batch)
                ),
                c.big_keys as u64,
                secs,
            )
            .durability(durability),
        )?;
    }
    Ok(())
}

/// The outcome of running a trace.
struct Run {
    secs: f64,
    hist: Histogram<u64>,
    /// Reads that found their key.
    found: u64,
    reads: u64,
}

/// Runs `ops` on `threads` threads, operation `j` on thread `j % threads`,
/// timing each one. `op` gets the operation, its position in the trace,
/// and returns whether a read found its key (`None` for a write). After
/// the threads finish, `finish` runs inside the timer (the final sync).
fn run_trace(
    threads: usize,
    ops: &[Op],
    op: impl Fn(Op, usize) -> Result<Option<bool>> + Sync,
    finish: impl FnOnce() -> Result<()>,
) -> Result<Run> {
    let barrier = Barrier::new(threads + 1);
    let (start, outcomes) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || -> Result<(Histogram<u64>, u64, u64)> {
                    let mut h = histogram();
                    let (mut found, mut reads) = (0, 0);
                    barrier.wait();
                    for j in (t..ops.len()).step_by(threads) {
                        if let Some(hit) = timed(&mut h, || op(ops[j], j))? {
                            reads += 1;
                            found += u64::from(hit);
                        }
                    }
                    Ok((h, found, reads))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("a benchmark thread panicked"))
            .collect();
        (start, outcomes)
    });
    let mut run = Run {
        secs: 0.0,
        hist: histogram(),
        found: 0,
        reads: 0,
    };
    for outcome in outcomes {
        let (h, found, reads) = outcome?;
        run.hist.add(h).expect("same histogram bounds");
        run.found += found;
        run.reads += reads;
    }
    finish()?;
    run.secs = start.elapsed().as_secs_f64();
    Ok(run)
}

/// Loads the standard data set, closes, and reopens: every engine is read
/// in the state a clean restart leaves it in.
fn loaded(ctx: &Ctx<'_>, name: &str) -> Result<Box<dyn Engine>> {
    let path = ctx.fresh(name)?;
    let db = ctx.open(&path, Durability::Buffered)?;
    ctx.load(&*db, ctx.c.keys, 0)?;
    db.sync()?;
    db.close()?;
    ctx.open(&path, Durability::Buffered)
}

/// Reads one value, touching its bytes so the read cannot be skipped.
fn read(db: &dyn Engine, key: &[u8]) -> Result<bool> {
    let mut sum = 0u64;
    let found = db.get(key, &mut |v| {
        sum = sum.wrapping_add(v.len() as u64 + u64::from(v.first().copied().unwrap_or(0)));
    })?;
    std::hint::black_box(sum);
    Ok(found)
}

fn reads(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    let db = loaded(ctx, "reads")?;
    // Warm-up, untimed: every key once, every value checked byte for byte.
    for i in 0..c.keys {
        let expected = ctx.value(i, 0);
        let mut ok = false;
        db.get(ctx.data.key(i), &mut |v| ok = v == expected)?;
        ensure!(
            ok,
            "{}: key {i} is missing or has a wrong value",
            ctx.engine
        );
    }
    for (trace, label) in [("reads-uniform", "uniform"), ("reads-zipf", "Zipfian 0.99")] {
        let ops = data::load_trace(ctx.data_dir, trace)?;
        for threads in [1, 2] {
            let run = run_trace(
                threads,
                &ops,
                |op, _| match op {
                    Op::Read(i) => read(&*db, ctx.data.key(i as usize)).map(Some),
                    other => bail!("a read trace holds {other:?}"),
                },
                || Ok(()),
            )?;
            ensure!(run.found == run.reads, "{}: a read missed", ctx.engine);
            let plural = if threads == 1 { "" } else { "s" };
            ctx.emit(
                Measurement::throughput(
                    "reads",
                    format!("{label}, {threads} thread{plural}"),
                    ops.len() as u64,
                    run.secs,
                )
                .latency(latency(&run.hist)),
            )?;
        }
    }
    db.close()
}

fn ycsb(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    let db = loaded(ctx, "ycsb")?;
    let about = |w: char| match w {
        'A' => "A: 50% reads, 50% updates",
        'B' => "B: 95% reads, 5% updates",
        'C' => "C: 100% reads",
        'D' => "D: 95% reads of recent keys, 5% inserts",
        _ => "F: 50% reads, 50% read-modify-writes",
    };
    // One client thread (every update its own commit, nothing to group)
    // and then more, as YCSB's clients would be.
    for (threads, w) in [1, c.ycsb_threads]
        .into_iter()
        .flat_map(|t| data::YCSB_WORKLOADS.into_iter().map(move |w| (t, w)))
    {
        let ops = data::load_trace(ctx.data_dir, &format!("ycsb-{}", w.to_ascii_lowercase()))?;
        let db = &*db;
        let run = run_trace(
            threads,
            &ops,
            |op, j| {
                // Each update writes a fresh version of the value.
                let version = 1 + j as u64;
                match op {
                    Op::Read(i) => read(db, ctx.data.key(i as usize)).map(Some),
                    Op::Update(i) => {
                        let i = i as usize;
                        db.put(ctx.data.key(i), ctx.value(i, version))
                            .map(|()| None)
                    }
                    Op::Insert(i) => {
                        let i = i as usize;
                        db.put(ctx.data.key(i), ctx.value(i, 0)).map(|()| None)
                    }
                    Op::ReadModifyWrite(i) => {
                        let i = i as usize;
                        let hit = read(db, ctx.data.key(i))?;
                        db.put(ctx.data.key(i), ctx.value(i, version))?;
                        Ok(Some(hit))
                    }
                }
            },
            || db.sync(),
        )?;
        // D reads keys that another thread may not have inserted yet;
        // everywhere else every read must hit.
        ensure!(
            w == 'D' || run.found == run.reads,
            "{}: YCSB {w} missed {} reads",
            ctx.engine,
            run.reads - run.found
        );
        let case = format!(
            "{}, {threads} thread{}",
            about(w),
            if threads == 1 { "" } else { "s" }
        );
        ctx.emit(
            Measurement::throughput("ycsb", case, ops.len() as u64, run.secs)
                .durability(Durability::Buffered)
                .latency(latency(&run.hist)),
        )?;
    }
    ctx.emit(Measurement::new("ycsb", "E: range scans", "ops/s", "higher").note("N/A"))?;
    db.close()
}

fn synced(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    // Keys past those of the loads and YCSB D, so none is reused.
    let first = c.keys + c.ycsb_ops;
    for (threads, offset) in [(1, 0), (8, c.synced_puts)] {
        let path = ctx.fresh(&format!("synced-{threads}"))?;
        let db = ctx.open(&path, Durability::Sync)?;
        let ops: Vec<Op> = (0..c.synced_puts)
            .map(|i| Op::Insert((first + offset + i) as u32))
            .collect();
        let run = run_trace(
            threads,
            &ops,
            |op, _| match op {
                Op::Insert(i) => {
                    let i = i as usize;
                    db.put(ctx.data.key(i), ctx.value(i, 0)).map(|()| None)
                }
                other => bail!("unexpected {other:?}"),
            },
            || Ok(()),
        )?;
        db.close()?;
        std::fs::remove_dir_all(&path)?;
        let plural = if threads == 1 { "" } else { "s" };
        ctx.emit(
            Measurement::throughput(
                "synced",
                format!(
                    "{threads} thread{plural}, {} puts in all",
                    thousands(c.synced_puts)
                ),
                ops.len() as u64,
                run.secs,
            )
            .durability(Durability::Sync)
            .latency(latency(&run.hist)),
        )?;
    }
    Ok(())
}

fn space(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    let path = ctx.fresh("space")?;
    let live = (c.keys * (c.key_len + c.value_len)) as f64;
    let passes = c.overwrite_passes;
    let row = |case: &str, unit: &str| Measurement::new("space", case, unit, "lower");

    let written_before = measure::bytes_written()?;
    let mut db = ctx.open(&path, Durability::Buffered)?;
    ctx.load(&*db, c.keys, 0)?;
    db.sync()?;
    let after_load = measure::disk_usage(&path)?;
    for pass in 1..=passes {
        ctx.load(&*db, c.keys, pass as u64)?;
        db.sync()?;
    }
    let after_overwrites = measure::disk_usage(&path)?;
    let written = measure::bytes_written()? - written_before;
    check_latest(ctx, &*db, passes as u64)?;

    ctx.emit(row("disk after load", "bytes").value(after_load as f64))?;
    ctx.emit(
        row(&format!("disk after {passes} overwrites"), "bytes").value(after_overwrites as f64),
    )?;
    ctx.emit(
        row(
            &format!("space amplification after {passes} overwrites"),
            "x",
        )
        .value(after_overwrites as f64 / live),
    )?;
    ctx.emit(
        row(
            &format!("write amplification, load + {passes} overwrites"),
            "x",
        )
        .value(written as f64 / (live * (passes + 1) as f64)),
    )?;

    let start = Instant::now();
    let compacted = db.compact();
    let secs = start.elapsed().as_secs_f64();
    let after_compaction = "disk after compaction and a clean close".to_string();
    let compaction_write_amp =
        format!("write amplification, load + {passes} overwrites + compaction");
    match compacted {
        Some(result) => {
            result.context("compacting")?;
            check_latest(ctx, &*db, passes as u64)?;
            // Measured after closing: engines may drop replaced files only
            // once nothing reads them.
            db.close()?;
            let after = measure::disk_usage(&path)?;
            let written = measure::bytes_written()? - written_before;
            ctx.emit(row("compaction time", "s").value(secs))?;
            ctx.emit(row(&after_compaction, "bytes").value(after as f64))?;
            ctx.emit(row("space amplification after compaction", "x").value(after as f64 / live))?;
            ctx.emit(
                row(&compaction_write_amp, "x")
                    .value(written as f64 / (live * (passes + 1) as f64)),
            )?;
        }
        None => {
            let note = db.compaction_note();
            for (case, unit) in [
                ("compaction time", "s"),
                (after_compaction.as_str(), "bytes"),
                ("space amplification after compaction", "x"),
                (compaction_write_amp.as_str(), "x"),
            ] {
                ctx.emit(row(case, unit).note(note))?;
            }
            db.close()?;
        }
    }
    Ok(())
}

/// Checks a sample of keys holds the latest version.
fn check_latest(ctx: &Ctx<'_>, db: &dyn Engine, version: u64) -> Result<()> {
    for i in (0..ctx.c.keys).step_by(997) {
        let expected = ctx.value(i, version);
        let mut ok = false;
        db.get(ctx.data.key(i), &mut |v| ok = v == expected)?;
        ensure!(
            ok,
            "{}: key {i} does not hold version {version}",
            ctx.engine
        );
    }
    Ok(())
}

const REOPEN_DIR: &str = "db";

fn reopen_prepare(ctx: &Ctx<'_>) -> Result<()> {
    let path = ctx.fresh(REOPEN_DIR)?;
    let db = ctx.open(&path, Durability::Buffered)?;
    ctx.load(&*db, ctx.c.keys, 0)?;
    db.close()
}

/// Fills under `sync`, reporting progress after each commit, until the
/// coordinator kills the process; past the last key it overwrites, so the
/// kill always lands mid-write.
fn kill_fill(ctx: &Ctx<'_>) -> Result<()> {
    let c = ctx.c;
    let path = ctx.fresh(REOPEN_DIR)?;
    let db = ctx.open(&path, Durability::Sync)?;
    let deadline = Instant::now() + Duration::from_secs(c.child_timeout_secs);
    let mut batch = Vec::with_capacity(c.batch);
    let mut done = 0u64;
    for version in 0.. {
        for first in (0..c.keys).step_by(c.batch) {
            batch.clear();
            for i in first..(first + c.batch).min(c.keys) {
                batch.push((ctx.data.key(i), ctx.value(i, version)));
            }
            db.write_batch(&batch)?;
            done += batch.len() as u64;
            emit(&Line::Progress { done })?;
            if Instant::now() > deadline {
                bail!("not killed before the deadline");
            }
        }
    }
    unreachable!("the fill loops until killed")
}

fn reopen_open(ctx: &Ctx<'_>, clean: bool) -> Result<()> {
    let c = ctx.c;
    let path = ctx.dir.join(REOPEN_DIR);
    ensure!(path.exists(), "nothing to reopen in {}", path.display());
    let anon_before = measure::rss_anon()?;
    let start = Instant::now();
    let durability = if clean {
        Durability::Buffered
    } else {
        Durability::Sync
    };
    let db = ctx.open(&path, durability)?;
    let secs = start.elapsed().as_secs_f64();
    // The first batch was acknowledged and synced before the kill.
    let mut ok = false;
    db.get(ctx.data.key(0), &mut |v| ok = v.len() == c.value_len)?;
    ensure!(ok, "{}: key 0 is missing after reopening", ctx.engine);

    let case = if clean {
        "after a clean close"
    } else {
        "after kill -9 mid-fill (sync)"
    };
    ctx.emit(Measurement::new("reopen", case, "s", "lower").value(secs))?;
    if clean {
        // kv-engine decodes a saved index shard by shard as it is used:
        // read every key (untimed) so that all of it is in memory.
        let mut found = 0usize;
        for i in 0..c.keys {
            found += usize::from(db.get(ctx.data.key(i), &mut |_| {})?);
        }
        ensure!(
            found == c.keys,
            "{}: {found} keys found of {}",
            ctx.engine,
            c.keys
        );
        let anon_after = measure::rss_anon()?;
        let keys = db.key_count();
        if let Some(n) = keys {
            ensure!(
                n == c.keys as u64,
                "{}: {n} keys after reopening",
                ctx.engine
            );
        }
        let row = Measurement::new(
            "memory",
            "index bytes per key (anonymous RSS growth across open and a read of every key / keys)",
            "bytes/key",
            "lower",
        );
        // Only kv-engine's open builds an in-memory index of every key; for
        // the others the same growth would be caches, not an index.
        ctx.emit(match keys {
            Some(n) if ctx.engine == "kv" => {
                row.value(anon_after.saturating_sub(anon_before) as f64 / n as f64)
            }
            _ => row.note("n/a"),
        })?;
    }
    db.close()
}
