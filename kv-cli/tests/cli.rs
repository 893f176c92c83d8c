//! End-to-end tests that run the `kv` binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kv"));
    c.arg("--dir").arg(dir).args(args).env_remove("KV_DIR");
    c
}

fn kv(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run kv")
}

/// Runs kv with `input` on stdin.
fn kv_in(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kv");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread, so a child that fills its stdout pipe
    // before reading all of stdin cannot deadlock the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it is not the one expected.
#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
}

/// Asserts a failure reported as exactly one line on stderr that says
/// `what`.
#[track_caller]
fn assert_one_line_error(o: &Output, code: i32, what: &str) {
    assert_code(o, code);
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kv: "), "{err}");
    assert!(err.contains(what), "{err:?} does not say {what:?}");
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<_> = s.lines().map(String::from).collect();
    v.sort();
    v
}

/// A small deterministic generator (xorshift64*), so that failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.next() % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// `n` random binary records with distinct keys of 1 to 24 bytes (each
/// starting with a tab, newline or non-UTF-8 byte often enough to matter).
fn random_records(seed: u64, n: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut rng = Rng(seed);
    let mut records = BTreeMap::new();
    while records.len() < n {
        let mut key = rng.bytes(23);
        key.push(rng.next() as u8);
        let value = rng.bytes(64);
        records.insert(key, value);
    }
    records
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn encode(bytes: &[u8], encoding: &str) -> String {
    match encoding {
        "hex" => hex(bytes),
        "base64" => BASE64.encode(bytes),
        "utf8" => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("{other}"),
    }
}

fn decode(text: &str, encoding: &str) -> Vec<u8> {
    match encoding {
        "hex" => unhex(text),
        "base64" => BASE64.decode(text).unwrap(),
        other => panic!("{other}"),
    }
}

/// The record lines of an export: all but its header and trailer, which
/// must be there.
fn export_records(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let (first, last) = (lines.first().unwrap(), lines.last().unwrap());
    assert!(
        *first == r#"{"kv_export":1}"# || *first == "#kv-export 1",
        "no export header: {first}"
    );
    assert!(
        last.starts_with(r#"{"kv_export_end":"#) || last.starts_with("#kv-export-end "),
        "no export trailer: {last}"
    );
    lines[1..lines.len() - 1].to_vec()
}

/// Parses an export in hex or base64 back into records.
fn parse_export(text: &str, format: &str, encoding: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    export_records(text)
        .into_iter()
        .map(|line| match format {
            "jsonl" => {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    decode(v["key"].as_str().unwrap(), encoding),
                    decode(v["value"].as_str().unwrap(), encoding),
                )
            }
            "tsv" => {
                let (k, v) = line.split_once('\t').unwrap();
                (decode(k, encoding), decode(v, encoding))
            }
            other => panic!("{other}"),
        })
        .collect()
}

fn write_import(records: &BTreeMap<Vec<u8>, Vec<u8>>, format: &str, encoding: &str) -> String {
    let mut text = String::new();
    for (k, v) in records {
        let (k, v) = (encode(k, encoding), encode(v, encoding));
        match format {
            "jsonl" => text.push_str(&format!("{}\n", serde_json::json!({"key": k, "value": v}))),
            "tsv" => text.push_str(&format!("{k}\t{v}\n")),
            other => panic!("{other}"),
        }
    }
    text
}

/// The database's content, read through `kv export` in hex.
fn content(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let out = kv(dir, &["export", "--encoding", "hex"]);
    assert_code(&out, 0);
    parse_export(&stdout(&out), "jsonl", "hex")
}

#[test]
fn put_get_delete_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    assert_code(&kv(&db, &["put", "apple", "red"]), 0);
    assert_code(&kv(&db, &["put", "banana", "yellow"]), 0);
    let got = kv(&db, &["get", "apple"]);
    assert_code(&got, 0);
    assert_eq!(stdout(&got), "red\n");
    assert_eq!(
        sorted_lines(&stdout(&kv(&db, &["keys"]))),
        ["apple", "banana"]
    );

    assert_code(&kv(&db, &["delete", "apple"]), 0);
    let missing = kv(&db, &["get", "apple"]);
    assert_one_line_error(&missing, 1, "not found");
    assert!(missing.stdout.is_empty());
    // Deleting an absent key succeeds.
    assert_code(&kv(&db, &["delete", "apple"]), 0);
}

#[test]
fn kv_dir_environment_variable_selects_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["put", "k", "v"])
        .env("KV_DIR", dir.path())
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&kv(dir.path(), &["get", "k"])), "v\n");
}

#[test]
fn every_subcommand_has_help_with_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "put", "get", "delete", "keys", "scan", "count", "compact", "verify", "import", "export",
        "shell",
    ] {
        let help = kv(dir.path(), &[sub, "--help"]);
        assert_code(&help, 0);
        let text = stdout(&help);
        assert!(text.contains("Exit codes"), "{sub}: {text}");
        assert!(text.contains("5  the database is locked"), "{sub}: {text}");
    }
    let scan = stdout(&kv(dir.path(), &["scan", "--help"]));
    assert!(scan.contains("linear scan"), "{scan}");
    let help = kv(dir.path(), &["--help"]);
    assert_code(&help, 0);
    assert!(stdout(&help).contains("4  the database is corrupt"));
    // Nothing was created by asking for help.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["help", "--help"][..],
        &["help", "-h"],
        &["help"],
        &["help", "put"],
    ] {
        let out = kv(dir.path(), args);
        assert_code(&out, 0);
        assert!(
            stdout(&out).contains("Usage: kv"),
            "{args:?}: {}",
            stdout(&out)
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
    for flag in ["--version", "-V"] {
        let out = kv(dir.path(), &[flag]);
        assert_code(&out, 0);
        let text = stdout(&out);
        assert!(text.starts_with("kv 0."), "{text}");
        assert!(text.contains("(commit "), "{text}");
        assert!(text.contains("record format 2, segment format 2"), "{text}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn completions_and_the_man_page_print_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kv"),
        ("fish", "complete -c kv"),
    ] {
        let out = kv(&db, &["completions", shell]);
        assert_code(&out, 0);
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {text}");
        // Every command is offered.
        for command in ["put", "get", "verify", "checkpoint", "completions", "man"] {
            assert!(text.contains(command), "{shell} lacks {command}");
        }
    }
    let man = kv(&db, &["man"]);
    assert_code(&man, 0);
    let page = stdout(&man);
    assert!(page.starts_with(".ie") || page.contains(".TH kv"), "{page}");
    assert!(
        page.contains("checkpoint") && page.contains("KV_DIR"),
        "{page}"
    );
    // kv(1) refers to kv-put(1) and the others: each has its page.
    assert!(page.contains("kv\\-put(1)"), "{page}");
    let put = stdout(&kv(&db, &["man", "put"]));
    assert!(put.contains(".TH kv-put 1"), "{put}");
    assert!(put.contains("value\\-file"), "{put}");
    assert_code(&kv(&db, &["man", "nosuch"]), 2);
    let bad = kv(&db, &["completions", "tcsh"]);
    assert_code(&bad, 2);
    // In the shell they are refused, and the shell goes on.
    let shell = kv_in(&db, &["shell"], b"man\nput a 1\nget a\n");
    assert!(stdout(&shell).contains('1'), "{}", stdout(&shell));
    assert!(
        stderr(&shell).contains("not the shell"),
        "{}",
        stderr(&shell)
    );
    // Nothing was created for the printing commands; the shell made the
    // database.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // clap's errors too are one line, with the usage in it.
    assert_one_line_error(&kv(dir.path(), &["put", "only-key"]), 2, "<VALUE>");
    assert_one_line_error(&kv(dir.path(), &["put", "only-key"]), 2, "usage: kv put");
    assert_one_line_error(&kv(dir.path(), &["frobnicate"]), 2, "'frobnicate'");
    assert_one_line_error(&kv(dir.path(), &["--bogus"]), 2, "'--bogus'");
    // A bare `kv` shows the whole help on stderr; with --dir but no
    // command, one line lists the commands.
    let bare = Command::new(env!("CARGO_BIN_EXE_kv"))
        .current_dir(dir.path())
        .env_remove("KV_DIR")
        .output()
        .unwrap();
    assert_code(&bare, 2);
    assert!(stderr(&bare).contains("Commands:"), "{}", stderr(&bare));
    assert_one_line_error(&kv(dir.path(), &[]), 2, "subcommands: put, get");
    assert_one_line_error(&kv(dir.path(), &["keys", "--limit", "many"]), 2, "many");
    assert_one_line_error(&kv(dir.path(), &["import", "--format", "xml"]), 2, "xml");
    // A KEY that is not valid in its encoding.
    assert_one_line_error(&kv(dir.path(), &["get", "-e", "hex", "xyz"]), 2, "hex");
    assert_one_line_error(
        &kv(dir.path(), &["put", "-e", "base64", "k", "!"]),
        2,
        "base64",
    );
}

#[test]
fn encodings_carry_binary_keys_and_values_through_arguments() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(
        &kv(dir.path(), &["put", "-e", "hex", "00ff09", "0a0d00"]),
        0,
    );
    let got = kv(dir.path(), &["get", "-e", "hex", "00ff09"]);
    assert_eq!(stdout(&got), "0a0d00\n");
    let got = kv(dir.path(), &["get", "-e", "base64", "AP8J"]);
    assert_eq!(stdout(&got), "Cg0A\n");
    // To a pipe, utf8 output is the raw bytes.
    let keys = kv(dir.path(), &["keys"]);
    assert_eq!(keys.stdout, b"\x00\xff\x09\n");
    assert_eq!(stdout(&kv(dir.path(), &["keys", "-e", "hex"])), "00ff09\n");
}

#[test]
fn keys_and_scan_filter_by_prefix_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut import = String::new();
    for i in 0..20 {
        import.push_str(&format!("user:{i:02}\tname {i}\n"));
        import.push_str(&format!("order:{i:02}\t{}\n", i * 10));
    }
    assert_code(
        &kv_in(
            dir.path(),
            &["import", "--format", "tsv"],
            import.as_bytes(),
        ),
        0,
    );
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "40\n");

    let users = sorted_lines(&stdout(&kv(dir.path(), &["keys", "--prefix", "user:"])));
    assert_eq!(users.len(), 20);
    assert!(users.iter().all(|k| k.starts_with("user:")));
    assert_eq!(
        stdout(&kv(
            dir.path(),
            &["keys", "--prefix", "order:", "--limit", "5"]
        ))
        .lines()
        .count(),
        5
    );
    assert_eq!(stdout(&kv(dir.path(), &["keys", "--limit", "0"])), "");

    // count and export take --prefix too.
    assert_eq!(
        stdout(&kv(dir.path(), &["count", "--prefix", "user:1"])),
        "10\n"
    );
    assert_eq!(stdout(&kv(dir.path(), &["count", "-p", "nosuch"])), "0\n");
    assert_eq!(
        stdout(&kv(dir.path(), &["count", "-e", "hex", "-p", "757365723a"])),
        "20\n",
        "a hex prefix (user:)"
    );
    let exported = kv(
        dir.path(),
        &["export", "--format", "tsv", "--prefix", "order:0"],
    );
    assert_code(&exported, 0);
    let lines = sorted_lines(&export_records(&stdout(&exported)).join("\n"));
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l.starts_with("order:0")), "{lines:?}");
    assert_eq!(lines[2], "order:02\t20");
    assert_code(&kv(dir.path(), &["count", "-e", "hex", "-p", "zz"]), 2);

    let scan = kv(dir.path(), &["scan", "--prefix", "user:1"]);
    assert_code(&scan, 0);
    let lines = sorted_lines(&stdout(&scan));
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[3], "user:13\tname 13");
    assert_eq!(
        stdout(&kv(dir.path(), &["scan", "-n", "3"]))
            .lines()
            .count(),
        3
    );
    // Raw to a pipe: a binary value comes out as its bytes.
    assert_code(&kv(dir.path(), &["put", "-e", "hex", "ff", "00010a"]), 0);
    let all = kv(dir.path(), &["scan"]);
    assert!(all.stdout.windows(6).any(|w| w == b"\xff\t\x00\x01\n\n"));
}

#[test]
fn count_compact_and_verify_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut import = String::new();
    for round in 0..3 {
        for i in 0..500 {
            import.push_str(&format!("key{i}\tvalue {i} round {round}\n"));
        }
    }
    assert_code(
        &kv_in(dir.path(), &["import", "-f", "tsv"], import.as_bytes()),
        0,
    );
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "500\n");
    let compact = kv(dir.path(), &["compact"]);
    assert_code(&compact, 0);
    let report = stdout(&compact);
    assert!(report.contains("compacted 1 segment in 1 run"), "{report}");
    assert!(report.contains("1000 dropped"), "{report}");
    // Piped: no progress drawing on stderr.
    assert!(compact.stderr.is_empty(), "{}", stderr(&compact));
    assert_eq!(
        stdout(&kv(dir.path(), &["get", "key7"])),
        "value 7 round 2\n"
    );

    let verify = kv(dir.path(), &["verify"]);
    assert_code(&verify, 0);
    let text = stdout(&verify);
    assert!(text.contains(": 0 problems, 0 warnings"), "{text}");
    assert!(text.contains("500 in segments"), "{text}");
}

#[test]
fn verify_reports_a_flipped_byte_with_its_file_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        assert_code(&kv(dir.path(), &["put", &format!("k{i}"), "some value"]), 0);
    }
    let seg = dir.path().join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x08;
    std::fs::write(&seg, &bytes).unwrap();
    let files_before = snapshot(dir.path());

    let out = kv(dir.path(), &["verify"]);
    assert_code(&out, 4);
    let text = stdout(&out);
    let problems: Vec<_> = text.lines().filter(|l| l.starts_with("problem:")).collect();
    assert_eq!(problems.len(), 1, "{text}");
    assert!(problems[0].contains(&seg.display().to_string()), "{text}");
    assert!(problems[0].contains("at offset"), "{text}");
    assert_one_line_error(&out, 4, "damaged");
    // verify changed nothing, not even the torn-looking tail.
    assert_eq!(snapshot(dir.path()), files_before);
}

#[test]
fn verify_of_a_missing_directory_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    assert_one_line_error(&kv(&missing, &["verify"]), 3, "does not exist");
    assert!(!missing.exists());
    // A read of a mistyped --dir does not create an empty database either.
    assert_one_line_error(&kv(&missing, &["get", "k"]), 3, "no database");
    assert!(!missing.exists());
}

#[test]
fn a_directory_without_a_database_is_never_made_one() {
    let parent = tempfile::tempdir().unwrap();
    let other = parent.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let before = snapshot(&other);
    for args in [
        &["count"][..],
        &["get", "k"],
        &["keys"],
        &["scan"],
        &["stats"],
        &["export"],
        &["compact"],
        &["verify"],
    ] {
        assert_one_line_error(&kv(&other, args), 3, "no kv database");
    }
    for args in [&["put", "k", "v"][..], &["delete", "k"]] {
        assert_one_line_error(&kv(&other, args), 3, "holds other files");
    }
    assert_one_line_error(
        &kv_in(&other, &["import"], b"{\"key\": \"k\", \"value\": \"v\"}\n"),
        3,
        "holds other files",
    );
    assert_eq!(snapshot(&other), before, "a refused command changed files");

    // An empty directory: reads refuse it and leave it empty; a write
    // makes a database there.
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_one_line_error(&kv(&empty, &["count"]), 3, "no kv database");
    assert_one_line_error(&kv(&empty, &["verify"]), 3, "no kv database");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert_code(&kv(&empty, &["put", "k", "v"]), 0);
    assert_eq!(stdout(&kv(&empty, &["count"])), "1\n");
    assert_code(&kv(&empty, &["verify"]), 0);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

#[test]
fn bad_input_is_one_line_on_stderr_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&kv(dir.path(), &["put", "keep", "me"]), 0);
    let before = content(dir.path());

    assert_one_line_error(&kv(dir.path(), &["put", "", "v"]), 3, "key is empty");
    let long_key = "k".repeat(65_536);
    assert_one_line_error(
        &kv(dir.path(), &["put", &long_key, "v"]),
        3,
        "key is 65536 bytes; the maximum is 65535",
    );
    // The largest key is fine.
    assert_code(&kv(dir.path(), &["put", &long_key[1..], "v"]), 0);
    assert_code(&kv(dir.path(), &["delete", &long_key[1..]]), 0);

    // A value one byte over 64 MiB, from a file and through import.
    let big = dir.path().join("big");
    let max = 64 << 20;
    std::fs::write(&big, vec![b'v'; max + 1]).unwrap();
    assert_one_line_error(
        &kv(
            dir.path(),
            &["put", "big", "--value-file", big.to_str().unwrap()],
        ),
        3,
        "value is 67108865 bytes; the maximum is 67108864",
    );
    let mut line = b"small\tv\nbig\t".to_vec();
    line.extend(vec![b'v'; max + 1]);
    line.push(b'\n');
    std::fs::write(&big, &line).unwrap();
    let out = kv(dir.path(), &["import", "-f", "tsv", big.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        3,
        "at line 2 (0 records written, none from line 1 on)",
    );
    assert!(stderr(&out).contains("67108865 bytes"), "{}", stderr(&out));
    std::fs::remove_file(&big).unwrap();

    // Bad lines in an import.
    for (input, what) in [
        ("{\"key\": \"a\"}\n", "at line 1"),
        (
            "{\"key\": \"a\", \"value\": \"b\"}\nnot json\n",
            "line 1 on): not valid JSON",
        ),
        ("{\"key\": \"\", \"value\": \"b\"}\n", "key is empty"),
        (
            "{\"key\": \"a\", \"value\": \"b\", \"ttl\": 5}\n",
            "unknown field \"ttl\"",
        ),
    ] {
        assert_one_line_error(&kv_in(dir.path(), &["import"], input.as_bytes()), 3, what);
    }
    assert_eq!(content(dir.path()), before);

    // --dir naming a regular file.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a database").unwrap();
    for args in [
        &["put", "k", "v"][..],
        &["get", "k"],
        &["verify"],
        &["shell"],
    ] {
        assert_one_line_error(&kv(&file, args), 3, "is not a directory");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a database");
}

#[test]
fn a_database_held_open_elsewhere_is_locked_for_writes_and_open_to_reads() {
    let dir = tempfile::tempdir().unwrap();
    let held = kv_engine::Db::open(dir.path()).unwrap();
    held.put(b"k", b"v").unwrap();
    for args in [
        &["put", "k", "v"][..],
        &["delete", "k"],
        &["compact"],
        &["shell"],
    ] {
        assert_one_line_error(&kv(dir.path(), args), 5, "locked");
    }
    // Reads open read-only, beside the holder, and verify checks beside it.
    assert_code(&kv(dir.path(), &["verify"]), 0);
    assert_eq!(stdout(&kv(dir.path(), &["get", "k"])), "v\n");
    assert_code(&kv(dir.path(), &["get", "absent"]), 1);
    drop(held);
    // NOTE: an flock belongs to the open file, which a child forked by
    // another test's thread shares until it execs; so the lock can outlive
    // the drop by that moment. Retry briefly rather than race it.
    let mut out = kv(dir.path(), &["put", "k", "w"]);
    for _ in 0..100 {
        if out.status.code() != Some(5) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        out = kv(dir.path(), &["put", "k", "w"]);
    }
    assert_code(&out, 0);
}

#[test]
fn read_commands_work_while_a_kv_shell_holds_the_database_and_writes_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let mut shell = command(dir.path(), &["shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    let mut lines = BufReader::new(shell.stdout.take().unwrap()).lines();
    // Once the shell answers, it has the database open.
    writeln!(stdin, "put held yes").unwrap();
    writeln!(stdin, "count").unwrap();
    stdin.flush().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "1");

    // Every read command, from another process, sees what the shell has
    // acknowledged, as of the moment it opens.
    assert_eq!(stdout(&kv(dir.path(), &["get", "held"])), "yes\n");
    writeln!(stdin, "put second 2").unwrap();
    writeln!(stdin, "delete held").unwrap();
    writeln!(stdin, "count").unwrap();
    stdin.flush().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "1");
    assert_code(&kv(dir.path(), &["get", "held"]), 1);
    assert_eq!(stdout(&kv(dir.path(), &["get", "second"])), "2\n");
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "1\n");
    assert_eq!(stdout(&kv(dir.path(), &["keys"])), "second\n");
    assert_eq!(stdout(&kv(dir.path(), &["scan"])), "second\t2\n");
    assert_eq!(stdout(&kv(dir.path(), &["ttl", "second"])), "none\n");
    assert!(stdout(&kv(dir.path(), &["stats"])).contains("keys"));
    let exported = kv(dir.path(), &["export"]);
    assert_code(&exported, 0);
    assert!(
        stdout(&exported).contains("second"),
        "{}",
        stdout(&exported)
    );
    // Writes need the database to themselves.
    let second = kv(dir.path(), &["put", "k", "v"]);
    assert_one_line_error(&second, 5, "locked");
    // verify checks beside it, and says so.
    let verified = kv(dir.path(), &["verify"]);
    assert_code(&verified, 0);
    assert!(
        stdout(&verified).contains("checked beside it"),
        "{}",
        stdout(&verified)
    );

    writeln!(stdin, "put held yes").unwrap();
    writeln!(stdin, "get held").unwrap();
    drop(stdin);
    assert_eq!(lines.next().unwrap().unwrap(), "yes");
    assert!(shell.wait().unwrap().success());
    assert_eq!(stdout(&kv(dir.path(), &["get", "held"])), "yes\n");
}

#[test]
fn wait_waits_for_the_lock_then_exits_5_or_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let held = kv_engine::Db::open(dir.path()).unwrap();
    held.put(b"k", b"held").unwrap();
    // A bounded wait on a lock that stays held: exit 5, saying so.
    for args in [
        &["--wait=200ms", "put", "k", "v"][..],
        &["delete", "--wait=200ms", "k"],
        &["--wait=200ms", "compact"],
    ] {
        let out = kv(dir.path(), args);
        assert_one_line_error(&out, 5, "still held after waiting 200ms");
    }
    // A read does not wait: it opens read-only beside the holder.
    assert_eq!(
        stdout(&kv(dir.path(), &["--wait=200ms", "get", "k"])),
        "held\n"
    );
    // A wait that outlasts the holder: the command runs once it closes.
    let child = command(dir.path(), &["--wait=60s", "put", "k", "after"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    held.close().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    // A bare --wait waits as long as it takes; here nothing holds it.
    assert_eq!(stdout(&kv(dir.path(), &["--wait", "get", "k"])), "after\n");
    assert_code(&kv(dir.path(), &["--wait=soon", "get", "k"]), 2);
}

#[test]
fn ttl_expire_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path();
    assert_code(&kv(db, &["put", "session", "s1", "--ttl", "1h"]), 0);
    assert_code(&kv(db, &["put", "user", "u1"]), 0);
    // Rounded down to the second: a fresh hour has 59m 5xs left.
    let left = stdout(&kv(db, &["ttl", "session"]));
    assert!(left.starts_with("59m "), "{left}");
    assert_eq!(stdout(&kv(db, &["ttl", "user"])), "none\n");
    // expire keeps the value and sets the expiry; persist takes it away.
    assert_code(&kv(db, &["expire", "user", "90s"]), 0);
    let left = stdout(&kv(db, &["ttl", "user"]));
    assert!(left.starts_with("1m 2"), "{left}");
    assert_eq!(stdout(&kv(db, &["get", "user"])), "u1\n");
    assert_code(&kv(db, &["persist", "session"]), 0);
    assert_eq!(stdout(&kv(db, &["ttl", "session"])), "none\n");
    assert_eq!(stdout(&kv(db, &["get", "session"])), "s1\n");
    // A key that is not there: exit 1, nothing written.
    for args in [
        &["ttl", "nosuch"][..],
        &["expire", "nosuch", "5s"],
        &["persist", "nosuch"],
    ] {
        let out = kv(db, args);
        assert_code(&out, 1);
        assert_eq!(stderr(&out), "kv: key not found\n");
    }
    assert_eq!(stdout(&kv(db, &["count"])), "2\n");
    assert_code(&kv(db, &["expire", "user", "0s"]), 2);
    // Hex keys, like every other key argument.
    assert_eq!(
        stdout(&kv(db, &["ttl", "-e", "hex", "75736572"]))
            .lines()
            .count(),
        1
    );
}

#[test]
fn export_carries_ttls_and_never_leaves_a_partial_file_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    assert_code(&kv(&db, &["put", "session", "s", "--ttl", "1h"]), 0);
    assert_code(&kv(&db, &["put", "user", "u"]), 0);
    for format in ["jsonl", "tsv"] {
        let file = dir.path().join(format!("dump.{format}"));
        let f = file.to_str().unwrap();
        assert_code(&kv(&db, &["export", f, "-f", format]), 0);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(export_records(&text).len(), 2, "{text}");
        assert!(!dir.path().join(format!("dump.{format}.partial")).exists());
        // The TTL travels as the milliseconds left, and comes back.
        let copy = dir.path().join(format!("copy-{format}"));
        assert_code(&kv(&copy, &["import", f, "-f", format]), 0);
        let left = stdout(&kv(&copy, &["ttl", "session"]));
        assert!(left.starts_with("59m "), "{format}: {left}");
        assert_eq!(stdout(&kv(&copy, &["ttl", "user"])), "none\n");
        assert_eq!(stdout(&kv(&copy, &["get", "session"])), "s\n");
    }
    // An export that fails midway (binary data in utf8) leaves no file,
    // under its name or the temporary one.
    assert_code(&kv(&db, &["put", "-e", "hex", "ff", "00"]), 0);
    let file = dir.path().join("bad.jsonl");
    let out = kv(&db, &["export", file.to_str().unwrap()]);
    assert_code(&out, 3);
    assert!(!file.exists() && !dir.path().join("bad.jsonl.partial").exists());
    // An existing FILE is kept without --force, and replaced with it.
    let kept = dir.path().join("dump.jsonl");
    let before = std::fs::read(&kept).unwrap();
    assert_code(
        &kv(&db, &["export", kept.to_str().unwrap(), "-e", "hex"]),
        2,
    );
    assert_eq!(std::fs::read(&kept).unwrap(), before);
    assert_code(
        &kv(
            &db,
            &["export", kept.to_str().unwrap(), "-e", "hex", "--force"],
        ),
        0,
    );
    assert_eq!(
        export_records(&std::fs::read_to_string(&kept).unwrap()).len(),
        3
    );
}

#[test]
fn an_export_cut_short_or_changed_is_refused_by_import_and_one_by_hand_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for i in 0..50 {
        assert_code(&kv(&db, &["put", &format!("k{i:02}"), &format!("v{i}")]), 0);
    }
    for format in ["jsonl", "tsv"] {
        let file = dir.path().join(format!("dump.{format}"));
        let f = file.to_str().unwrap();
        assert_code(&kv(&db, &["export", f, "-f", format]), 0);
        let whole = std::fs::read(&file).unwrap();
        // Cut at every line end but the last, as a killed export piped to
        // a file leaves it: refused, from a file before anything is
        // written, and from stdin at its end.
        let ends: Vec<usize> = whole
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        for &cut in &ends[..ends.len() - 1] {
            std::fs::write(&file, &whole[..cut]).unwrap();
            let copy = dir.path().join(format!("cut-{format}-{cut}"));
            let out = kv(&copy, &["import", f, "-f", format]);
            assert_one_line_error(&out, 3, "cut short");
            assert!(
                stderr(&out).contains("nothing was imported"),
                "{}",
                stderr(&out)
            );
            assert_eq!(content(&copy).len(), 0);
            let out = kv_in(&copy, &["import", "-f", format], &whole[..cut]);
            assert_one_line_error(&out, 3, "cut short");
        }
        // A changed record: refused.
        let text = String::from_utf8(whole.clone())
            .unwrap()
            .replace("v17", "v71");
        std::fs::write(&file, &text).unwrap();
        let copy = dir.path().join(format!("changed-{format}"));
        assert_one_line_error(&kv(&copy, &["import", f, "-f", format]), 3, "checksum");
        // Whole: imported.
        std::fs::write(&file, &whole).unwrap();
        let copy = dir.path().join(format!("whole-{format}"));
        assert_code(&kv(&copy, &["import", f, "-f", format]), 0);
        assert_eq!(content(&copy), content(&db));
        // The records alone (a file written by hand): imported as they are.
        let records = export_records(std::str::from_utf8(&whole).unwrap()).join("\n");
        std::fs::write(&file, records + "\n").unwrap();
        let copy = dir.path().join(format!("by-hand-{format}"));
        assert_code(&kv(&copy, &["import", f, "-f", format]), 0);
        assert_eq!(content(&copy), content(&db));
    }
}

#[test]
fn corruption_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&kv(dir.path(), &["put", "k", "v"]), 0);
    // Damage the segment header: the database cannot be read.
    let seg = dir.path().join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    assert_code(&kv(dir.path(), &["get", "k"]), 4);
    assert_code(&kv(dir.path(), &["verify"]), 4);
}

#[test]
fn import_export_round_trip_10000_binary_records() {
    let records = random_records(0x5eed, 10_000);
    for (format, encoding) in [
        ("jsonl", "hex"),
        ("jsonl", "base64"),
        ("tsv", "hex"),
        ("tsv", "base64"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let input = dir.path().join("in");
        std::fs::write(&input, write_import(&records, format, encoding)).unwrap();
        let args = ["-f", format, "-e", encoding];
        let mut import = vec!["import", input.to_str().unwrap()];
        import.extend(args);
        let out = kv(&db, &import);
        assert_code(&out, 0);
        assert!(
            stderr(&out).contains("imported 10000 records"),
            "{}",
            stderr(&out)
        );

        // To stdout, and to a file.
        let mut export = vec!["export"];
        export.extend(args);
        let out = kv(&db, &export);
        assert_code(&out, 0);
        assert_eq!(
            parse_export(&stdout(&out), format, encoding),
            records,
            "{format} {encoding}"
        );
        let file = dir.path().join("out");
        export.push(file.to_str().unwrap());
        assert_code(&kv(&db, &export), 0);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(parse_export(&text, format, encoding), records);

        // The export imports into an equal database.
        let copy = dir.path().join("copy");
        let mut import = vec!["import", file.to_str().unwrap()];
        import.extend(args);
        assert_code(&kv(&copy, &import), 0);
        assert_eq!(content(&copy), records);
    }
}

#[test]
fn utf8_text_with_tabs_and_newlines_round_trips_in_jsonl_and_tsv() {
    let mut records = BTreeMap::new();
    for (i, s) in [
        "plain",
        "tab\there",
        "new\nline",
        "cr\rlf",
        "back\\slash \\t not a tab",
        "é ✓ 日本",
        "",
    ]
    .iter()
    .enumerate()
    {
        records.insert(format!("key {i} {s}").into_bytes(), s.as_bytes().to_vec());
    }
    for format in ["jsonl", "tsv"] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut input = String::new();
        for (k, v) in &records {
            let (k, v) = (
                std::str::from_utf8(k).unwrap(),
                std::str::from_utf8(v).unwrap(),
            );
            match format {
                "jsonl" => {
                    input.push_str(&format!("{}\n", serde_json::json!({"key": k, "value": v})))
                }
                _ => input.push_str(&format!("{}\t{}\n", tsv(k), tsv(v))),
            }
        }
        assert_code(&kv_in(&a, &["import", "-f", format], input.as_bytes()), 0);
        assert_eq!(content(&a), records);
        let export = kv(&a, &["export", "-f", format]);
        assert_code(&export, 0);
        assert_eq!(export_records(&stdout(&export)).len(), records.len());
        assert_code(&kv_in(&b, &["import", "-f", format], &export.stdout), 0);
        assert_eq!(content(&b), records, "{format}");
    }
}

fn tsv(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

#[test]
fn export_refuses_binary_in_utf8_and_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&kv(dir.path(), &["put", "-e", "hex", "6b", "ff00"]), 0);
    let out = kv(dir.path(), &["export"]);
    assert_one_line_error(&out, 3, "not valid UTF-8");
    assert!(stderr(&out).contains("--encoding hex or base64"));
    // To a file, the partial export is removed.
    let partial = dir.path().join("partial.jsonl");
    let out = kv(dir.path(), &["export", partial.to_str().unwrap()]);
    assert_one_line_error(&out, 3, "not valid UTF-8");
    assert!(!partial.exists());

    let file = dir.path().join("exists.jsonl");
    std::fs::write(&file, b"precious").unwrap();
    let path = file.to_str().unwrap();
    assert_one_line_error(
        &kv(dir.path(), &["export", "-e", "hex", path]),
        2,
        "--force",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert_code(
        &kv(dir.path(), &["export", "-e", "hex", "--force", path]),
        0,
    );
    assert_eq!(
        export_records(&std::fs::read_to_string(&file).unwrap()),
        ["{\"key\":\"6b\",\"value\":\"ff00\"}"]
    );
}

#[test]
fn import_batches_are_atomic_and_an_error_says_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 0..25 {
        input.push_str(&format!("k{i}\tv{i}\n"));
    }
    input.push_str("broken line\n");
    let out = kv_in(
        dir.path(),
        &["import", "-f", "tsv", "--batch-size", "10"],
        input.as_bytes(),
    );
    assert_one_line_error(
        &out,
        3,
        "import stopped at line 26 (20 records written, none from line 21 on): no tab",
    );
    // Two whole batches of ten; the third, cut short by the error, not at all.
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "20\n");
    assert_code(&kv_in(dir.path(), &["import", "--batch-size", "0"], b""), 2);
}

#[test]
fn shell_bail_stops_at_the_first_failure_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let script = "put a 1\nput b 2\nget nosuch\nput c 3\n";
    let out = kv_in(dir.path(), &["shell", "--bail"], script.as_bytes());
    assert_code(&out, 1);
    assert_eq!(stderr(&out), "line 3: key not found\n");
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "2\n");
    let out = kv_in(dir.path(), &["shell", "--bail"], b"put d 4\nput\nput e 5\n");
    assert_code(&out, 2);
    assert!(
        stderr(&out).starts_with("line 2: error: "),
        "{}",
        stderr(&out)
    );
    assert_code(&kv(dir.path(), &["get", "e"]), 1);
    // Without a failure it runs to the end, exit 0.
    let out = kv_in(dir.path(), &["shell", "--bail"], b"put f 6\nget f\n");
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "6\n");
}

#[test]
fn shell_runs_commands_from_stdin_and_goes_on_after_errors() {
    let dir = tempfile::tempdir().unwrap();
    let script = "\
# a comment, then a blank line

put apple red
put 'two words' \"a value with spaces\"
get apple
get 'two words'
get missing
put
count
frobnicate
put 'unbalanced
keys --prefix two
delete apple
count
help
help put
verify
get -e hex 74776f20776f726473
exit
put never run
";
    let out = kv_in(dir.path(), &["shell"], script.as_bytes());
    let text = stdout(&out);
    let err = stderr(&out);
    // The last failure was the unknown command (2).
    assert_code(&out, 2);
    let answers: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(' '))
        .collect();
    assert_eq!(answers[0], "red");
    assert_eq!(answers[1], "a value with spaces");
    assert_eq!(answers[2], "2");
    assert_eq!(answers[3], "two words");
    assert_eq!(answers[4], "1");
    assert!(text.contains("Usage: kv <COMMAND>"), "{text}");
    assert!(text.contains("Usage: put"), "{text}");
    assert!(text.contains(": 0 problems"), "{text}");
    assert!(
        text.contains(&format!("\n{}\n", hex(b"a value with spaces"))),
        "{text}"
    );
    // Each message names its line of the script.
    assert!(err.contains("line 7: key not found"), "{err}");
    assert!(
        err.contains("line 10: error: unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    assert!(err.contains("line 11: error: unbalanced quotes"), "{err}");
    assert!(err.contains("line 8: error: "), "{err}");
    // After `exit` nothing ran, and everything before it was kept.
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "1\n");
    assert_code(&kv(dir.path(), &["get", "never"]), 1);

    // A clean script exits 0, and import in the shell reads a file.
    let file = dir.path().join("in.tsv");
    std::fs::write(&file, "x\t1\ny\t2\n").unwrap();
    let script = format!(
        "import -f tsv {}\nscan -p x\nimport\nexport -f tsv\n",
        file.display()
    );
    let out = kv_in(dir.path(), &["shell"], script.as_bytes());
    assert_code(&out, 2);
    assert!(stdout(&out).starts_with("x\t1\n"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("give import a FILE"),
        "{}",
        stderr(&out)
    );
    let out = kv_in(dir.path(), &["shell"], b"count\nquit\n");
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "3\n");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The expiry of every record in the database's segments, by key.
fn expiries(dir: &Path) -> BTreeMap<Vec<u8>, u64> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let segment = kv_log::Segment::open_read_only(&path).unwrap();
            let bad = segment.check_records(|_, r| {
                found.insert(r.key.to_vec(), r.expires_at);
            });
            assert!(bad.is_empty());
        }
    }
    found
}

#[test]
fn put_with_a_ttl_stores_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let before = now_ms();
    assert_code(
        &kv(dir.path(), &["put", "--ttl", "1h 30m", "session", "abc"]),
        0,
    );
    let after = now_ms();
    assert_code(&kv(dir.path(), &["put", "forever", "x"]), 0);
    assert_eq!(stdout(&kv(dir.path(), &["get", "session"])), "abc\n");
    let expiries = expiries(dir.path());
    let expiry = expiries[&b"session"[..]];
    let ttl = 90 * 60 * 1000;
    assert!(
        (before + ttl..=after + ttl).contains(&expiry),
        "{before} {expiry} {after}"
    );
    assert_eq!(expiries[&b"forever"[..]], 0);
    for bad in ["0s", "soon", "-5m"] {
        let out = kv(dir.path(), &["put", &format!("--ttl={bad}"), "k", "v"]);
        assert_code(&out, 2);
        assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
    }
    assert_code(&kv(dir.path(), &["get", "k"]), 1);
}

#[test]
fn stats_prints_every_counter_and_json() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        assert_code(&kv(dir.path(), &["put", &format!("k{i}"), "value"]), 0);
    }
    let text = stdout(&kv(dir.path(), &["stats"]));
    let names = [
        "keys",
        "live_bytes",
        "dead_bytes",
        "segments",
        "segment_bytes",
        "wal_bytes",
        "compactions",
        "bytes_reclaimed",
        "index_memory",
        "puts",
        "gets",
        "deletes",
    ];
    for name in names {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name}: {text}"
        );
    }
    assert!(text.lines().next().unwrap().ends_with(" 3"), "{text}");

    let out = kv(dir.path(), &["stats", "--json"]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), names.len());
    assert_eq!(json["keys"], 3);
    assert!(json["segments"].as_u64().unwrap() >= 1);
    assert!(json["live_bytes"].as_u64().unwrap() > 0);

    // In the shell the activity counters count the session's operations.
    let out = kv_in(
        dir.path(),
        &["shell"],
        b"put a 1\nput b 2\ndelete a\nget b\nstats --json\n",
    );
    assert_code(&out, 0);
    let last = stdout(&out).lines().last().unwrap().to_owned();
    let json: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        (
            &json["puts"],
            &json["deletes"],
            &json["gets"],
            &json["keys"]
        ),
        (&2.into(), &1.into(), &1.into(), &4.into())
    );
}

#[test]
fn checkpoint_writes_a_database_that_opens_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let copy = dir.path().join("copy");
    assert_code(&kv(&db, &["put", "k", "before"]), 0);
    let out = kv(&db, &["checkpoint", copy.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("checkpoint written"),
        "{}",
        stdout(&out)
    );
    assert_code(&kv(&db, &["put", "k", "after"]), 0);
    assert_code(&kv(&copy, &["verify"]), 0);
    assert_eq!(stdout(&kv(&copy, &["get", "k"])), "before\n");
    assert_eq!(stdout(&kv(&db, &["get", "k"])), "after\n");
    // A target that is not empty is refused, and left alone.
    let out = kv(&db, &["checkpoint", copy.to_str().unwrap()]);
    assert_one_line_error(&out, 3, "not empty");
    assert_eq!(stdout(&kv(&copy, &["get", "k"])), "before\n");
}

#[test]
fn a_reader_that_stops_early_is_no_error() {
    // `kv export | head -1`: once the reader is gone, kv stops quietly.
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 0..5000 {
        input.push_str(&format!("key{i}\t{}\n", "v".repeat(100)));
    }
    assert_code(
        &kv_in(dir.path(), &["import", "-f", "tsv"], input.as_bytes()),
        0,
    );
    // Far more than a pipe holds, so kv is still writing when the pipe
    // closes.
    let mut child = command(dir.path(), &["export"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"kv_export":1}"#);
    assert!(lines.next().unwrap().unwrap().starts_with("{\"key\":"));
    drop(lines);
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn engine_warnings_and_counts_read_as_sentences() {
    let dir = tempfile::tempdir().unwrap();
    assert_code(&kv(dir.path(), &["put", "a", "b"]), 0);
    let verify = kv(dir.path(), &["verify"]);
    assert_code(&verify, 0);
    let text = stdout(&verify);
    assert!(
        text.contains("(1 segment, 0 hint files, 1 WAL file, 1 CHECKPOINT marker) and 1 record "),
        "{text}"
    );
    // A torn WAL tail, as a crash mid-write leaves: the open cuts it and
    // says so in a sentence of its own.
    let wal = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&wal)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    // A read opens read-only: it reads around the torn tail and leaves it.
    let got = kv(dir.path(), &["get", "a"]);
    assert_code(&got, 0);
    assert_eq!(stdout(&got), "b\n");
    assert_eq!(stderr(&got), "");
    let put = kv(dir.path(), &["put", "c", "d"]);
    assert_code(&put, 0);
    let err = stderr(&put);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kv: warning: cut the torn tail"), "{err}");
    assert!(err.contains(": 1 byte dropped"), "{err}");
    // A checkpoint into the database's own directory is refused.
    let inside = dir.path().join("copy");
    assert_one_line_error(
        &kv(dir.path(), &["checkpoint", inside.to_str().unwrap()]),
        3,
        "inside the database directory",
    );
    assert!(!inside.exists());
}

#[test]
fn get_raw_writes_the_value_bytes_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // A value that ends in a newline and holds a NUL and invalid UTF-8.
    assert_code(
        &kv(dir.path(), &["put", "-e", "hex", "6b", "00ff0a410a"]),
        0,
    );
    let got = kv(dir.path(), &["get", "--raw", "k"]);
    assert_code(&got, 0);
    assert_eq!(got.stdout, b"\x00\xff\nA\n");
    // --encoding still reads KEY.
    let got = kv(dir.path(), &["get", "--raw", "-e", "hex", "6b"]);
    assert_eq!(got.stdout, b"\x00\xff\nA\n");
    // An empty value is zero bytes.
    assert_code(&kv(dir.path(), &["put", "empty", ""]), 0);
    assert!(kv(dir.path(), &["get", "--raw", "empty"]).stdout.is_empty());
    // Without --raw the value is printed, then a newline.
    assert_eq!(kv(dir.path(), &["get", "k"]).stdout, b"\x00\xff\nA\n\n");
    assert_code(&kv(dir.path(), &["get", "--raw", "absent"]), 1);
}

/// Makes `path` and everything under it read-only for everyone.
fn make_read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o555 } else { 0o444 };
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            make_read_only(&entry.unwrap().path());
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn read_commands_work_on_files_they_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("db");
    assert_code(&kv(&db, &["put", "k", "v"]), 0);
    assert_code(&kv(&db, &["put", "gone", "x"]), 0);
    assert_code(&kv(&db, &["delete", "gone"]), 0);
    // Its own copy of the binary, which the unprivileged user can run.
    let bin = root.path().join("kv");
    std::fs::copy(env!("CARGO_BIN_EXE_kv"), &bin).unwrap();
    make_read_only(root.path());
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o555)).unwrap();
    let files_before = snapshot(&db);
    // As root, permissions do not apply: run as `nobody` where the machine
    // has runuser and the user; as anyone else, run as ourselves.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let runner: Option<Vec<&str>> = if !is_root {
        Some(vec![])
    } else if Command::new("runuser")
        .args(["-u", "nobody", "--", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        Some(vec!["runuser", "-u", "nobody", "--"])
    } else {
        None
    };
    if let Some(runner) = runner {
        let run = |args: &[&str]| {
            let mut c = match runner.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            c.arg("--dir").arg(&db).args(args).env_remove("KV_DIR");
            c.output().unwrap()
        };
        let got = run(&["get", "k"]);
        assert_eq!(stdout(&got), "v\n", "{}", stderr(&got));
        assert_code(&run(&["get", "gone"]), 1);
        assert_eq!(stdout(&run(&["count"])), "1\n");
        assert_eq!(stdout(&run(&["scan"])), "k\tv\n");
        assert_code(&run(&["stats"]), 0);
        // A write is refused with the OS's reason, and changes nothing.
        let put = run(&["put", "k", "w"]);
        assert_ne!(
            put.status.code(),
            Some(0),
            "a write to a read-only database succeeded"
        );
        assert_eq!(stdout(&run(&["get", "k"])), "v\n");
    } else {
        eprintln!("skipped the unprivileged run: root without runuser or a nobody user");
    }
    assert_eq!(snapshot(&db), files_before, "a read changed the files");
    // Let the temporary directory be removed.
    for dir in [root.path().to_path_buf(), db.clone(), db.join("wal")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn compact_leaves_a_damaged_segment_out_says_so_and_compacts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let options = kv_engine::Options::default()
        .segment_size(4 << 10)
        .background_compaction(false);
    let db = kv_engine::Db::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:03}").as_bytes(), &[b'a'; 100]).unwrap();
    }
    // Sealed segments get their hint files, so that opening does not
    // scan them (and so does not meet the damage).
    db.compact().unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:03}").as_bytes(), &[b'b'; 100]).unwrap();
    }
    db.close().unwrap();
    let hinted: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hint"))
        .collect();
    assert!(hinted.len() >= 2, "{hinted:?}");
    // A flipped byte in the values of the first hinted segment.
    let seg = hinted[0].with_extension("seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();

    let out = kv(dir.path(), &["compact"]);
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(
        err.contains("compaction left out 1 damaged segment:"),
        "{err}"
    );
    assert!(stdout(&out).starts_with("compacted "), "{}", stdout(&out));
    // The next compaction leaves it out again, and says so again.
    let again = kv(dir.path(), &["compact"]);
    assert_code(&again, 4);
    // Every key still reads (the damaged segment's records are all dead).
    assert_eq!(stdout(&kv(dir.path(), &["count"])), "200\n");
    assert_eq!(
        stdout(&kv(dir.path(), &["get", "k000"])),
        "b".repeat(100) + "\n"
    );
}

/// 100 keys `k000`.. of 100 bytes each, in segments of 4 KiB, the sealed
/// ones with hint files (so that the database opens around damage in one).
fn hinted_database(dir: &Path) {
    let options = kv_engine::Options::default()
        .segment_size(4 << 10)
        .background_compaction(false);
    let db = kv_engine::Db::open_with(dir, options).unwrap();
    for i in 0..100u32 {
        db.put(format!("k{i:03}").as_bytes(), &[b'a'; 100]).unwrap();
    }
    db.compact().unwrap(); // hint files for the sealed segments
    db.close().unwrap();
}

/// Flips a byte of the last record of a segment of `hinted_database` that
/// has a hint file; returns the segment's path.
fn damage_last_record_of_a_hinted_segment(dir: &Path) -> PathBuf {
    let seg = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "hint"))
        .unwrap()
        .with_extension("seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    seg
}

#[test]
fn salvage_copies_what_is_intact_and_names_what_may_be_lost() {
    let dir = tempfile::tempdir().unwrap();
    hinted_database(dir.path());
    // Intact: everything, exit 0.
    let whole = dir.path().with_extension("whole");
    let out = kv(dir.path(), &["salvage", whole.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("salvaged 100 keys into"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stdout(&kv(&whole, &["count"])), "100\n");
    // One flipped byte in a hinted segment: its key is named, the rest
    // are copied, and the damaged database is left as it was.
    damage_last_record_of_a_hinted_segment(dir.path());
    let before = snapshot(dir.path());
    let part = dir.path().with_extension("part");
    let out = kv(dir.path(), &["salvage", part.to_str().unwrap()]);
    assert_code(&out, 4);
    let text = stdout(&out);
    assert!(text.contains("lost: "), "{text}");
    assert!(
        text.contains("its hint file names 1 record there"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("at risk: ")).count(),
        1,
        "{text}"
    );
    assert!(text.contains("salvaged 99 keys into"), "{text}");
    assert!(
        stderr(&out).contains("some data may be lost"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(stdout(&kv(&part, &["count"])), "99\n");
    // A target that is not new and empty is refused.
    let out = kv(dir.path(), &["salvage", whole.to_str().unwrap()]);
    assert_one_line_error(&out, 3, "not empty");
    for d in [whole, part] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn export_skip_damaged_leaves_damaged_records_out_names_them_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    hinted_database(dir.path()); // the database opens around damage
    let seg = damage_last_record_of_a_hinted_segment(dir.path());
    let check_export = |file: &Path, damaged: &str| {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 101, "{text}"); // header, 99 records, trailer
        assert!(
            lines[100].ends_with(&format!("\"damaged\":{damaged}}}}}")),
            "{}",
            lines[100]
        );
        let value = "a".repeat(100);
        for line in &lines[1..100] {
            assert!(
                line.ends_with(&format!("\"value\":\"{value}\"}}")),
                "{line}"
            );
        }
        // It imports whole, with a warning that it is short of its source.
        let copy = tempfile::tempdir().unwrap();
        let out = kv(copy.path(), &["import", file.to_str().unwrap()]);
        assert_code(&out, 0);
        assert!(
            stderr(&out).contains("warning: the export says it left out 1 damaged place"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stdout(&kv(copy.path(), &["count"])), "99\n");
    };

    // Without the flag, the export stops at the damage and says what to do.
    let out = kv(dir.path(), &["export"]);
    assert_code(&out, 4);
    assert!(stderr(&out).contains("--skip-damaged"), "{}", stderr(&out));
    // With it: the damaged key is named, the rest exported, exit 4.
    let before = snapshot(dir.path());
    let file = dir.path().with_extension("jsonl");
    let out = kv(
        dir.path(),
        &["export", "--skip-damaged", file.to_str().unwrap()],
    );
    assert_code(&out, 4);
    let err = stderr(&out);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("kv: left out k"))
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("exported 99 records"), "{err}");
    assert!(err.contains("1 damaged place left out"), "{err}");
    check_export(&file, "1");
    std::fs::remove_file(&file).unwrap();

    // Without the hint file (and the saved index) the database does not
    // open at all: the export reads every file around the damage instead.
    std::fs::remove_file(seg.with_extension("hint")).unwrap();
    std::fs::remove_file(dir.path().join("INDEX")).unwrap();
    assert_code(&kv(dir.path(), &["count"]), 4);
    let before_salvage = snapshot(dir.path());
    let out = kv(
        dir.path(),
        &["export", "--skip-damaged", file.to_str().unwrap()],
    );
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(err.contains("the database does not open"), "{err}");
    assert!(err.contains("kv: left out what "), "{err}");
    assert!(err.contains("1 damaged place left out"), "{err}");
    check_export(&file, "1");
    assert_eq!(
        snapshot(dir.path()),
        before_salvage,
        "the export changed files"
    );
    assert_ne!(before, before_salvage);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn serve_answers_the_redis_protocol_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = command(dir.path(), &["serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kv serve did not listen: {e}");
            }
        }
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"SET greeting hello\r\nGET greeting\r\nSHUTDOWN\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut reply);
    assert_eq!(reply, b"+OK\r\n$5\r\nhello\r\n");
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&kv(dir.path(), &["get", "greeting"])), "hello\n");
}
