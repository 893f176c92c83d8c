//! Embeds the versions of the peer engines that Cargo.lock pins, so the
//! report names exactly what was measured.

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for name in [
        "fjall",
        "redb",
        "heed",
        "lmdb-master-sys",
        "rocksdb",
        "librocksdb-sys",
    ] {
        let version = lock
            .split("[[package]]")
            .find(|p| p.lines().any(|l| l.trim() == format!("name = \"{name}\"")))
            .and_then(|p| {
                p.lines()
                    .find_map(|l| l.trim().strip_prefix("version = \""))
                    .map(|v| v.trim_end_matches('"').to_string())
            })
            .unwrap_or_else(|| "?".into());
        let var = name.to_uppercase().replace('-', "_");
        println!("cargo:rustc-env=KV_BENCH_VERSION_{var}={version}");
    }
}
