//! `cargo xtask bench-server`: kv-server against redis-server, measured by
//! `redis-benchmark` (a tool nobody here wrote), on this machine.
//!
//! For each durability pairing (kv `--sync interval:1s` beside Redis
//! `appendonly yes` + `appendfsync everysec`; kv `--sync always` beside
//! `appendfsync always`) and each pipeline depth (`-P 1`, `-P 16`), it runs
//! `redis-benchmark -t ping,set,get,incr,mset -n N -c 50 --csv` against a
//! fresh kv-server and a fresh redis-server, `--runs` times, alternating the
//! two, and reports the median requests per second (with the range of the
//! runs), kv ÷ Redis, and the median p50 and p99 latencies. Installs
//! `redis-tools` and `redis-server` with apt-get where missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const BEGIN: &str = "<!-- BEGIN SERVER by `cargo xtask bench-server --update-benchmarks-md`: do not edit by hand -->";
const END: &str = "<!-- END SERVER -->";

/// One `redis-benchmark` row: a test's throughput and latencies.
#[derive(Debug, Clone)]
struct Row {
    test: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Options {
    requests: u64,
    runs: usize,
    update: bool,
}

pub(crate) fn run(args: &[String], root: &Path) -> Result<()> {
    let mut options = Options {
        requests: 200_000,
        runs: 3,
        update: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" => {
                options.requests = args
                    .next()
                    .context("--requests needs a number")?
                    .parse()
                    .context("--requests needs a number")?;
            }
            "--runs" => {
                options.runs = args
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
            }
            "--update-benchmarks-md" => options.update = true,
            other => bail!("unknown flag {other:?} for bench-server"),
        }
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    install_redis()?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "kv-server"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p kv-server failed");
    }
    let kv_bin = root.join("target/release/kv-server");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report_dir = root.join(format!("target/bench-report/server-{stamp}"));
    std::fs::create_dir_all(&report_dir)?;

    let mut md = String::new();
    md.push_str(&format!(
        "`redis-benchmark -t ping,set,get,incr,mset -n {} -c 50 -P 1|16 --csv` against \
         kv-server and redis-server (`appendonly yes`), each fresh, on the same machine, \
         {} runs each, alternating; medians, with the range of the runs. Machine: {}. \
         redis-server: {}.\n\n",
        options.requests,
        options.runs,
        machine(),
        redis_version()
    ));
    for (kv_sync, appendfsync) in [("interval:1s", "everysec"), ("always", "always")] {
        md.push_str(&format!(
            "### kv `--sync {kv_sync}` beside Redis `appendfsync {appendfsync}`\n\n\
             | test | pipeline | kv req/s | Redis req/s | kv ÷ Redis | kv p50 / p99 ms | Redis p50 / p99 ms |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        ));
        for pipeline in [1, 16] {
            let mut kv_runs = Vec::new();
            let mut redis_runs = Vec::new();
            for run in 0..options.runs {
                eprintln!(
                    "bench-server: {kv_sync}/{appendfsync}, -P {pipeline}, run {} of {}",
                    run + 1,
                    options.runs
                );
                let rows = with_kv(&kv_bin, kv_sync, |port| {
                    benchmark(port, options.requests, pipeline)
                })?;
                save(
                    &report_dir,
                    &format!("kv-{kv_sync}-P{pipeline}-{run}"),
                    &rows,
                )?;
                kv_runs.push(rows);
                let rows = with_redis(appendfsync, |port| {
                    benchmark(port, options.requests, pipeline)
                })?;
                save(
                    &report_dir,
                    &format!("redis-{appendfsync}-P{pipeline}-{run}"),
                    &rows,
                )?;
                redis_runs.push(rows);
            }
            for test in kv_runs[0].iter().map(|r| r.test.clone()) {
                let kv = summary(&kv_runs, &test);
                let redis = summary(&redis_runs, &test);
                let (Some(kv), Some(redis)) = (kv, redis) else {
                    continue;
                };
                md.push_str(&format!(
                    "| {test} | {pipeline} | {} ({}–{}) | {} ({}–{}) | {:.2}× | {:.3} / {:.3} | {:.3} / {:.3} |\n",
                    human(kv.rps),
                    human(kv.rps_min),
                    human(kv.rps_max),
                    human(redis.rps),
                    human(redis.rps_min),
                    human(redis.rps_max),
                    kv.rps / redis.rps,
                    kv.p50,
                    kv.p99,
                    redis.p50,
                    redis.p99,
                ));
            }
        }
        md.push('\n');
    }
    let report = report_dir.join("report.md");
    std::fs::write(&report, &md)?;
    println!("{md}");
    eprintln!("bench-server: wrote {}", report.display());
    if options.update {
        let path = root.join("BENCHMARKS.md");
        let text = std::fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
        let section = format!("{BEGIN}\n\n{md}{END}");
        let updated = match (text.find(BEGIN), text.find(END)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{section}{}", &text[..a], &text[b + END.len()..])
            }
            _ => format!(
                "{}\n## kv-server against redis-server\n\n{section}\n",
                text.trim_end()
            ),
        };
        std::fs::write(&path, updated)?;
        eprintln!("bench-server: updated BENCHMARKS.md");
    }
    Ok(())
}

struct Summary {
    rps: f64,
    rps_min: f64,
    rps_max: f64,
    p50: f64,
    p99: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary(runs: &[Vec<Row>], test: &str) -> Option<Summary> {
    let rows: Vec<&Row> = runs
        .iter()
        .filter_map(|r| r.iter().find(|row| row.test == test))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let rps: Vec<f64> = rows.iter().map(|r| r.rps).collect();
    Some(Summary {
        rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
        rps_max: rps.iter().copied().fold(0.0, f64::max),
        rps: median(rps),
        p50: median(rows.iter().map(|r| r.p50_ms).collect()),
        p99: median(rows.iter().map(|r| r.p99_ms).collect()),
    })
}

fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn save(dir: &Path, name: &str, rows: &[Row]) -> Result<()> {
    let mut text = String::from("test,rps,p50_ms,p99_ms\n");
    for r in rows {
        text.push_str(&format!("{},{},{},{}\n", r.test, r.rps, r.p50_ms, r.p99_ms));
    }
    std::fs::write(dir.join(format!("{name}.csv")), text)?;
    Ok(())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_redis() -> Result<()> {
    if have("redis-benchmark") && have("redis-server") {
        return Ok(());
    }
    eprintln!("bench-server: installing redis-tools and redis-server with apt-get");
    let sudo = if Command::new("id").arg("-u").output()?.stdout.trim_ascii() == b"0" {
        ""
    } else {
        "sudo "
    };
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "{sudo}apt-get update -q && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -q redis-tools redis-server"
            ),
        ])
        .status()?;
    if !status.success() || !have("redis-benchmark") || !have("redis-server") {
        bail!("could not install redis-tools and redis-server with apt-get");
    }
    Ok(())
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} cores, loopback TCP, client and server on the same cores")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the server on `port` answers PING (20 s at most).
fn wait_ready(port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut reply = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited before it answered: {status}");
        }
        if Instant::now() > deadline {
            bail!("the server on port {port} did not answer PING within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kv-bench-server-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn with_kv<T>(bin: &Path, sync: &str, f: impl FnOnce(u16) -> Result<T>) -> Result<T> {
    let dir = scratch("kv")?;
    let port = free_port()?;
    let mut child = Command::new(bin)
        .arg("--dir")
        .arg(dir.join("db"))
        .args(["--port", &port.to_string(), "--sync", sync])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kv-server")?;
    let result = wait_ready(port, &mut child).and_then(|()| f(port));
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn with_redis<T>(appendfsync: &str, f: impl FnOnce(u16) -> Result<T>) -> Result<T> {
    let dir = scratch("redis")?;
    let port = free_port()?;
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let result = wait_ready(port, &mut child).and_then(|()| f(port));
    stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs redis-benchmark against `port` and parses its CSV.
fn benchmark(port: u16, requests: u64, pipeline: u32) -> Result<Vec<Row>> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-P",
            &pipeline.to_string(),
            "--csv",
        ])
        .output()
        .context("running redis-benchmark")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_csv(&String::from_utf8_lossy(&out.stdout))
}

fn parse_csv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .context("redis-benchmark printed nothing")?
        .split(',')
        .map(|f| f.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(t), Some(rps), Some(p50), Some(p99)) = (
        col("test"),
        col("rps"),
        col("p50_latency_ms"),
        col("p99_latency_ms"),
    ) else {
        bail!("redis-benchmark's CSV lacks test, rps, p50 or p99: {header:?}");
    };
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        let num = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .context("a short CSV line")?
                .parse()
                .with_context(|| format!("a bad number in {line:?}"))
        };
        rows.push(Row {
            test: fields.get(t).context("a short CSV line")?.to_string(),
            rps: num(rps)?,
            p50_ms: num(p50)?,
            p99_ms: num(p99)?,
        });
    }
    Ok(rows)
}
