//! Tidy checks, run with xtask's tests: the layering rules of
//! ARCHITECTURE.md that a look at the sources can check.

use std::fs;
use std::path::{Path, PathBuf};

use crate::root;

/// The crates whose sources must leave renames to kv-fs.
const CRATES: [&str; 7] = [
    "kv-format",
    "kv-wal",
    "kv-log",
    "kv-index",
    "kv-compact",
    "kv-engine",
    "kv-cli",
];

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Outside kv-fs, no code renames a file or a directory itself: it goes
/// through `kv_fs::rename`, `create_atomically` or `rename_into_place`,
/// which check the fault seam and leave the directory sync to no one's
/// memory.
#[test]
fn only_kv_fs_renames() {
    let root = root();
    let mut found = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        sources(&root.join(krate).join("src"), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.replace("kv_fs::rename(", "").contains("rename(") {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "renames outside kv-fs:\n{}",
        found.join("\n")
    );
}

/// kv-fs depends on no kv crate; kv-wal and kv-index on none but kv-fs.
#[test]
fn the_leaf_crates_depend_on_no_other_kv_crate() {
    for (krate, allowed) in [
        ("kv-fs", &[][..]),
        ("kv-wal", &["kv-fs"][..]),
        ("kv-index", &["kv-fs"][..]),
    ] {
        let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let mut section = "";
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let normal = section == "[dependencies]"
                || (section.starts_with("[target.") && section.ends_with(".dependencies]"));
            let name = line.split(['=', ' ', '.']).next().unwrap_or("");
            if normal && name.starts_with("kv-") {
                assert!(
                    allowed.contains(&name),
                    "{krate} depends on {name}: it may depend on {allowed:?} only"
                );
            }
        }
    }
}
