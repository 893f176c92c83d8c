//! The coordinator: generates the data set once, then runs one child
//! process per (engine, workload group), in a shuffled order, each in a
//! fresh directory, and gathers their JSON lines into `results.json`.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::config::{Config, thousands};
use crate::data::{self, Rng};
use crate::engines;
use crate::results::{self, EngineInfo, Line, Machine, Measurement, Run, WorkloadInfo};
use crate::workloads::{GROUPS, Step};

pub struct Args {
    pub out: PathBuf,
    pub work_dir: PathBuf,
    pub quick: bool,
    pub seed: u64,
    pub order_seed: Option<u64>,
    pub engines: Option<Vec<String>>,
    pub command: String,
    /// Keep the data set here after the run (for running a child by hand,
    /// e.g. under a profiler), instead of in a temporary directory.
    pub keep_data: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = Config::new(args.quick, args.seed, cores);
    let engine_names: Vec<String> = match &args.engines {
        Some(list) => list.clone(),
        None => engines::names().iter().map(|s| s.to_string()).collect(),
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::create_dir_all(&args.work_dir)?;
    let loadavg_before = loadavg();

    // The data set, once, before any timer.
    let data_dir = args.keep_data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kv-bench-data-{}", std::process::id()))
    });
    std::fs::create_dir_all(&data_dir)?;
    eprintln!(
        "kv-bench: generating the data set in {}",
        data_dir.display()
    );
    let digest = data::generate(&c, &data_dir)?;
    std::fs::write(data_dir.join("config.json"), serde_json::to_vec(&c)?)?;

    let started_unix = started.duration_since(UNIX_EPOCH)?.as_secs();
    let order_seed = args.order_seed.unwrap_or(started_unix);
    let mut jobs: Vec<(String, &str)> = engine_names
        .iter()
        .flat_map(|e| GROUPS.iter().map(move |g| (e.clone(), *g)))
        .collect();
    Rng::new(order_seed).shuffle(&mut jobs);

    // Each figure with the index of the group that measured it, to sort by.
    let mut results: Vec<(usize, Measurement)> = Vec::new();
    let mut failures = Vec::new();
    for (n, (engine, group)) in jobs.iter().enumerate() {
        let group_index = GROUPS.iter().position(|g| g == group).unwrap_or(0);
        let dir = args.work_dir.join(format!("{engine}-{group}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let job_start = Instant::now();
        let steps: Vec<Step> = match *group {
            "reopen-clean" => vec![Step::ReopenPrepare, Step::ReopenOpen { clean: true }],
            "reopen-kill" => vec![Step::KillFill, Step::ReopenOpen { clean: false }],
            g => vec![Step::Group(g)],
        };
        for step in steps {
            let mut figures = Vec::new();
            let outcome = run_child(engine, step, &dir, &data_dir, &c, &mut figures);
            results.extend(figures.into_iter().map(|m| (group_index, m)));
            if let Err(e) = outcome {
                eprintln!("kv-bench: {engine} {}: {e:#}", step.name());
                failures.push(format!("{engine} {}: {e:#}", step.name()));
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "kv-bench: [{}/{}] {engine} {group}: {:.1} s",
            n + 1,
            jobs.len(),
            job_start.elapsed().as_secs_f64()
        );
    }
    if args.keep_data.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }

    // The report's rows in a fixed order, whatever order the processes ran
    // in: by workload, then by the group that measured it, then by engine;
    // within that, as measured.
    let workloads = workloads(&c);
    let position = |list: &[&str], x: &str| list.iter().position(|y| *y == x).unwrap_or(usize::MAX);
    let workload_ids: Vec<&str> = workloads.iter().map(|w| w.id.as_str()).collect();
    let engine_list: Vec<&str> = engine_names.iter().map(String::as_str).collect();
    results.sort_by_key(|(group, m)| {
        (
            position(&workload_ids, &m.workload),
            *group,
            position(&engine_list, &m.engine),
        )
    });
    let results: Vec<Measurement> = results.into_iter().map(|(_, m)| m).collect();

    let mut run = Run {
        schema: results::SCHEMA,
        command: args.command,
        quick: c.quick,
        started_unix,
        elapsed_secs: clock.elapsed().as_secs_f64(),
        kv_source: kv_source(),
        data_digest: format!("{digest:016x}"),
        order: jobs.iter().map(|(e, g)| format!("{e} {g}")).collect(),
        machine: machine(&args.work_dir, cores, loadavg_before),
        engines: engine_names
            .iter()
            .map(|name| {
                let (version, settings) = engines::describe(name, &c);
                EngineInfo {
                    name: name.clone(),
                    version,
                    settings,
                }
            })
            .collect(),
        workloads,
        config: c,
        results,
        charts: Vec::new(),
        failures,
    };
    run.charts = crate::charts::draw(&run, &args.out)?;
    let path = args.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&run)? + "\n")?;
    eprintln!(
        "kv-bench: {} figures in {:.0} s; wrote {}",
        run.results.len(),
        run.elapsed_secs,
        path.display()
    );
    if !run.failures.is_empty() {
        eprintln!("kv-bench: {} step(s) failed", run.failures.len());
    }
    Ok(())
}

/// Runs one child and collects its figures. A `KillFill` child is killed
/// with SIGKILL once half the keys are acknowledged.
fn run_child(
    engine: &str,
    step: Step,
    dir: &Path,
    data_dir: &Path,
    c: &Config,
    results: &mut Vec<Measurement>,
) -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["child", "--engine", engine, "--step", &step.name()])
        .arg("--dir")
        .arg(dir)
        .arg("--data")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a child")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(c.child_timeout_secs);
    let mut killed = false;
    let mut outcome = Ok(());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.context("reading a child's output")?;
                match serde_json::from_str::<Line>(&line)
                    .with_context(|| format!("a child printed {line:?}"))?
                {
                    Line::Result(m) => results.push(*m),
                    Line::Progress { done } => {
                        if step == Step::KillFill && !killed && done >= (c.keys / 2) as u64 {
                            child.kill()?;
                            killed = true;
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                child.kill()?;
                outcome = Err(anyhow::anyhow!(
                    "timed out after {} s",
                    c.child_timeout_secs
                ));
                break;
            }
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    outcome?;
    if step == Step::KillFill {
        anyhow::ensure!(killed, "the fill ended before it was killed ({status})");
    } else {
        anyhow::ensure!(status.success(), "the child failed ({status})");
    }
    Ok(())
}

/// The commit of the kv crates this binary was built from, and whether
/// they had uncommitted changes (the build uses the working tree).
fn kv_source() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let crates = [
        "kv-format",
        "kv-wal",
        "kv-log",
        "kv-index",
        "kv-compact",
        "kv-engine",
    ];
    let mut args = vec!["status", "--porcelain", "--"];
    args.extend(crates);
    match git(&args) {
        Some(changes) if changes.is_empty() => format!("commit {commit}"),
        Some(changes) => format!(
            "commit {commit} with uncommitted changes to {} file(s) of the kv crates",
            changes.lines().count()
        ),
        None => format!("commit {commit}"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine(work_dir: &Path, cores: usize, loadavg_before: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or_else(String::new, |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let output = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into()
    });
    let df = output(Command::new("df").arg("-hT").arg(work_dir)).unwrap_or_default();
    let disk_line = df.lines().last().unwrap_or_default().to_string();
    let rotational = disk_line
        .split_whitespace()
        .next()
        .and_then(|dev| dev.strip_prefix("/dev/"))
        .and_then(|dev| std::fs::read_to_string(format!("/sys/block/{dev}/queue/rotational")).ok())
        .map(|s| s.trim() == "1");
    Machine {
        cores,
        cpu_model,
        memory_bytes,
        kernel,
        disk: disk_line,
        rotational,
        loadavg_before,
        loadavg_after: loadavg(),
    }
}

fn workloads(c: &Config) -> Vec<WorkloadInfo> {
    let w = |id: &str, title: &str, about: String| WorkloadInfo {
        id: id.into(),
        title: title.into(),
        about,
    };
    vec![
        w(
            "fill",
            "Fill",
            format!(
                "Keys in random order into an empty database: batches of {} keys per commit, \
                 or one key per commit. Throughput counts keys. The 8-byte-key, 1 KiB-value \
                 shape is HaloDB's benchmark's. `buffered` includes the one final sync.",
                thousands(c.batch)
            ),
        ),
        w(
            "reads",
            "Random point reads",
            format!(
                "{} keys loaded, database closed and reopened, every key read once untimed \
                 (and checked byte for byte), then {} gets per case, keys drawn uniformly or \
                 Zipfian (θ = {}, scrambled as YCSB does). One get per operation, in its own \
                 read transaction where the engine has them; the value is read without a \
                 copy where the API allows.",
                thousands(c.keys),
                thousands(c.read_ops),
                c.zipf_theta
            ),
        ),
        w(
            "ycsb",
            "YCSB",
            format!(
                "YCSB core workloads on {} loaded keys (16 B keys, 100 B values; reopened \
                 after loading), {} operations each, on 1 client thread and then on {}, \
                 Zipfian θ = {} (D: latest), run in the order A, B, C, F, D on the same \
                 database; `buffered` (each update its own commit), one sync at the end \
                 inside the timer. Latency is over all operations.",
                thousands(c.keys),
                thousands(c.ycsb_ops),
                c.ycsb_threads,
                c.zipf_theta
            ),
        ),
        w(
            "synced",
            "Synced single puts (group commit)",
            format!(
                "Each put is one commit, durable when it returns (`sync`), into an empty \
                 database. Capped at {} puts per thread count so the run stays short; with \
                 8 threads each thread does 1/8 of them.",
                thousands(c.synced_puts)
            ),
        ),
        w(
            "space",
            "Space and write amplification",
            format!(
                "{} keys loaded, then every key overwritten {} times (batches of {}, \
                 `buffered`). Disk is allocated blocks under the database directory; space \
                 amplification is disk / live data ({} B per key); write amplification is \
                 bytes written to storage (/proc/self/io, whole process, from before open) \
                 per byte of keys and values written. Compaction is each engine's own, run \
                 to completion, where it has one.",
                thousands(c.keys),
                c.overwrite_passes,
                thousands(c.batch),
                c.key_len + c.value_len
            ),
        ),
        w(
            "reopen",
            "Reopen",
            format!(
                "Time to open a database of {} keys in a new process until it serves reads: \
                 after a clean close, and after the process was killed with SIGKILL halfway \
                 through a `sync` fill (batches of {}). The page cache is warm in both.",
                thousands(c.keys),
                thousands(c.batch)
            ),
        ),
        w(
            "memory",
            "Memory",
            "Peak resident set size (VmHWM) of each engine's process for each workload \
             group; it counts file pages mapped in (kv-engine and LMDB read through mmap) as \
             well as heap, and the data set and traces the harness holds in memory, the same \
             for every engine (the synced-puts row is close to that baseline). Index bytes \
             per key: kv-engine's growth in anonymous RSS across opening a database of all \
             keys and reading every key once (the open decodes the saved index shard by \
             shard as it is used), divided by the keys."
                .into(),
        ),
    ]
}
