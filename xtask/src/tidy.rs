//! Tidy checks of the source tree, as `#[test]`s (rust-analyzer's
//! `xtask/src/tidy.rs` does the same): what the house rules say and a
//! reviewer would otherwise have to remember. They read files only, and
//! run with `cargo test --workspace` and `cargo xtask tidy`.
//!
//! - every module starts with a `//!` doc comment;
//! - no comment narrates the project's history by issue number;
//! - every file name the storage crates put on disk is in the table at the
//!   top of docs/format.md;
//! - no code outside kv-fs renames a file or syncs a directory: the atomic
//!   file write and its failure rule exist once;
//! - kv-fs depends on no kv crate, kv-wal and kv-index on none but kv-fs.

use std::fs;
use std::path::{Path, PathBuf};

/// The crates of the root workspace, whose `src/` these checks read.
const CRATES: [&str; 9] = [
    "kv-fs",
    "kv-format",
    "kv-wal",
    "kv-log",
    "kv-index",
    "kv-compact",
    "kv-engine",
    "kv-cli",
    "xtask",
];

/// The crates that name files on disk.
const STORAGE_CRATES: [&str; 4] = ["kv-fs", "kv-wal", "kv-log", "kv-engine"];

fn root() -> PathBuf {
    crate::root()
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `src/` files of `crates`, with their text.
fn sources(crates: &[&str]) -> Vec<(PathBuf, String)> {
    let root = root();
    let files: Vec<PathBuf> = crates
        .iter()
        .flat_map(|c| rust_files(&root.join(c).join("src")))
        .collect();
    assert!(
        !files.is_empty(),
        "no sources found under {}",
        root.display()
    );
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, text)
        })
        .collect()
}

/// Fails the test with every problem found, one per line.
fn report(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let problems: Vec<String> = sources(&CRATES)
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    report(
        "these modules do not start with a `//!` line saying what they own",
        &problems,
    );
}

#[test]
fn no_comment_narrates_history_by_issue_number() {
    let mut problems = Vec::new();
    for (path, text) in sources(&CRATES) {
        if path.ends_with("xtask/src/tidy.rs") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let Some(comment) = line.find("//").map(|i| &line[i..]) else {
                continue;
            };
            let lower = comment.to_ascii_lowercase();
            if let Some(i) = lower.find("issue ")
                && lower[i + 6..].starts_with(|c: char| c.is_ascii_digit())
            {
                problems.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    report(
        "comments name issue numbers (history belongs in commit messages)",
        &problems,
    );
}

/// The string literals of one line of code (comments cut off).
fn literals(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.split('"').skip(1).step_by(2).collect()
}

/// A literal that names a file extension, alone (`".seg"`) or after a
/// formatted number (`"{id:010}.hint"`): the extension, or `None`.
fn extension(literal: &str) -> Option<&str> {
    let tail = literal.rsplit('}').next().unwrap_or(literal);
    let ext = tail.strip_prefix('.')?;
    let plain = !ext.is_empty()
        && ext.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        });
    plain.then_some(ext)
}

/// The names and suffixes of files the storage crates create, as their
/// non-test sources spell them: `const …_NAME/_SUFFIX/_EXTENSION/_INFIX:
/// &str`, `with_extension("…")`, and every literal that is an extension
/// (`".seg"`, `"{id:010}.hint"`).
fn on_disk_names() -> Vec<(String, String)> {
    let mut names = Vec::new();
    for (path, text) in sources(&STORAGE_CRATES) {
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let at = format!("{}:{}", path.display(), n + 1);
            let named = line.contains("const ")
                && ["_NAME:", "_SUFFIX:", "_EXTENSION:", "_INFIX:"]
                    .iter()
                    .any(|s| line.contains(s));
            let extension_call = line.contains("with_extension(\"");
            for literal in literals(line) {
                let name = if named || extension_call {
                    Some(literal.trim_start_matches('.'))
                } else {
                    extension(literal)
                };
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    names.push((name.to_string(), at.clone()));
                }
            }
        }
    }
    names
}

#[test]
fn every_file_name_on_disk_is_in_the_format_table() {
    let format = fs::read_to_string(root().join("docs/format.md")).expect("docs/format.md");
    // The table of files and what follows it, up to the first format.
    let table = &format[..format.find("\n## ").expect("docs/format.md has sections")];
    let names = on_disk_names();
    for expected in [
        "LOCK",
        "CHECKPOINT",
        "seg",
        "hint",
        "wal",
        "seg.tmp",
        "wal.tmp",
    ] {
        assert!(
            names.iter().any(|(n, _)| n == expected),
            "the scan of the sources no longer finds {expected:?}: fix on_disk_names"
        );
    }
    let problems: Vec<String> = names
        .into_iter()
        .filter(|(name, _)| !table.contains(name.as_str()))
        .map(|(name, at)| format!("{name:?} ({at})"))
        .collect();
    report(
        "file names put on disk but missing from the table at the top of docs/format.md",
        &problems,
    );
}

#[test]
fn only_kv_fs_renames_files_or_syncs_directories() {
    let crates: Vec<&str> = CRATES
        .iter()
        .copied()
        .filter(|c| *c != "kv-fs" && *c != "xtask")
        .collect();
    let mut problems = Vec::new();
    for (path, text) in sources(&crates) {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let renames = code.replace("kv_fs::rename(", "").contains("rename(");
            // A `sync_dir` of a crate's own may only map kv-fs's errors.
            let own_sync_dir = code.contains("fn sync_dir")
                && !lines[n..lines.len().min(n + 4)]
                    .iter()
                    .any(|l| l.contains("kv_fs::sync_dir("));
            if renames || own_sync_dir {
                problems.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    report(
        "renames and directory syncs belong in kv-fs (create_atomically, rename, sync_dir)",
        &problems,
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
