//! The data set: seeded keys, a pool of random value bytes, and the
//! operation traces of the read and YCSB workloads.
//!
//! The coordinator writes every file once, before any engine runs; each
//! child loads them into memory before its timers start. So every engine
//! sees the same keys, the same values and the same operations in the same
//! order, and no timer covers generating them.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::config::Config;

/// xoshiro256**: small, fast, and the same sequence on every platform and
/// every version of this program (unlike a crate's `StdRng`).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded through splitmix64, as the xoshiro authors advise.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(x)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (n > 0); the bias of the multiply-shift is below
    /// 2^-32 for the sizes used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The splitmix64 finaliser: a bijection on `u64`, so distinct inputs give
/// distinct keys.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: YCSB's hash for scrambling Zipfian ranks, and the
/// digest of the data set files recorded in the results.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// YCSB's Zipfian generator (Gray et al., "Quickly generating
/// billion-record synthetic databases"), over `[0, n)` with rank 0 the
/// most popular. The item count may grow (`grow_to`), as YCSB's "latest"
/// distribution needs.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zeta2 = zeta(0, 2, theta, 0.0);
        let zetan = zeta(0, n, theta, 0.0);
        let mut z = Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            zetan,
            eta: 0.0,
        };
        z.eta = z.eta();
        z
    }

    fn eta(&self) -> f64 {
        (1.0 - (2.0 / self.n as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// Extends the item count to `n` (only grows), updating zeta
    /// incrementally as YCSB does.
    pub fn grow_to(&mut self, n: u64) {
        if n > self.n {
            self.zetan = zeta(self.n, n, self.theta, self.zetan);
            self.n = n;
            self.eta = self.eta();
        }
    }

    /// A rank in `[0, n)`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// A rank scattered over `[0, n)` by hashing, as YCSB's
    /// ScrambledZipfianGenerator does, so the popular items are not the
    /// first ones loaded.
    pub fn sample_scrambled(&self, rng: &mut Rng) -> u64 {
        fnv1a(&self.sample(rng).to_le_bytes()) % self.n
    }
}

/// `sum_{i=from+1}^{to} 1/i^theta`, added to `start`.
fn zeta(from: u64, to: u64, theta: f64, start: f64) -> f64 {
    let mut sum = start;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// One operation of a trace: a kind and a key index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read(u32),
    Update(u32),
    Insert(u32),
    ReadModifyWrite(u32),
}

impl Op {
    fn encode(self) -> u64 {
        let (kind, i) = match self {
            Op::Read(i) => (0u64, i),
            Op::Update(i) => (1, i),
            Op::Insert(i) => (2, i),
            Op::ReadModifyWrite(i) => (3, i),
        };
        kind << 32 | u64::from(i)
    }

    fn decode(word: u64) -> Result<Op> {
        let i = word as u32;
        Ok(match word >> 32 {
            0 => Op::Read(i),
            1 => Op::Update(i),
            2 => Op::Insert(i),
            3 => Op::ReadModifyWrite(i),
            k => anyhow::bail!("bad operation kind {k} in a trace"),
        })
    }
}

/// The YCSB core workloads run here (E, range scans, is not: a hash index
/// does not serve them).
pub const YCSB_WORKLOADS: [char; 5] = ['A', 'B', 'C', 'F', 'D'];

/// Names of the data set files in the data directory.
pub const KEYS_SMALL: &str = "keys-16.bin";
pub const KEYS_BIG: &str = "keys-8.bin";
pub const VALUES: &str = "values.bin";

pub fn trace_file(name: &str) -> String {
    format!("trace-{name}.bin")
}

/// The data set, in memory.
pub struct DataSet {
    /// `key_count_small()` keys of `key_len` bytes, back to back.
    pub keys_small: Vec<u8>,
    pub key_len: usize,
    /// `big_keys` keys of `big_key_len` bytes.
    pub keys_big: Vec<u8>,
    pub big_key_len: usize,
    /// Random bytes; a value is a slice of it (see `value`).
    pub pool: Vec<u8>,
}

impl DataSet {
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys_small[i * self.key_len..(i + 1) * self.key_len]
    }

    pub fn big_key(&self, i: usize) -> &[u8] {
        &self.keys_big[i * self.big_key_len..(i + 1) * self.big_key_len]
    }

    /// Version `version` of the value of key `i`: `len` random bytes from
    /// the pool, at an offset fixed by `(i, version)`. Computing it is one
    /// multiply-xorshift, the same for every engine.
    pub fn value(&self, i: usize, version: u64, len: usize) -> &[u8] {
        let span = (self.pool.len() - len) as u64;
        let at = (mix64((i as u64) << 8 ^ version) % span) as usize;
        &self.pool[at..at + len]
    }
}

/// How many 16-byte keys the data set holds: the loaded keys, the keys
/// YCSB D inserts, and the keys of the synced puts.
pub fn key_count_small(c: &Config) -> usize {
    c.keys + c.ycsb_ops + 2 * c.synced_puts
}

/// Writes every file of the data set into `dir` and returns a digest of
/// them all (FNV-1a of the file digests, in a fixed order).
pub fn generate(c: &Config, dir: &Path) -> Result<u64> {
    let mut digests = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        fs::write(dir.join(name), bytes).with_context(|| format!("writing {name}"))?;
        digests.extend_from_slice(&fnv1a(bytes).to_le_bytes());
        Ok(())
    };

    // Keys: a bijection of the index, so distinct and in random order (an
    // engine that likes sequential inserts gets no help). The 16-byte key
    // is two 8-byte words; the first alone is already unique.
    let mut keys = Vec::with_capacity(key_count_small(c) * c.key_len);
    for i in 0..key_count_small(c) as u64 {
        let a = mix64(c.seed ^ i).to_le_bytes();
        let b = mix64(!c.seed ^ i.rotate_left(17)).to_le_bytes();
        keys.extend(a.iter().chain(b.iter()).take(c.key_len));
    }
    write(KEYS_SMALL, &keys)?;
    let mut keys = Vec::with_capacity(c.big_keys * c.big_key_len);
    for i in 0..c.big_keys as u64 {
        keys.extend(mix64(c.seed.rotate_left(32) ^ i).to_le_bytes());
    }
    write(KEYS_BIG, &keys)?;

    // Values: random bytes, so incompressible.
    let mut rng = Rng::new(c.seed ^ 0x5641_4C55_4553);
    let mut pool = Vec::with_capacity(c.value_pool_bytes);
    while pool.len() < c.value_pool_bytes {
        pool.extend(rng.next_u64().to_le_bytes());
    }
    write(VALUES, &pool)?;

    for (name, ops) in traces(c) {
        let bytes: Vec<u8> = ops
            .iter()
            .flat_map(|op| op.encode().to_le_bytes())
            .collect();
        write(&trace_file(&name), &bytes)?;
    }
    Ok(fnv1a(&digests))
}

/// The operation traces: the uniform and Zipfian reads, and each YCSB
/// workload (proportions from YCSB's `workloads/workload[a-f]`).
fn traces(c: &Config) -> Vec<(String, Vec<Op>)> {
    let n = c.keys as u64;
    let mut rng = Rng::new(c.seed ^ 0x54_5241_4345);
    let zipf = Zipf::new(n, c.zipf_theta);
    let mut out = Vec::new();
    out.push((
        "reads-uniform".to_string(),
        (0..c.read_ops)
            .map(|_| Op::Read(rng.below(n) as u32))
            .collect(),
    ));
    out.push((
        "reads-zipf".to_string(),
        (0..c.read_ops)
            .map(|_| Op::Read(zipf.sample_scrambled(&mut rng) as u32))
            .collect(),
    ));
    for w in YCSB_WORKLOADS {
        let mut ops = Vec::with_capacity(c.ycsb_ops);
        // D: reads favour the latest inserts; inserts take fresh keys.
        let mut latest = Zipf::new(n, c.zipf_theta);
        let mut inserted = n;
        for _ in 0..c.ycsb_ops {
            let p = rng.next_f64();
            let op = match w {
                'A' if p < 0.5 => Op::Update(zipf.sample_scrambled(&mut rng) as u32),
                'B' if p < 0.05 => Op::Update(zipf.sample_scrambled(&mut rng) as u32),
                'F' if p < 0.5 => Op::ReadModifyWrite(zipf.sample_scrambled(&mut rng) as u32),
                'A' | 'B' | 'C' | 'F' => Op::Read(zipf.sample_scrambled(&mut rng) as u32),
                'D' if p < 0.05 => {
                    inserted += 1;
                    latest.grow_to(inserted);
                    Op::Insert((inserted - 1) as u32)
                }
                _ => Op::Read((inserted - 1 - latest.sample(&mut rng)) as u32),
            };
            ops.push(op);
        }
        out.push((format!("ycsb-{}", w.to_ascii_lowercase()), ops));
    }
    out
}

/// Loads the keys and the value pool.
pub fn load(c: &Config, dir: &Path) -> Result<DataSet> {
    let read = |name: &str| fs::read(dir.join(name)).with_context(|| format!("reading {name}"));
    let data = DataSet {
        keys_small: read(KEYS_SMALL)?,
        key_len: c.key_len,
        keys_big: read(KEYS_BIG)?,
        big_key_len: c.big_key_len,
        pool: read(VALUES)?,
    };
    ensure!(
        data.keys_small.len() == key_count_small(c) * c.key_len
            && data.keys_big.len() == c.big_keys * c.big_key_len
            && data.pool.len() > c.big_value_len.max(c.value_len),
        "the data set in {} does not match the configuration",
        dir.display()
    );
    Ok(data)
}

/// Loads one trace.
pub fn load_trace(dir: &Path, name: &str) -> Result<Vec<Op>> {
    let file = trace_file(name);
    let bytes = fs::read(dir.join(&file)).with_context(|| format!("reading {file}"))?;
    bytes
        .chunks_exact(8)
        .map(|w| Op::decode(u64::from_le_bytes(w.try_into().expect("8 bytes"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_stays_in_range_and_favours_low_ranks() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = Rng::new(7);
        let mut low = 0;
        for _ in 0..10_000 {
            let r = z.sample(&mut rng);
            assert!(r < 1000);
            if r < 10 {
                low += 1;
            }
        }
        // With theta 0.99 the top 1% of 1,000 items gets about 39% of draws.
        assert!((3_000..5_000).contains(&low), "{low}");
    }

    #[test]
    fn growing_zipf_matches_a_fresh_one() {
        let mut grown = Zipf::new(100, 0.99);
        grown.grow_to(5000);
        let fresh = Zipf::new(5000, 0.99);
        assert!((grown.zetan - fresh.zetan).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-9);
    }

    #[test]
    fn ops_round_trip() {
        for op in [
            Op::Read(0),
            Op::Update(7),
            Op::Insert(u32::MAX),
            Op::ReadModifyWrite(3),
        ] {
            assert_eq!(Op::decode(op.encode()).unwrap(), op);
        }
    }
}
