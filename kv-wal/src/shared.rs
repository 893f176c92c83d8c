//! [`SharedWal`]: group commit for many threads, by leader and followers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::wal::check_payload_len;
use crate::{Error, Position, Replay, Result, Wal, WalOptions, WalStats};

/// A [`Wal`] that many threads append to at once, with group commit.
///
/// [`SharedWal::append`] returns once the record is durable under the
/// policy, like [`Wal::append`] followed by [`Wal::commit`]. Callers that
/// arrive while a commit is in progress queue up; when it ends, one of them
/// becomes the *leader*, takes every queued record, writes them all with one
/// copy into the mapped file and at most one sync, and hands each
/// *follower* its position (or
/// the shared error). This is how LevelDB's and RocksDB's writers queue. No
/// thread is spawned: the leader is always one of the callers.
///
/// Each caller copies its payload before it queues; the leader encodes the
/// frames, since a frame's header check and checksum depend on the position
/// it is written at, which only the leader knows.
///
/// NOTE: so the leader hashes every payload of its group. xxh3 hashes tens
/// of GB/s, far faster than the sync the group waits for.
///
/// Under [`SyncPolicy::Interval`](crate::SyncPolicy::Interval) something
/// must call [`SharedWal::sync_if_due`] at [`SharedWal::sync_deadline`] when
/// no append arrives to do it.
#[derive(Debug)]
pub struct SharedWal {
    queue: Mutex<Queue>,
    /// Signalled when a leader finishes.
    done: Condvar,
    /// Locked by the leader for the length of a group commit, and by the
    /// other methods.
    wal: Mutex<Wal>,
    max_record_len: u32,
}

#[derive(Debug, Default)]
struct Queue {
    /// Payloads waiting for a leader, with their callers' tickets.
    pending: Vec<(u64, Vec<u8>)>,
    /// Outcomes the leader left for its followers, by ticket.
    finished: HashMap<u64, Result<Position>>,
    /// Whether a leader is writing a group now.
    leading: bool,
    next_ticket: u64,
}

impl SharedWal {
    /// Opens the log in `dir`; see [`Wal::open`].
    ///
    /// # Errors
    ///
    /// As [`Wal::open`].
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<SharedWal> {
        Wal::open(dir, options).map(SharedWal::new)
    }

    /// Shares an open `Wal`. Records it has buffered stay buffered until
    /// the next group commit.
    pub fn new(wal: Wal) -> SharedWal {
        SharedWal {
            queue: Mutex::new(Queue::default()),
            done: Condvar::new(),
            max_record_len: wal.options().max_record_len,
            wal: Mutex::new(wal),
        }
    }

    /// Appends a record and returns its position once it is durable under
    /// the policy (written, and synced under
    /// [`SyncPolicy::Always`](crate::SyncPolicy::Always)).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyRecord`] or [`Error::RecordTooLarge`] for this payload
    /// alone. Otherwise, if the group commit fails, every caller in the
    /// group gets the failure ([`Error::Io`] the first time) and the record
    /// is not acknowledged. After a failed write the group's records are
    /// discarded (see [`Wal::flush`]) and later calls go on; after a failed
    /// sync the `Wal` is poisoned and later calls get [`Error::Poisoned`].
    pub fn append(&self, payload: &[u8]) -> Result<Position> {
        check_payload_len(payload.len(), self.max_record_len)?;
        let payload = payload.to_vec();

        let mut queue = self.queue.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, payload));
        loop {
            if let Some(outcome) = queue.finished.remove(&ticket) {
                return outcome;
            }
            // Invariant: a leader leaves the outcome of every frame it took
            // before it clears `leading`. So with no leader and no outcome,
            // this frame is still pending, and this caller leads.
            if !queue.leading {
                break;
            }
            self.done.wait(&mut queue);
        }
        queue.leading = true;
        let group = std::mem::take(&mut queue.pending);
        drop(queue);

        let leader = Leader {
            shared: self,
            tickets: group.iter().map(|&(ticket, _)| ticket).collect(),
            finished: false,
        };
        let outcome = self.write_group(&group);
        leader.finish(ticket, outcome)
    }

    /// Appends and commits a group of payloads, holding the `Wal` lock.
    fn write_group(&self, group: &[(u64, Vec<u8>)]) -> Result<Vec<Position>> {
        let mut wal = self.wal.lock();
        let start = wal.end_position();
        let written = group
            .iter()
            .map(|(_, payload)| wal.append(payload))
            .collect::<Result<Vec<_>>>()
            .and_then(|positions| wal.commit().map(|()| positions));
        if written.is_err() && wal.poison_cause().is_none() {
            // A rotation in the middle of the group may have written its
            // first frames before failing: none of the group may stay.
            // (This poisons the `Wal` if it cannot.)
            let _ = wal.discard_from(start);
        }
        written
    }

    /// Flushes and syncs whatever is written, whatever the policy.
    ///
    /// # Errors
    ///
    /// As [`Wal::sync`].
    pub fn sync(&self) -> Result<()> {
        self.wal.lock().sync()
    }

    /// Syncs if [`SharedWal::sync_deadline`] has passed; see
    /// [`Wal::sync_if_due`].
    ///
    /// # Errors
    ///
    /// As [`Wal::sync_if_due`].
    pub fn sync_if_due(&self) -> Result<bool> {
        self.wal.lock().sync_if_due()
    }

    /// When [`SharedWal::sync_if_due`] must next be called; see
    /// [`Wal::sync_deadline`].
    pub fn sync_deadline(&self) -> Option<Instant> {
        self.wal.lock().sync_deadline()
    }

    /// Starts a new file; see [`Wal::rotate`].
    ///
    /// # Errors
    ///
    /// As [`Wal::rotate`].
    pub fn rotate(&self) -> Result<Position> {
        self.wal.lock().rotate()
    }

    /// Deletes the files wholly before `position`; see
    /// [`Wal::remove_before`].
    ///
    /// # Errors
    ///
    /// As [`Wal::remove_before`].
    pub fn remove_before(&self, position: Position) -> Result<usize> {
        self.wal.lock().remove_before(position)
    }

    /// Iterates over the records written so far; see [`Wal::read_from`].
    pub fn read_from(&self, from: Position) -> Replay {
        self.wal.lock().read_from(from)
    }

    /// Where the next frame will go.
    pub fn end_position(&self) -> Position {
        self.wal.lock().end_position()
    }

    /// What the `Wal` has done since it was opened.
    pub fn stats(&self) -> WalStats {
        self.wal.lock().stats()
    }

    /// Why the `Wal` refuses to write, if an earlier sync failed (or a
    /// failed write could not be discarded).
    pub fn poison_cause(&self) -> Option<String> {
        self.wal.lock().poison_cause().map(str::to_owned)
    }

    /// The `Wal` back, for a single owner.
    pub fn into_inner(self) -> Wal {
        self.wal.into_inner()
    }
}

/// The leader of a group commit. It hands every follower its outcome and
/// steps down, also if the group commit panics, so that followers never
/// wait for a leader that is gone.
struct Leader<'a> {
    shared: &'a SharedWal,
    tickets: Vec<u64>,
    finished: bool,
}

impl Leader<'_> {
    /// Publishes the group's outcome and returns the leader's own.
    fn finish(mut self, own: u64, outcome: Result<Vec<Position>>) -> Result<Position> {
        let mut queue = self.shared.queue.lock();
        let mut own_outcome = None;
        match outcome {
            Ok(positions) => {
                for (&ticket, position) in self.tickets.iter().zip(positions) {
                    if ticket == own {
                        own_outcome = Some(Ok(position));
                    } else {
                        queue.finished.insert(ticket, Ok(position));
                    }
                }
            }
            Err(error) => {
                for &ticket in &self.tickets {
                    if ticket != own {
                        queue.finished.insert(ticket, Err(error.duplicate()));
                    }
                }
                own_outcome = Some(Err(error));
            }
        }
        queue.leading = false;
        self.finished = true;
        drop(queue);
        self.shared.done.notify_all();
        // The leader's own frame is always in the group it took.
        own_outcome.unwrap_or_else(|| {
            Err(Error::Poisoned {
                cause: "a group commit lost track of its leader's record".to_owned(),
            })
        })
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The group commit panicked: nothing in the group is known to be
        // written, and the `Wal` may be half-way through a write.
        let cause = "a thread panicked during a group commit".to_owned();
        self.shared.wal.lock().poison_with(cause.clone());
        let mut queue = self.shared.queue.lock();
        for &ticket in &self.tickets {
            queue.finished.insert(
                ticket,
                Err(Error::Poisoned {
                    cause: cause.clone(),
                }),
            );
        }
        queue.leading = false;
        drop(queue);
        self.shared.done.notify_all();
    }
}
