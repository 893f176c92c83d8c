//! The listener, the connections, and the server's shared state.
//!
//! Each connection is a tokio task: it reads what the client sent, parses
//! and runs every whole command in it (a pipeline), and sends the replies
//! in one write. Commands call the engine directly: reads never block, and
//! a write waits only for the engine's writer thread. Under
//! `SyncPolicy::Always` that wait is a sync, so a command that may write
//! runs in `block_in_place`: the other connections keep their worker
//! threads, and their writes join the same group commit. Consecutive plain
//! writes of a pipeline are one engine batch (`PendingWrites`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use kv_engine::{Db, Options, SyncPolicy, WriteBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::ServerError;
use crate::commands::{self, Action};
use crate::config::Config;
use crate::reply::Out;
use crate::resp::{self, Frame, UNAUTHENTICATED};

/// What every connection shares.
pub(crate) struct State {
    pub(crate) db: Arc<Db>,
    pub(crate) config: Config,
    pub(crate) started: Instant,
    pub(crate) port: u16,
    pub(crate) next_client_id: AtomicU64,
    pub(crate) connected: AtomicUsize,
    pub(crate) clients: parking_lot::Mutex<BTreeMap<u64, ClientInfo>>,
    pub(crate) total_connections: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) total_commands: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) save: Arc<SaveState>,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// SAVE and BGSAVE: one at a time, and when the last one ended.
pub(crate) struct SaveState {
    /// Unix seconds of the last successful save (the start, before one).
    pub(crate) last: AtomicU64,
    pub(crate) running: AtomicBool,
}

/// What `CLIENT LIST`/`CLIENT INFO` say of a connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    pub(crate) addr: SocketAddr,
    pub(crate) name: Vec<u8>,
    pub(crate) connected_at: Instant,
}

/// One client's connection state.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) authenticated: bool,
    pub(crate) out: Out,
}

/// A bound server: [`Server::run`] serves until it is shut down.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

/// Asks a running server to shut down: stop accepting, finish the commands
/// in flight, close the database.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Starts the shutdown; [`Server::run`] returns once it is done.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Server {
    /// Opens the database and binds the listener.
    ///
    /// # Errors
    ///
    /// [`ServerError::ProtectedMode`] for a non-loopback address without a
    /// password under protected mode; [`ServerError::Db`] if the database
    /// does not open; [`ServerError::Bind`].
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        if config.protected_mode && config.requirepass.is_none() && !config.bind.is_loopback() {
            return Err(ServerError::ProtectedMode { bind: config.bind });
        }
        let options = Options::default().sync(config.sync);
        let db = Db::open_with(&config.dir, options).map_err(|source| ServerError::Db {
            dir: config.dir.clone(),
            source,
        })?;
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let port = listener.local_addr().map_or(config.port, |a| a.port());
        let (shutdown, _) = watch::channel(false);
        let state = Arc::new(State {
            db: Arc::new(db),
            config,
            started: Instant::now(),
            port,
            next_client_id: AtomicU64::new(1),
            connected: AtomicUsize::new(0),
            clients: parking_lot::Mutex::new(BTreeMap::new()),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            save: Arc::new(SaveState {
                last: AtomicU64::new(unix_now()),
                running: AtomicBool::new(false),
            }),
            shutdown,
        });
        Ok(Server { listener, state })
    }

    /// The address it listens on (with the port the system picked, for
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.state.config.bind, self.state.port)
    }

    /// A handle that shuts the server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.shutdown.clone())
    }

    /// Serves until shut down (a [`ShutdownHandle`], or a client's
    /// `SHUTDOWN`): then stops accepting, lets each connection finish the
    /// commands it has read, and closes the database.
    ///
    /// # Errors
    ///
    /// [`ServerError::Db`] if closing the database fails.
    pub async fn run(self) -> Result<(), ServerError> {
        let Server { listener, state } = self;
        let mut stop = state.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors, a reset before the
                            // accept: the listener goes on.
                            log::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    state.total_connections.fetch_add(1, Ordering::Relaxed);
                    if state.connected.load(Ordering::Relaxed) >= state.config.maxclients {
                        state.rejected_connections.fetch_add(1, Ordering::Relaxed);
                        tasks.spawn(refuse(stream));
                        continue;
                    }
                    state.connected.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(serve(stream, addr, Arc::clone(&state)));
                }
                _ = stop.wait_for(|stop| *stop) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        while tasks.join_next().await.is_some() {}
        let State { db, config, .. } = match Arc::try_unwrap(state) {
            Ok(state) => state,
            // A BGSAVE still holds the state: the database closes when it
            // is done (Db's drop syncs and closes).
            Err(_) => return Ok(()),
        };
        match Arc::try_unwrap(db) {
            Ok(db) => db.close().map_err(|source| ServerError::Db {
                dir: config.dir,
                source,
            }),
            Err(_) => Ok(()),
        }
    }
}

/// Tells a client past `maxclients` so, and closes.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

/// Serves one connection until it closes, errs, idles out or the server
/// shuts down.
async fn serve(mut stream: TcpStream, addr: SocketAddr, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let id = state.next_client_id.fetch_add(1, Ordering::Relaxed);
    state.clients.lock().insert(
        id,
        ClientInfo {
            addr,
            name: Vec::new(),
            connected_at: Instant::now(),
        },
    );
    let mut conn = Conn {
        id,
        authenticated: state.config.requirepass.is_none(),
        out: Out::default(),
    };
    let mut stop = state.shutdown.subscribe();
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut frame = Frame::new();
    'conn: loop {
        let read = tokio::select! {
            read = read_some(&mut stream, &mut input, state.config.timeout) => read,
            _ = stop.wait_for(|stop| *stop) => break 'conn,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                state.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let action = run_batch(&state, &mut conn, &mut input, &mut frame);
        // A big request leaves a big buffer: give it back once it is used.
        if input.is_empty() && input.capacity() > 4 << 20 {
            input = BytesMut::with_capacity(16 << 10);
        }
        if !conn.out.buf.is_empty() {
            if stream.write_all(&conn.out.buf).await.is_err() {
                break;
            }
            state
                .bytes_out
                .fetch_add(conn.out.buf.len() as u64, Ordering::Relaxed);
            conn.out.buf.clear();
            // A big reply leaves a big buffer: give it back.
            if conn.out.buf.capacity() > 4 << 20 {
                conn.out.buf = Vec::new();
            }
        }
        match action {
            Action::Continue => {}
            Action::Close => break,
            Action::Shutdown => {
                state.shutdown.send_replace(true);
                break;
            }
        }
    }
    state.clients.lock().remove(&id);
    state.connected.fetch_sub(1, Ordering::Relaxed);
}

/// Reads what has come, waiting at most `timeout` (an idle client).
async fn read_some(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<usize> {
    // Room doubles with what is buffered, so that a big request arriving
    // in pieces is parsed again only a logarithmic number of times.
    if input.capacity() - input.len() < 4096 {
        input.reserve(input.len().max(16 << 10));
    }
    match timeout {
        None => stream.read_buf(input).await,
        Some(t) => match tokio::time::timeout(t, stream.read_buf(input)).await {
            Ok(read) => read,
            Err(_) => Ok(0),
        },
    }
}

/// Plain writes of a pipeline (`SET key value`, `MSET`) waiting to be
/// written as one engine batch: their `+OK` replies are already in the
/// output, from `mark` on.
#[derive(Default)]
struct PendingWrites {
    /// Their keys and values, back to back.
    data: Vec<u8>,
    /// Per pair: where its key ends and its value ends in `data`.
    ends: Vec<(usize, usize)>,
    /// Per command: how many pairs it has.
    commands: Vec<usize>,
    mark: usize,
}

/// A batch of pipelined writes is written once it holds this many bytes.
const PENDING_BYTES: usize = 1 << 20;

impl PendingWrites {
    fn push(&mut self, frame: &Frame, out: &mut Out) {
        if self.commands.is_empty() {
            self.mark = out.buf.len();
        }
        let pairs = (frame.len() - 1) / 2;
        for i in 0..pairs {
            self.data.extend_from_slice(frame.arg(1 + 2 * i));
            let key_end = self.data.len();
            self.data.extend_from_slice(frame.arg(2 + 2 * i));
            self.ends.push((key_end, self.data.len()));
        }
        self.commands.push(pairs);
        out.ok();
    }

    /// Every pair, from pair `from` on.
    fn pairs(&self, from: usize) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut start = if from == 0 { 0 } else { self.ends[from - 1].1 };
        self.ends[from..].iter().map(move |&(key_end, end)| {
            let pair = (&self.data[start..key_end], &self.data[key_end..end]);
            start = end;
            pair
        })
    }

    fn write<'p>(
        db: &Db,
        pairs: impl Iterator<Item = (&'p [u8], &'p [u8])>,
        n: usize,
    ) -> kv_engine::Result<()> {
        let mut pairs = pairs.take(n);
        if n == 1 {
            let (key, value) = pairs.next().expect("one pair");
            return db.put(key, value);
        }
        let mut batch = WriteBatch::new();
        for (key, value) in pairs {
            batch.put(key, value);
        }
        db.write(batch)
    }

    /// Writes them, atomically together. If the batch fails, each command
    /// is written alone, so that each gets its own reply (a bad key fails
    /// only its own command).
    fn flush(&mut self, state: &State, out: &mut Out) {
        if self.commands.is_empty() {
            return;
        }
        let db = &state.db;
        let result = state.writing(|| Self::write(db, self.pairs(0), self.ends.len()));
        if result.is_err() {
            out.buf.truncate(self.mark);
            let mut from = 0;
            for &n in &self.commands {
                match state.writing(|| Self::write(db, self.pairs(from), n)) {
                    Ok(()) => out.ok(),
                    Err(e) => out.error(&commands::engine_error(&e)),
                }
                from += n;
            }
        }
        self.data.clear();
        self.ends.clear();
        self.commands.clear();
        if self.data.capacity() > 4 * PENDING_BYTES {
            self.data = Vec::new();
        }
    }
}

/// Runs the pipeline's pending increments as one update, and writes
/// their replies in order.
fn flush_incrs(state: &State, incrs: &mut Vec<(Vec<u8>, Result<i64, String>)>, out: &mut Out) {
    if incrs.is_empty() {
        return;
    }
    let n = incrs.len();
    let ops = std::mem::take(incrs);
    match state.writing(|| commands::incr_many(&state.db, ops)) {
        Ok(replies) => {
            for reply in replies {
                match reply {
                    Ok(v) => out.int(v),
                    Err(e) => out.error(&e),
                }
            }
        }
        Err(e) => {
            for _ in 0..n {
                out.error(&e);
            }
        }
    }
}

impl State {
    /// Runs `f`, which may write: under `SyncPolicy::Always` it waits for
    /// a sync, so it runs in `block_in_place`, and the other connections
    /// keep this worker meanwhile (their writes join the same group).
    pub(crate) fn writing<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.config.sync == SyncPolicy::Always {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }
}

/// Runs every whole command in `input`, taking them out of it; the replies
/// go to `conn.out`. Stops at the first command that closes the
/// connection, and at a malformed request (answered, then closed).
/// Consecutive plain writes are written as one engine batch (one hand-off
/// to the writer, one sync under `always`), before any other command runs
/// and before the replies are sent.
fn run_batch(state: &State, conn: &mut Conn, input: &mut BytesMut, frame: &mut Frame) -> Action {
    let mut pending = PendingWrites::default();
    let mut incrs = Vec::new();
    let mut commands_run = 0u64;
    let action = loop {
        let limits = if conn.authenticated {
            state.config.limits
        } else {
            UNAUTHENTICATED
        };
        match resp::parse(input, &limits, frame) {
            Ok(None) => break Action::Continue,
            Ok(Some(used)) => {
                input.advance(used);
                if frame.is_empty() {
                    continue;
                }
                commands_run += 1;
                if conn.authenticated
                    && let Some(op) = commands::incr_op(frame)
                {
                    pending.flush(state, &mut conn.out);
                    incrs.push(op);
                    continue;
                }
                flush_incrs(state, &mut incrs, &mut conn.out);
                if conn.authenticated && commands::is_plain_write(frame) {
                    pending.push(frame, &mut conn.out);
                    if pending.data.len() >= PENDING_BYTES {
                        pending.flush(state, &mut conn.out);
                    }
                    continue;
                }
                pending.flush(state, &mut conn.out);
                let action = if commands::may_write(frame) {
                    state.writing(|| commands::execute(state, conn, frame))
                } else {
                    commands::execute(state, conn, frame)
                };
                if !matches!(action, Action::Continue) {
                    break action;
                }
            }
            Err(e) => {
                pending.flush(state, &mut conn.out);
                flush_incrs(state, &mut incrs, &mut conn.out);
                conn.out.error(&format!("ERR {e}"));
                input.clear();
                break Action::Close;
            }
        }
    };
    pending.flush(state, &mut conn.out);
    flush_incrs(state, &mut incrs, &mut conn.out);
    state
        .total_commands
        .fetch_add(commands_run, Ordering::Relaxed);
    action
}
