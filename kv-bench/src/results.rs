//! The results: what a child prints (one JSON object a line) and the
//! `results.json` of a run, which `cargo xtask bench` renders into
//! report.md and BENCHMARKS.md. Bump `SCHEMA` when the shape changes; the
//! renderer in xtask reads the same fields.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::measure::Latency;

pub const SCHEMA: u32 = 1;

/// One figure of one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The workload's id (a table of the report).
    pub workload: String,
    /// The row of that table.
    pub case: String,
    pub engine: String,
    /// `sync` or `buffered`, where it matters.
    pub durability: Option<String>,
    /// `ops/s`, `s`, `bytes`, `x` (a ratio) or `bytes/key`.
    pub unit: String,
    /// `higher` or `lower`: which way is better.
    pub better: String,
    /// `None` when the engine cannot give the figure; `note` says why.
    pub value: Option<f64>,
    pub note: Option<String>,
    pub ops: Option<u64>,
    pub secs: Option<f64>,
    pub latency_ns: Option<Latency>,
}

impl Measurement {
    pub fn new(workload: &str, case: impl Into<String>, unit: &str, better: &str) -> Measurement {
        Measurement {
            workload: workload.into(),
            case: case.into(),
            engine: String::new(),
            durability: None,
            unit: unit.into(),
            better: better.into(),
            value: None,
            note: None,
            ops: None,
            secs: None,
            latency_ns: None,
        }
    }

    /// Throughput of `ops` operations in `secs` seconds.
    pub fn throughput(workload: &str, case: impl Into<String>, ops: u64, secs: f64) -> Measurement {
        Measurement {
            value: Some(ops as f64 / secs),
            ops: Some(ops),
            secs: Some(secs),
            ..Measurement::new(workload, case, "ops/s", "higher")
        }
    }

    pub fn durability(mut self, d: crate::engines::Durability) -> Measurement {
        self.durability = Some(d.label().into());
        self
    }

    pub fn latency(mut self, l: Latency) -> Measurement {
        self.latency_ns = Some(l);
        self
    }

    pub fn value(mut self, v: f64) -> Measurement {
        self.value = Some(v);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Measurement {
        self.note = Some(note.into());
        self
    }
}

/// A line of a child's standard output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Result(Box<Measurement>),
    /// Keys acknowledged so far by the fill that is killed.
    Progress {
        done: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub kernel: String,
    /// `df -hT` of the directory the databases were in.
    pub disk: String,
    /// Whether the block device says it is rotational, if it says.
    pub rotational: Option<bool>,
    /// /proc/loadavg before and after the run.
    pub loadavg_before: String,
    pub loadavg_after: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
    pub settings: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub id: String,
    pub title: String,
    pub about: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chart {
    pub file: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub schema: u32,
    /// The command that produced this run, as typed.
    pub command: String,
    pub quick: bool,
    /// Seconds since the Unix epoch when the run began.
    pub started_unix: u64,
    pub elapsed_secs: f64,
    /// Which kv-engine was measured: the repository's commit, and whether
    /// the kv crates had uncommitted changes.
    pub kv_source: String,
    /// FNV-1a digest of the data set files, in hex: equal digests, equal data.
    pub data_digest: String,
    /// The order the (engine, workload group) processes ran in.
    pub order: Vec<String>,
    pub machine: Machine,
    pub config: Config,
    pub engines: Vec<EngineInfo>,
    pub workloads: Vec<WorkloadInfo>,
    pub results: Vec<Measurement>,
    pub charts: Vec<Chart>,
    /// Children that failed or timed out; their figures are missing.
    pub failures: Vec<String>,
}
