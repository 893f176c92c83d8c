//! The commands: each parsed frame is looked up by name and run against
//! the engine, with Redis's semantics and error replies. Every command
//! that reads and then writes (the conditional `SET`s, `INCR`, `APPEND`,
//! `GETSET`, `MSETNX`, `EXPIRE`, ...) is one `Db::update`, atomic against
//! every other writer.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_engine::{Current, Db, Error, WriteBatch};

use crate::glob::matches;
use crate::info;
use crate::reply::{Out, Protocol};
use crate::resp::Frame;
use crate::server::{Conn, State, unix_now};

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Continue,
    /// Send the replies so far, then close (`QUIT`, a protocol error).
    Close,
    /// Send the replies so far, close, and shut the server down.
    Shutdown,
}

/// The commands served: name, arity (negative: at least that many), as in
/// Redis's `COMMAND` reply.
pub(crate) const COMMANDS: &[(&str, i64)] = &[
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("hello", -1),
    ("select", 2),
    ("auth", -2),
    ("client", -2),
    ("command", -1),
    ("config", -2),
    ("info", -1),
    ("dbsize", 1),
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("getex", -2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("type", 2),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("incrbyfloat", 3),
    ("append", 3),
    ("strlen", 2),
    ("getrange", 4),
    ("setrange", 4),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("scan", -2),
    ("keys", 2),
    ("randomkey", 1),
    ("flushdb", -1),
    ("flushall", -1),
    ("save", 1),
    ("bgsave", -1),
    ("lastsave", 1),
    ("shutdown", -1),
];

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// Runs one command; its reply goes to `conn.out`.
pub(crate) fn execute(state: &State, conn: &mut Conn, frame: &Frame) -> Action {
    let Some(&(name, arity)) = lookup(frame.arg(0)) else {
        let args: String = frame
            .args()
            .skip(1)
            .take(8)
            .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
            .collect();
        conn.out.error(&format!(
            "ERR unknown command '{}', with args beginning with: {args}",
            String::from_utf8_lossy(frame.arg(0))
        ));
        return Action::Continue;
    };
    if !conn.authenticated && !matches!(name, "auth" | "hello" | "quit") {
        conn.out.error("NOAUTH Authentication required.");
        return Action::Continue;
    }
    let n = frame.len() as i64;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        conn.out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return Action::Continue;
    }
    let mut cmd = Cmd {
        state,
        db: &state.db,
        frame,
        out: &mut conn.out,
    };
    match cmd.run(name, conn.id, &mut conn.authenticated) {
        Ok(action) => action,
        Err(reply) => {
            cmd.out.error(&reply);
            Action::Continue
        }
    }
}

/// The command named `name` (any case), without allocating.
fn lookup(name: &[u8]) -> Option<&'static (&'static str, i64)> {
    COMMANDS
        .iter()
        .find(|(n, _)| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `frame` is a plain `SET key value` (no options) or an `MSET`:
/// one that a pipeline may join to the plain writes next to it in one
/// engine batch (`server.rs`), since its reply is `+OK` whatever the keys
/// held.
pub(crate) fn is_plain_write(frame: &Frame) -> bool {
    let name = frame.arg(0);
    (frame.len() == 3 && name.eq_ignore_ascii_case(b"set"))
        || (frame.len() >= 3 && frame.len() % 2 == 1 && name.eq_ignore_ascii_case(b"mset"))
}

/// For `INCR`, `DECR`, `INCRBY` and `DECRBY` with the right arity: the
/// key and the amount to add (or the error reply for a bad amount). A
/// pipeline joins consecutive ones into one `Db::update` (`incr_many`).
pub(crate) fn incr_op(frame: &Frame) -> Option<(Vec<u8>, Reply<i64>)> {
    let name = frame.arg(0);
    let by = if frame.len() == 2 && name.eq_ignore_ascii_case(b"incr") {
        Ok(1)
    } else if frame.len() == 2 && name.eq_ignore_ascii_case(b"decr") {
        Ok(-1)
    } else if frame.len() == 3 && name.eq_ignore_ascii_case(b"incrby") {
        int_arg(frame.arg(2))
    } else if frame.len() == 3 && name.eq_ignore_ascii_case(b"decrby") {
        int_arg(frame.arg(2)).and_then(|n| n.checked_neg().ok_or_else(|| OVERFLOW.to_string()))
    } else {
        return None;
    };
    let key = frame.arg(1);
    // A key the engine refuses fails its own command only.
    let by = by.and_then(|by| {
        if key.is_empty() || key.len() > usize::from(u16::MAX) {
            Err(format!(
                "ERR invalid key: keys are 1 to 65535 bytes, this one is {}",
                key.len()
            ))
        } else {
            Ok(by)
        }
    });
    Some((key.to_vec(), by))
}

/// Applies increments in order, as one atomic `Db::update`: each sees the
/// ones before it, a value that is not an integer or an overflow fails
/// only its own (the key keeps its value), and each key keeps its time to
/// live. Returns each one's reply.
pub(crate) fn incr_many(db: &Db, ops: Vec<(Vec<u8>, Reply<i64>)>) -> Reply<Vec<Reply<i64>>> {
    let keys: Vec<Vec<u8>> = ops
        .iter()
        .filter(|(_, by)| by.is_ok())
        .map(|(k, _)| k.clone())
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    db.update(&refs, move |current, batch| {
        // Only the valid ones were read: line their values up with `ops`.
        let mut read = current.iter();
        let current: Vec<Option<&Current>> = ops
            .iter()
            .map(|(_, by)| {
                if by.is_ok() {
                    read.next().and_then(Option::as_ref)
                } else {
                    None
                }
            })
            .collect();
        // The value each key has reached so far, with its TTL.
        let mut reached: std::collections::HashMap<&[u8], (i64, Option<Duration>)> =
            std::collections::HashMap::new();
        let mut replies = Vec::with_capacity(ops.len());
        for ((key, by), current) in ops.iter().zip(current) {
            let reply = by.clone().and_then(|by| {
                let (old, ttl) = match reached.get(key.as_slice()) {
                    Some(&(n, ttl)) => (n, ttl),
                    None => match current {
                        Some(c) => (stored_int(&c.value)?, c.ttl),
                        None => (0, None),
                    },
                };
                let n = old.checked_add(by).ok_or_else(|| OVERFLOW.to_string())?;
                reached.insert(key.as_slice(), (n, ttl));
                Ok(n)
            });
            replies.push(reply);
        }
        for (key, (n, ttl)) in &reached {
            put(batch, key, n.to_string().as_bytes(), *ttl);
        }
        replies
    })
    .map_err(|e| engine(&e))
}

/// Commands that never write: under `SyncPolicy::Always` they need not
/// leave their worker thread (`server.rs`).
const READ_ONLY: &[&str] = &[
    "ping",
    "echo",
    "quit",
    "hello",
    "select",
    "auth",
    "client",
    "command",
    "config",
    "info",
    "dbsize",
    "get",
    "mget",
    "exists",
    "type",
    "strlen",
    "getrange",
    "ttl",
    "pttl",
    "scan",
    "keys",
    "randomkey",
    "lastsave",
];

/// Whether running `frame` may write (and so wait for a sync).
pub(crate) fn may_write(frame: &Frame) -> bool {
    lookup(frame.arg(0)).is_some_and(|(name, _)| !READ_ONLY.contains(name))
}

/// The error reply for an engine error, for `server.rs`.
pub(crate) fn engine_error(e: &Error) -> String {
    engine(e)
}

/// One command being run.
struct Cmd<'a> {
    state: &'a State,
    db: &'a Db,
    frame: &'a Frame,
    out: &'a mut Out,
}

/// An error reply (without the leading `-`).
type Reply<T = ()> = Result<T, String>;

/// The error reply for an engine error.
fn engine(e: &Error) -> String {
    match e {
        Error::KeyTooLarge { .. } | Error::EmptyKey => format!("ERR invalid key: {e}"),
        Error::ValueTooLarge { .. } => "ERR string exceeds maximum allowed size".into(),
        Error::Corruption { .. } => format!("ERR the value is damaged on disk: {e}"),
        _ => format!("ERR {e}"),
    }
}

fn int_arg(arg: &[u8]) -> Reply<i64> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !(s.starts_with('+') || (s.len() > 1 && s.starts_with('0'))))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| NOT_INTEGER.to_string())
}

/// The integer a stored value holds, as Redis reads it for `INCR`.
fn stored_int(value: &[u8]) -> Reply<i64> {
    if value.is_empty() || value.len() > 20 {
        return Err(NOT_INTEGER.into());
    }
    int_arg(value)
}

fn float_arg(arg: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    (!f.is_nan()).then_some(f)
}

/// A float written as Redis writes `INCRBYFLOAT`'s result: shortest
/// round-trip decimal, no exponent for the usual magnitudes.
fn format_float(f: f64) -> String {
    let text = format!("{f}");
    if text.contains('e') {
        format!("{f:e}")
    } else {
        text
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An expiry as `SET`, `GETEX` and the `EXPIRE` family give it, as a time
/// to live from now (zero: already expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Keep,
    Persist,
    After(Duration),
}

/// Reads `EX s`, `PX ms`, `EXAT s` or `PXAT ms` at `args[i]` (the option
/// name) and `args[i + 1]`; `command` names the command in the error.
fn expiry_option(option: &[u8], value: &[u8], command: &str) -> Reply<Expiry> {
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    let n = int_arg(value)?;
    if n <= 0 {
        return Err(invalid());
    }
    let n = n as u64;
    let ms = match option.to_ascii_lowercase().as_slice() {
        b"ex" => n.checked_mul(1000).ok_or_else(invalid)?,
        b"px" => n,
        b"exat" => n
            .checked_mul(1000)
            .ok_or_else(invalid)?
            .saturating_sub(now_ms()),
        b"pxat" => n.saturating_sub(now_ms()),
        _ => return Err(SYNTAX.into()),
    };
    Ok(Expiry::After(Duration::from_millis(ms)))
}

/// Puts `value` at `key` with `ttl` (none: never expires) into `batch`.
fn put(batch: &mut WriteBatch, key: &[u8], value: &[u8], ttl: Option<Duration>) {
    match ttl {
        None => batch.put(key, value),
        Some(ttl) => batch.put_with_ttl(key, value, ttl),
    };
}

impl Cmd<'_> {
    fn arg(&self, i: usize) -> &[u8] {
        self.frame.arg(i)
    }

    fn owned(&self, i: usize) -> Vec<u8> {
        self.frame.arg(i).to_vec()
    }

    fn lower(&self, i: usize) -> Vec<u8> {
        self.frame.arg(i).to_ascii_lowercase()
    }

    /// Runs an update over `keys` whose function returns a reply result.
    fn update<T: Send + 'static>(
        &self,
        keys: &[&[u8]],
        f: impl FnOnce(&[Option<Current>], &mut WriteBatch) -> Reply<T> + Send + 'static,
    ) -> Reply<T> {
        self.db.update(keys, f).map_err(|e| engine(&e))?
    }

    fn run(&mut self, name: &str, client: u64, authenticated: &mut bool) -> Reply<Action> {
        match name {
            "ping" => match self.frame.len() {
                1 => self.out.simple("PONG"),
                2 => self.out.bulk(self.frame.arg(1)),
                _ => return Err("ERR wrong number of arguments for 'ping' command".into()),
            },
            "echo" => self.out.bulk(self.frame.arg(1)),
            "quit" => {
                self.out.ok();
                return Ok(Action::Close);
            }
            "hello" => self.hello(client, authenticated)?,
            "auth" => {
                let password = self.arg(self.frame.len() - 1);
                let user = (self.frame.len() == 3).then(|| self.arg(1));
                self.auth(user, password, authenticated)?;
                self.out.ok();
            }
            "select" => match int_arg(self.arg(1)) {
                Ok(0) => self.out.ok(),
                Ok(_) => return Err("ERR DB index is out of range".into()),
                Err(e) => return Err(e),
            },
            "client" => self.client(client)?,
            "command" => self.command()?,
            "config" => self.config()?,
            "info" => {
                let section = (self.frame.len() > 1).then(|| self.lower(1));
                let text = info::info(self.state, section.as_deref());
                self.out.verbatim(&text);
            }
            "dbsize" => self.out.int(self.db.len() as i64),
            "get" => {
                let value = self.db.get_pinned(self.arg(1)).map_err(|e| engine(&e))?;
                self.out.bulk_or_null(value.as_deref());
            }
            "set" => self.set()?,
            "setnx" => {
                let (key, value) = (self.owned(1), self.owned(2));
                let set = self.update(&[&key.clone()], move |current, batch| {
                    if current[0].is_some() {
                        return Ok(0);
                    }
                    batch.put(&key, &value);
                    Ok(1)
                })?;
                self.out.int(set);
            }
            "setex" | "psetex" => {
                let ms = int_arg(self.arg(2))?;
                let ms = if name == "setex" {
                    ms.checked_mul(1000)
                } else {
                    Some(ms)
                };
                let ms = ms
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| format!("ERR invalid expire time in '{name}' command"))?;
                self.db
                    .put_with_ttl(self.arg(1), self.arg(3), Duration::from_millis(ms as u64))
                    .map_err(|e| engine(&e))?;
                self.out.ok();
            }
            "getset" => {
                let (key, value) = (self.owned(1), self.owned(2));
                let old = self.update(&[&key.clone()], move |current, batch| {
                    batch.put(&key, &value);
                    Ok(current[0].as_ref().map(|c| c.value.clone()))
                })?;
                self.out.bulk_or_null(old.as_deref());
            }
            "getdel" => {
                let key = self.owned(1);
                let old = self.update(&[&key.clone()], move |current, batch| {
                    if current[0].is_some() {
                        batch.delete(&key);
                    }
                    Ok(current[0].as_ref().map(|c| c.value.clone()))
                })?;
                self.out.bulk_or_null(old.as_deref());
            }
            "getex" => self.getex()?,
            "mget" => {
                self.out.array(self.frame.len() - 1);
                for i in 1..self.frame.len() {
                    // A bad key reads as absent, as a missing one does.
                    let value = self.db.get_pinned(self.arg(i)).ok().flatten();
                    self.out.bulk_or_null(value.as_deref());
                }
            }
            "mset" | "msetnx" => {
                if self.frame.len().is_multiple_of(2) {
                    return Err(format!(
                        "ERR wrong number of arguments for '{name}' command"
                    ));
                }
                let mut batch = WriteBatch::new();
                for i in (1..self.frame.len()).step_by(2) {
                    batch.put(self.arg(i), self.arg(i + 1));
                }
                if name == "mset" {
                    self.db.write(batch).map_err(|e| engine(&e))?;
                    self.out.ok();
                } else {
                    let keys: Vec<Vec<u8>> = (1..self.frame.len())
                        .step_by(2)
                        .map(|i| self.owned(i))
                        .collect();
                    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                    let set = self.update(&refs, move |current, out| {
                        if current.iter().any(Option::is_some) {
                            return Ok(0);
                        }
                        *out = batch;
                        Ok(1)
                    })?;
                    self.out.int(set);
                }
            }
            "del" | "unlink" => {
                let keys: Vec<Vec<u8>> = (1..self.frame.len()).map(|i| self.owned(i)).collect();
                let refs: Vec<&[u8]> = (1..self.frame.len()).map(|i| self.frame.arg(i)).collect();
                let deleted = self.update(&refs, move |current, batch| {
                    let mut deleted = 0;
                    let mut seen = std::collections::HashSet::new();
                    for (key, c) in keys.iter().zip(current) {
                        if c.is_some() && seen.insert(key) {
                            batch.delete(key);
                            deleted += 1;
                        }
                    }
                    Ok(deleted)
                })?;
                self.out.int(deleted);
            }
            "exists" => {
                let mut n = 0;
                for i in 1..self.frame.len() {
                    n += i64::from(self.db.contains_key(self.arg(i)).unwrap_or(false));
                }
                self.out.int(n);
            }
            "type" => {
                let present = self.db.contains_key(self.arg(1)).unwrap_or(false);
                self.out.simple(if present { "string" } else { "none" });
            }
            "incr" | "decr" | "incrby" | "decrby" => {
                let op = incr_op(self.frame).expect("the arity was checked");
                let mut replies = incr_many(self.db, vec![op])?;
                self.out.int(replies.pop().expect("one reply")?);
            }
            "incrbyfloat" => {
                let by = float_arg(self.arg(2))
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| "ERR value is not a valid float".to_string())?;
                let key = self.owned(1);
                let text = self.update(&[&key.clone()], move |current, batch| {
                    let (old, ttl) = match &current[0] {
                        Some(c) => (
                            float_arg(&c.value)
                                .ok_or_else(|| "ERR value is not a valid float".to_string())?,
                            c.ttl,
                        ),
                        None => (0.0, None),
                    };
                    let n = old + by;
                    if !n.is_finite() {
                        return Err("ERR increment would produce NaN or Infinity".into());
                    }
                    let text = format_float(n);
                    put(batch, &key, text.as_bytes(), ttl);
                    Ok(text)
                })?;
                self.out.double_text(&text);
            }
            "append" => {
                let (key, tail) = (self.owned(1), self.owned(2));
                let len = self.update(&[&key.clone()], move |current, batch| {
                    let (mut value, ttl) = match &current[0] {
                        Some(c) => (c.value.clone(), c.ttl),
                        None => (Vec::new(), None),
                    };
                    value.extend_from_slice(&tail);
                    put(batch, &key, &value, ttl);
                    Ok(value.len() as i64)
                })?;
                self.out.int(len);
            }
            "strlen" => {
                let value = self.db.get_pinned(self.arg(1)).map_err(|e| engine(&e))?;
                self.out.int(value.map_or(0, |v| v.len() as i64));
            }
            "getrange" => {
                let (start, end) = (int_arg(self.arg(2))?, int_arg(self.arg(3))?);
                let value = self.db.get_pinned(self.arg(1)).map_err(|e| engine(&e))?;
                let value = value.as_deref().unwrap_or(&[]);
                self.out.bulk(range(value, start, end));
            }
            "setrange" => self.setrange()?,
            "expire" | "pexpire" | "expireat" | "pexpireat" => self.expire(name)?,
            "ttl" | "pttl" => {
                let reply = match self.db.ttl(self.arg(1)).map_err(|e| engine(&e))? {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(left)) if name == "pttl" => left.as_millis() as i64,
                    Some(Some(left)) => (left.as_millis() as i64 + 500) / 1000,
                };
                self.out.int(reply);
            }
            "persist" => {
                let key = self.owned(1);
                let changed =
                    self.update(&[&key.clone()], move |current, batch| match &current[0] {
                        Some(c) if c.ttl.is_some() => {
                            batch.put(&key, &c.value);
                            Ok(1)
                        }
                        _ => Ok(0),
                    })?;
                self.out.int(changed);
            }
            "scan" => self.scan()?,
            "keys" => {
                let pattern = self.owned(1);
                let keys: Vec<Vec<u8>> = self.db.keys().filter(|k| matches(&pattern, k)).collect();
                self.out.array(keys.len());
                for key in &keys {
                    self.out.bulk(key);
                }
            }
            "randomkey" => {
                let start = (now_ms() as usize) % kv_engine::INDEX_SHARDS;
                let key = (0..kv_engine::INDEX_SHARDS)
                    .map(|i| (start + i) % kv_engine::INDEX_SHARDS)
                    .find_map(|shard| {
                        let keys = self.db.shard_keys(shard);
                        let n = keys.len();
                        (n > 0).then(|| keys[(now_ms() as usize) % n].clone())
                    });
                self.out.bulk_or_null(key.as_deref());
            }
            "flushdb" | "flushall" => {
                match self.frame.len() {
                    1 => {}
                    2 if matches!(self.lower(1).as_slice(), b"sync" | b"async") => {}
                    _ => return Err(SYNTAX.into()),
                }
                for shard in 0..kv_engine::INDEX_SHARDS {
                    let mut batch = WriteBatch::new();
                    for key in self.db.shard_keys(shard) {
                        batch.delete(&key);
                    }
                    self.db.write(batch).map_err(|e| engine(&e))?;
                }
                self.out.ok();
            }
            "save" => {
                self.save()?;
                self.out.ok();
            }
            "bgsave" => {
                let dir = self.save_dir()?;
                let save = std::sync::Arc::clone(&self.state.save);
                if save.running.swap(true, Ordering::AcqRel) {
                    return Err("ERR Background save already in progress".into());
                }
                let db = std::sync::Arc::clone(&self.state.db);
                let spawned =
                    std::thread::Builder::new()
                        .name("kv-bgsave".into())
                        .spawn(move || {
                            match save_to(&db, &dir) {
                                Ok(()) => save.last.store(unix_now(), Ordering::Relaxed),
                                Err(e) => log::error!("BGSAVE failed: {e}"),
                            }
                            save.running.store(false, Ordering::Release);
                        });
                if let Err(e) = spawned {
                    self.state.save.running.store(false, Ordering::Release);
                    return Err(format!("ERR could not start the background save: {e}"));
                }
                self.out.simple("Background saving started");
            }
            "lastsave" => self
                .out
                .int(self.state.save.last.load(Ordering::Relaxed) as i64),
            "shutdown" => {
                for i in 1..self.frame.len() {
                    match self.lower(i).as_slice() {
                        b"nosave" | b"now" | b"force" | b"abort" => {}
                        b"save" => self.save()?,
                        _ => return Err(SYNTAX.into()),
                    }
                }
                return Ok(Action::Shutdown);
            }
            _ => unreachable!("every name in COMMANDS has an arm"),
        }
        Ok(Action::Continue)
    }

    fn auth(&self, user: Option<&[u8]>, password: &[u8], authenticated: &mut bool) -> Reply {
        let Some(expected) = &self.state.config.requirepass else {
            return Err(
                "ERR AUTH <password> called without any password configured for the \
                        default user. Are you sure your configuration is correct?"
                    .into(),
            );
        };
        if user.is_some_and(|u| u != b"default") || password != expected.as_bytes() {
            return Err("WRONGPASS invalid username-password pair or user is disabled.".into());
        }
        *authenticated = true;
        Ok(())
    }

    fn hello(&mut self, client: u64, authenticated: &mut bool) -> Reply {
        let mut protocol = self.out.protocol;
        let mut i = 1;
        if self.frame.len() > 1 {
            protocol = match int_arg(self.arg(1)) {
                Ok(2) => Protocol::Resp2,
                Ok(3) => Protocol::Resp3,
                Ok(_) => return Err("NOPROTO unsupported protocol version".into()),
                Err(_) => {
                    return Err("ERR Protocol version is not an integer or out of range".into());
                }
            };
            i = 2;
        }
        while i < self.frame.len() {
            match self.lower(i).as_slice() {
                b"auth" if i + 2 < self.frame.len() => {
                    let (user, password) = (self.owned(i + 1), self.owned(i + 2));
                    self.auth(Some(&user), &password, authenticated)?;
                    i += 3;
                }
                b"setname" if i + 1 < self.frame.len() => {
                    let name = self.owned(i + 1);
                    if let Some(info) = self.state.clients.lock().get_mut(&client) {
                        info.name = name;
                    }
                    i += 2;
                }
                _ => return Err(SYNTAX.into()),
            }
        }
        if !*authenticated {
            return Err(
                "NOAUTH HELLO must be called with the client already authenticated, \
                        otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                        authenticate the client and select the RESP protocol version at the \
                        same time"
                    .into(),
            );
        }
        self.out.protocol = protocol;
        self.out.map(7);
        self.out.bulk(b"server");
        self.out.bulk(b"kv");
        self.out.bulk(b"version");
        self.out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
        self.out.bulk(b"proto");
        self.out
            .int(if protocol == Protocol::Resp3 { 3 } else { 2 });
        self.out.bulk(b"id");
        self.out.int(client as i64);
        self.out.bulk(b"mode");
        self.out.bulk(b"standalone");
        self.out.bulk(b"role");
        self.out.bulk(b"master");
        self.out.bulk(b"modules");
        self.out.array(0);
        Ok(())
    }

    fn client(&mut self, client: u64) -> Reply {
        match self.lower(1).as_slice() {
            b"setname" if self.frame.len() == 3 => {
                let name = self.owned(2);
                if name.iter().any(|&b| b <= b' ' || b > b'~') {
                    return Err(
                        "ERR Client names cannot contain spaces, newlines or special characters."
                            .into(),
                    );
                }
                if let Some(info) = self.state.clients.lock().get_mut(&client) {
                    info.name = name;
                }
                self.out.ok();
            }
            b"getname" if self.frame.len() == 2 => {
                let name = self
                    .state
                    .clients
                    .lock()
                    .get(&client)
                    .map(|i| i.name.clone())
                    .filter(|n| !n.is_empty());
                self.out.bulk_or_null(name.as_deref());
            }
            b"id" if self.frame.len() == 2 => self.out.int(client as i64),
            b"info" if self.frame.len() == 2 => {
                let line = self
                    .state
                    .clients
                    .lock()
                    .get(&client)
                    .map(|i| info::client_line(client, i))
                    .unwrap_or_default();
                self.out.verbatim(&line);
            }
            b"list" => {
                let text: String = self
                    .state
                    .clients
                    .lock()
                    .iter()
                    .map(|(id, i)| info::client_line(*id, i))
                    .collect();
                self.out.verbatim(&text);
            }
            // Client libraries announce themselves (redis-py, go-redis).
            b"setinfo" if self.frame.len() == 4 => self.out.ok(),
            _ => {
                return Err(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(self.arg(1))
                ));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> Reply {
        let entry = |out: &mut Out, name: &str, arity: i64| {
            out.array(6);
            out.bulk(name.as_bytes());
            out.int(arity);
            out.array(0);
            let keyed = !matches!(
                name,
                "ping"
                    | "echo"
                    | "quit"
                    | "hello"
                    | "select"
                    | "auth"
                    | "client"
                    | "command"
                    | "config"
                    | "info"
                    | "dbsize"
                    | "scan"
                    | "keys"
                    | "randomkey"
                    | "flushdb"
                    | "flushall"
                    | "save"
                    | "bgsave"
                    | "lastsave"
                    | "shutdown"
            );
            let last = match name {
                "mget" | "del" | "unlink" | "exists" => -1,
                "mset" | "msetnx" => -1,
                _ => 1,
            };
            let step = if matches!(name, "mset" | "msetnx") {
                2
            } else {
                1
            };
            out.int(i64::from(keyed));
            out.int(if keyed { last } else { 0 });
            out.int(if keyed { step } else { 0 });
        };
        if self.frame.len() == 1 {
            self.out.array(COMMANDS.len());
            for (name, arity) in COMMANDS {
                entry(self.out, name, *arity);
            }
            return Ok(());
        }
        match self.lower(1).as_slice() {
            b"count" => self.out.int(COMMANDS.len() as i64),
            b"docs" => self.out.map(0),
            b"info" => {
                self.out.array(self.frame.len() - 2);
                for i in 2..self.frame.len() {
                    let name = String::from_utf8_lossy(&self.lower(i)).into_owned();
                    match COMMANDS.iter().find(|(n, _)| *n == name) {
                        Some((n, arity)) => entry(self.out, n, *arity),
                        None => self.out.null(),
                    }
                }
            }
            _ => {
                return Err(format!(
                    "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                    String::from_utf8_lossy(self.arg(1))
                ));
            }
        }
        Ok(())
    }

    fn config(&mut self) -> Reply {
        if self.lower(1).as_slice() != b"get" || self.frame.len() < 3 {
            return Err(format!(
                "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(self.arg(1))
            ));
        }
        let config = &self.state.config;
        let appendfsync = match config.sync {
            kv_engine::SyncPolicy::Always => "always",
            kv_engine::SyncPolicy::Never => "no",
            _ => "everysec",
        };
        let params: Vec<(&str, String)> = vec![
            ("appendonly", "yes".into()),
            ("appendfsync", appendfsync.into()),
            ("save", String::new()),
            ("databases", "1".into()),
            ("port", self.state.port.to_string()),
            ("bind", config.bind.to_string()),
            ("maxclients", config.maxclients.to_string()),
            (
                "timeout",
                config.timeout.map_or(0, |t| t.as_secs()).to_string(),
            ),
            (
                "protected-mode",
                if config.protected_mode { "yes" } else { "no" }.into(),
            ),
            ("dir", config.dir.display().to_string()),
            ("proto-max-bulk-len", config.limits.max_bulk_len.to_string()),
        ];
        let mut found: Vec<&(&str, String)> = Vec::new();
        for i in 2..self.frame.len() {
            let pattern = self.lower(i);
            for p in &params {
                if matches(&pattern, p.0.as_bytes()) && !found.iter().any(|f| f.0 == p.0) {
                    found.push(p);
                }
            }
        }
        self.out.map(found.len());
        for (name, value) in found {
            self.out.bulk(name.as_bytes());
            self.out.bulk(value.as_bytes());
        }
        Ok(())
    }

    fn set(&mut self) -> Reply {
        let (mut nx, mut xx, mut get) = (false, false, false);
        let mut expiry = None;
        let mut i = 3;
        while i < self.frame.len() {
            match self.lower(i).as_slice() {
                b"nx" if !xx => nx = true,
                b"xx" if !nx => xx = true,
                b"get" => get = true,
                b"keepttl" if expiry.is_none() => expiry = Some(Expiry::Keep),
                opt @ (b"ex" | b"px" | b"exat" | b"pxat")
                    if expiry.is_none() && i + 1 < self.frame.len() =>
                {
                    expiry = Some(expiry_option(opt, self.arg(i + 1), "set")?);
                    i += 1;
                }
                _ => return Err(SYNTAX.into()),
            }
            i += 1;
        }
        let (key, value) = (self.arg(1), self.arg(2));
        if !nx && !xx && !get && expiry != Some(Expiry::Keep) {
            match expiry {
                Some(Expiry::After(ttl)) => self.db.put_with_ttl(key, value, ttl),
                _ => self.db.put(key, value),
            }
            .map_err(|e| engine(&e))?;
            self.out.ok();
            return Ok(());
        }
        let (key, value) = (key.to_vec(), value.to_vec());
        let (set, old) = self.update(&[&key.clone()], move |current, batch| {
            let old = current[0].as_ref().map(|c| c.value.clone());
            if (nx && current[0].is_some()) || (xx && current[0].is_none()) {
                return Ok((false, old));
            }
            let ttl = match expiry {
                Some(Expiry::After(ttl)) => Some(ttl),
                Some(Expiry::Keep) => current[0].as_ref().and_then(|c| c.ttl),
                Some(Expiry::Persist) | None => None,
            };
            put(batch, &key, &value, ttl);
            Ok((true, old))
        })?;
        if get {
            self.out.bulk_or_null(old.as_deref());
        } else if set {
            self.out.ok();
        } else {
            self.out.null();
        }
        Ok(())
    }

    fn getex(&mut self) -> Reply {
        let expiry = match self.frame.len() {
            2 => None,
            3 if self.lower(2).as_slice() == b"persist" => Some(Expiry::Persist),
            4 => Some(expiry_option(self.arg(2), self.arg(3), "getex")?),
            _ => return Err(SYNTAX.into()),
        };
        let Some(expiry) = expiry else {
            let value = self.db.get_pinned(self.arg(1)).map_err(|e| engine(&e))?;
            self.out.bulk_or_null(value.as_deref());
            return Ok(());
        };
        let key = self.owned(1);
        let value = self.update(&[&key.clone()], move |current, batch| {
            let Some(c) = &current[0] else {
                return Ok(None);
            };
            match expiry {
                Expiry::After(ttl) => {
                    batch.put_with_ttl(&key, &c.value, ttl);
                }
                Expiry::Persist if c.ttl.is_some() => {
                    batch.put(&key, &c.value);
                }
                _ => {}
            }
            Ok(Some(c.value.clone()))
        })?;
        self.out.bulk_or_null(value.as_deref());
        Ok(())
    }

    fn setrange(&mut self) -> Reply {
        let offset = int_arg(self.arg(2))?;
        if !(0..512 << 20).contains(&offset) {
            return Err("ERR offset is out of range".into());
        }
        let (key, patch) = (self.owned(1), self.owned(3));
        let offset = offset as usize;
        let len = self.update(&[&key.clone()], move |current, batch| {
            let (mut value, ttl) = match &current[0] {
                Some(c) => (c.value.clone(), c.ttl),
                None if patch.is_empty() => return Ok(0),
                None => (Vec::new(), None),
            };
            if patch.is_empty() {
                return Ok(value.len() as i64);
            }
            if value.len() < offset + patch.len() {
                value.resize(offset + patch.len(), 0);
            }
            value[offset..offset + patch.len()].copy_from_slice(&patch);
            put(batch, &key, &value, ttl);
            Ok(value.len() as i64)
        })?;
        self.out.int(len);
        Ok(())
    }

    fn expire(&mut self, name: &str) -> Reply {
        let n = int_arg(self.arg(2))?;
        let invalid = || format!("ERR invalid expire time in '{name}' command");
        // The new expiry, in milliseconds since the epoch (maybe past).
        let at: i128 = match name {
            "expire" => i128::from(now_ms()) + i128::from(n) * 1000,
            "pexpire" => i128::from(now_ms()) + i128::from(n),
            "expireat" => i128::from(n) * 1000,
            _ => i128::from(n),
        };
        if at > i128::from(i64::MAX) || n.checked_mul(1000).is_none() && name.ends_with("expire") {
            return Err(invalid());
        }
        let mut condition = None;
        for i in 3..self.frame.len() {
            let c = self.lower(i);
            let c = match c.as_slice() {
                b"nx" => 'n',
                b"xx" => 'x',
                b"gt" => 'g',
                b"lt" => 'l',
                _ => {
                    return Err(format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(&c)
                    ));
                }
            };
            match (condition, c) {
                (None, _) => condition = Some(c),
                (Some(a), b) if a == b => {}
                _ => {
                    return Err(
                        "ERR NX and XX, GT or LT options at the same time are not compatible"
                            .into(),
                    );
                }
            }
        }
        let key = self.owned(1);
        let now = now_ms();
        let changed = self.update(&[&key.clone()], move |current, batch| {
            let Some(c) = &current[0] else { return Ok(0) };
            // The current expiry in ms since the epoch; none is infinite.
            let old = c.ttl.map(|t| i128::from(now) + t.as_millis() as i128);
            let ok = match condition {
                None => true,
                Some('n') => old.is_none(),
                Some('x') => old.is_some(),
                Some('g') => old.is_some_and(|old| at > old),
                _ => old.is_none_or(|old| at < old),
            };
            if !ok {
                return Ok(0);
            }
            if at <= i128::from(now) {
                batch.delete(&key);
            } else {
                let ttl = Duration::from_millis((at - i128::from(now)) as u64);
                batch.put_with_ttl(&key, &c.value, ttl);
            }
            Ok(1)
        })?;
        self.out.int(changed);
        Ok(())
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`: the cursor is the
    /// next index shard; each call returns whole shards until it has
    /// `COUNT` keys (10) or none is left, so every key present for the
    /// whole scan is returned, and exactly once.
    fn scan(&mut self) -> Reply {
        let cursor = std::str::from_utf8(self.arg(1))
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| "ERR invalid cursor".to_string())?;
        let (mut pattern, mut count, mut only_strings) = (None, 10usize, true);
        let mut i = 2;
        while i < self.frame.len() {
            if i + 1 >= self.frame.len() {
                return Err(SYNTAX.into());
            }
            match self.lower(i).as_slice() {
                b"match" => pattern = Some(self.owned(i + 1)),
                b"count" => {
                    let n = int_arg(self.arg(i + 1))?;
                    if n < 1 {
                        return Err(SYNTAX.into());
                    }
                    count = n as usize;
                }
                b"type" => only_strings = self.lower(i + 1) == b"string",
                _ => return Err(SYNTAX.into()),
            }
            i += 2;
        }
        let mut shard = usize::try_from(cursor).unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        while shard < kv_engine::INDEX_SHARDS && keys.len() < count {
            keys.extend(
                self.db
                    .shard_keys(shard)
                    .into_iter()
                    .filter(|k| pattern.as_ref().is_none_or(|p| matches(p, k))),
            );
            shard += 1;
        }
        if !only_strings {
            keys.clear();
        }
        let next = if shard >= kv_engine::INDEX_SHARDS {
            0
        } else {
            shard
        };
        self.out.array(2);
        self.out.bulk(next.to_string().as_bytes());
        self.out.array(keys.len());
        for key in &keys {
            self.out.bulk(key);
        }
        Ok(())
    }

    fn save_dir(&self) -> Reply<std::path::PathBuf> {
        self.state.config.save_dir.clone().ok_or_else(|| {
            "ERR no save directory: start the server with --save-dir DIR for SAVE and BGSAVE"
                .to_string()
        })
    }

    fn save(&self) -> Reply {
        let dir = self.save_dir()?;
        let save = &self.state.save;
        if save.running.swap(true, Ordering::AcqRel) {
            return Err("ERR Background save already in progress".into());
        }
        let result = save_to(&self.state.db, &dir);
        save.running.store(false, Ordering::Release);
        result.map_err(|e| format!("ERR {e}"))?;
        save.last.store(unix_now(), Ordering::Relaxed);
        Ok(())
    }
}

/// Writes a checkpoint of `db` into `dir/checkpoint` (through
/// `dir/checkpoint.new`, so the last complete one stays until the new one
/// is whole).
fn save_to(db: &Db, dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fresh = dir.join("checkpoint.new");
    let last = dir.join("checkpoint");
    let old = dir.join("checkpoint.old");
    for leftover in [&fresh, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| format!("cannot remove {}: {e}", leftover.display()))?;
        }
    }
    db.checkpoint(&fresh).map_err(|e| e.to_string())?;
    if last.exists() {
        std::fs::rename(&last, &old).map_err(|e| format!("cannot move {}: {e}", last.display()))?;
    }
    std::fs::rename(&fresh, &last).map_err(|e| format!("cannot name {}: {e}", last.display()))?;
    if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// `GETRANGE`'s substring: negative indices count from the end, both ends
/// are inclusive, and a range outside the value is empty.
fn range(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if len == 0 {
        return &[];
    }
    let fix = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(len - 1));
    if start > end || start >= len {
        return &[];
    }
    &value[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_follows_redis() {
        let v = b"This is a string";
        assert_eq!(range(v, 0, 3), b"This");
        assert_eq!(range(v, -3, -1), b"ing");
        assert_eq!(range(v, 0, -1), v);
        assert_eq!(range(v, 10, 100), b"string");
        assert_eq!(range(v, 5, 3), b"");
        assert_eq!(range(b"", 0, -1), b"");
    }

    #[test]
    fn integers_parse_as_redis_reads_them() {
        assert_eq!(int_arg(b"-12"), Ok(-12));
        assert_eq!(int_arg(b"9223372036854775807"), Ok(i64::MAX));
        for bad in [
            &b"01"[..],
            b"+1",
            b" 1",
            b"1.0",
            b"",
            b"9223372036854775808",
        ] {
            assert!(int_arg(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_float(10.5), "10.5");
        assert_eq!(format_float(3000.0), "3000");
    }
}
