//! The writer thread: the only code that appends to the log or changes the
//! index on behalf of callers.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use kv_format::{NO_EXPIRY, Record, RecordKind};
use kv_index::Entry;
use kv_log::{Location, Log};

use crate::db::Shared;
use crate::reply::Reply;
use crate::{Error, Result};

/// One write a caller asked for.
pub(crate) enum Write {
    Put { key: Box<[u8]>, value: Box<[u8]> },
    Delete { key: Box<[u8]> },
}

/// A message to the writer thread.
pub(crate) enum Command {
    Write {
        write: Write,
        reply: Reply,
    },
    /// Make everything acknowledged so far durable.
    Sync {
        reply: Reply,
    },
    /// Flush, sync and stop.
    Close {
        reply: Reply,
    },
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: Log,
    pub(crate) next_seq: u64,
    pub(crate) max_group: usize,
    /// Set by the first failed write or sync; every later write is refused.
    pub(crate) poisoned: Option<String>,
}

/// A write of the current group, with where its record went.
struct Applied {
    write: Write,
    reply: Reply,
    seq: u64,
    loc: Location,
}

impl Writer {
    /// Serves commands until a `Close` arrives or every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let mut group = Vec::with_capacity(self.max_group);
        while let Ok(first) = rx.recv() {
            // Group commit: take whatever else is already waiting, so that
            // many callers share one write.
            let mut next = Some(first);
            loop {
                match next.take() {
                    Some(Command::Write { write, reply }) => {
                        group.push((write, reply));
                        if group.len() < self.max_group {
                            next = rx.try_recv().ok();
                        }
                    }
                    Some(Command::Sync { reply }) => {
                        self.commit_group(&mut group);
                        let result = self.sync();
                        reply.send(result);
                        next = rx.try_recv().ok();
                    }
                    Some(Command::Close { reply }) => {
                        self.commit_group(&mut group);
                        reply.send(self.sync());
                        return;
                    }
                    None => break,
                }
                if next.is_none() {
                    break;
                }
            }
            self.commit_group(&mut group);
        }
        // Every `Db` handle is gone without a Close: still leave the files
        // synced.
        if let Err(e) = self.sync() {
            log::error!("final sync failed: {e}");
        }
    }

    fn poison(&mut self, err: &Error) {
        if self.poisoned.is_none() {
            log::error!("refusing further writes: {err}");
            self.poisoned = Some(err.to_string());
        }
    }

    fn refusal(&self) -> Option<Error> {
        self.poisoned.as_ref().map(|reason| Error::Poisoned {
            reason: reason.clone(),
        })
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(err) = self.refusal() {
            return Err(err);
        }
        let result = self.log.sync().map_err(Error::from);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    /// Appends the group's records, makes them readable, applies them to
    /// the index, and only then acknowledges each caller.
    fn commit_group(&mut self, group: &mut Vec<(Write, Reply)>) {
        if group.is_empty() {
            return;
        }
        if let Some(err) = self.refusal() {
            for (_, reply) in group.drain(..) {
                reply.send(Err(err.duplicate()));
            }
            return;
        }
        let mut applied = Vec::with_capacity(group.len());
        let mut failure = None;
        for (write, reply) in group.drain(..) {
            if failure.is_some() {
                applied.push((write, reply, None));
                continue;
            }
            let seq = self.next_seq;
            let record = match &write {
                Write::Put { key, value } => Record::put(seq, key, value),
                Write::Delete { key } => Record::tombstone(seq, key),
            };
            match self.log.append(&record) {
                Ok(loc) => {
                    self.next_seq += 1;
                    applied.push((write, reply, Some((seq, loc))));
                }
                Err(e) => {
                    failure = Some(Error::from(e));
                    applied.push((write, reply, None));
                }
            }
        }
        if failure.is_none()
            && let Err(e) = self.log.flush()
        {
            failure = Some(Error::from(e));
        }
        if let Some(err) = failure {
            // Nothing of this group was made readable or acknowledged.
            self.poison(&err);
            for (_, reply, _) in applied {
                reply.send(Err(err.duplicate()));
            }
            return;
        }
        let applied = applied.into_iter().filter_map(|(write, reply, at)| {
            at.map(|(seq, loc)| Applied {
                write,
                reply,
                seq,
                loc,
            })
        });
        for a in applied {
            self.apply(&a);
            a.reply.send(Ok(()));
        }
    }

    /// Makes one written record visible to readers.
    fn apply(&self, a: &Applied) {
        let index = &self.shared.index;
        match &a.write {
            Write::Put { key, .. } => {
                index.insert(key, entry_for(a.loc, a.seq, NO_EXPIRY, RecordKind::Put));
            }
            Write::Delete { key } => {
                index.remove(key);
            }
        }
    }
}

/// The index entry for a record at `loc`.
pub(crate) fn entry_for(loc: Location, seq: u64, expires_at: u64, kind: RecordKind) -> Entry {
    Entry {
        segment: loc.segment,
        offset: loc.offset,
        len: loc.len,
        seq,
        expires_at,
        tombstone: kind == RecordKind::Tombstone,
    }
}
