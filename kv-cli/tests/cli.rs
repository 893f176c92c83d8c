//! End-to-end tests that run the `kv` binary.

use std::path::Path;
use std::process::{Command, Output};

fn kv(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KV_DIR")
        .output()
        .expect("run kv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn put_get_delete_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    assert!(kv(&db, &["put", "apple", "red"]).status.success());
    assert!(kv(&db, &["put", "banana", "yellow"]).status.success());
    let got = kv(&db, &["get", "apple"]);
    assert_eq!(got.status.code(), Some(0));
    assert_eq!(stdout(&got), "red\n");

    let mut keys: Vec<_> = stdout(&kv(&db, &["keys"]))
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    assert_eq!(keys, ["apple", "banana"]);

    assert!(kv(&db, &["delete", "apple"]).status.success());
    let missing = kv(&db, &["get", "apple"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    // Deleting an absent key succeeds.
    assert!(kv(&db, &["delete", "apple"]).status.success());
}

#[test]
fn kv_dir_environment_variable_selects_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["put", "k", "v"])
        .env("KV_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&kv(dir.path(), &["get", "k"])), "v\n");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(kv(dir.path(), &["put", "only-key"]).status.code(), Some(2));
    assert_eq!(kv(dir.path(), &["frobnicate"]).status.code(), Some(2));
    let help = kv(dir.path(), &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes"));
}

#[test]
fn bad_input_is_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = kv(dir.path(), &["put", "", "v"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("key is empty"), "{err}");
}

#[test]
fn a_database_held_open_elsewhere_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let held = kv_engine::Db::open(dir.path()).unwrap();
    let out = kv(dir.path(), &["get", "k"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
    drop(held);
    assert_eq!(kv(dir.path(), &["get", "k"]).status.code(), Some(1));
}

#[test]
fn corruption_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    assert!(kv(dir.path(), &["put", "k", "v"]).status.success());
    // Damage the segment header: the database cannot be read.
    let seg = dir.path().join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    let out = kv(dir.path(), &["get", "k"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
