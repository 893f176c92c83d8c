//! The sizes of a run, full or `--quick`. Written into the results so that
//! the report states them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub quick: bool,
    pub seed: u64,
    /// Keys loaded by the fill, read, YCSB, space and reopen workloads.
    pub keys: usize,
    pub key_len: usize,
    pub value_len: usize,
    /// Writes per commit in the batched fills and loads.
    pub batch: usize,
    /// Keys of the second fill shape (HaloDB's: 8-byte keys, 1 KiB values).
    pub big_keys: usize,
    pub big_key_len: usize,
    pub big_value_len: usize,
    /// Operations per read case (uniform or Zipfian, 1 or 2 threads).
    pub read_ops: usize,
    /// Operations per YCSB workload.
    pub ycsb_ops: usize,
    pub ycsb_threads: usize,
    /// Synced single puts per thread count (1 and 8 threads), in total.
    pub synced_puts: usize,
    /// How many times the space workload overwrites every key.
    pub overwrite_passes: usize,
    pub zipf_theta: f64,
    /// The cache budget given to every engine that has its own cache.
    pub cache_bytes: u64,
    /// The cap on every engine's background threads: the machine's cores.
    pub background_threads: usize,
    /// LMDB's map size (address space reserved, not disk used).
    pub lmdb_map_size: usize,
    /// Random bytes the values are cut from.
    pub value_pool_bytes: usize,
    /// A child running longer than this is killed and its results marked.
    pub child_timeout_secs: u64,
}

impl Config {
    pub fn new(quick: bool, seed: u64, cores: usize) -> Config {
        let full = Config {
            quick,
            seed,
            keys: 1_000_000,
            key_len: 16,
            value_len: 100,
            batch: 1_000,
            big_keys: 1_000_000,
            big_key_len: 8,
            big_value_len: 1024,
            read_ops: 2_000_000,
            ycsb_ops: 1_000_000,
            ycsb_threads: 2,
            synced_puts: 5_000,
            overwrite_passes: 3,
            zipf_theta: 0.99,
            cache_bytes: 256 << 20,
            background_threads: cores.max(1),
            lmdb_map_size: 8 << 30,
            value_pool_bytes: 64 << 20,
            child_timeout_secs: 900,
        };
        if !quick {
            return full;
        }
        Config {
            keys: 100_000,
            big_keys: 20_000,
            read_ops: 200_000,
            ycsb_ops: 100_000,
            synced_puts: 500,
            value_pool_bytes: 8 << 20,
            child_timeout_secs: 120,
            ..full
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1_000_000), "1,000,000");
    }
}
