//! The Raft log in `raft-log.redb`, with group commit.
//!
//! Tables: `log` maps an index to a postcard-encoded entry; `meta` holds the
//! vote, the committed log id and the last purged log id.
//!
//! ## Group commit
//!
//! openraft calls [`RaftLogStorage::append`] from its core task and moves on;
//! the entries must be readable at once and durable only when the callback
//! fires. So `append` parks the entries in memory (`pending`, which readers
//! consult first) and queues the write. One writer thread drains everything
//! queued, writes it in one redb transaction and fsyncs once: under load,
//! many appends share one fsync. The queue keeps every write in order,
//! votes and truncations included, as openraft requires.
//!
//! ## The tail in memory
//!
//! The apply and the replication streams read the log just behind its end.
//! Flushed entries move from `pending` to `recent`, which keeps the newest
//! of them up to `tail_bytes` (encoded): a read that starts inside this
//! tail is served from memory, without a redb read on a blocking thread.
//! Older reads (a follower catching up) go to redb.
//!
//! ## Pacing by the apply
//!
//! A client's reply waits for its entry's fsync *and* its apply, in log
//! order. When the apply falls behind (a plugin validates every write, or
//! the CPU is short), fsyncing a few entries at a time as they arrive
//! makes nothing answer sooner: they would wait behind the apply anyway.
//! It only spends CPU on small commits, which slows the apply further (on
//! 2 cores, validated writes fell to 6 entries per fsync). So while the
//! apply has not reached the batch flushed last, and clients wait on this
//! member's apply (its batches carry replies, as a leader's do), the
//! writer holds its next batch for up to `pace` ([`LogStore::pace_by_apply`])
//! and lets it grow. It never waits while the apply itself waits for an
//! entry to be flushed here ([`LogStore::durable_through`]), and a
//! follower, whose acknowledgements the leader counts, does not pace.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use parking_lot::{Condvar, Mutex};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::TypeConfig;

/// One Raft log entry, as this store keeps it (postcard-encoded).
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("raft records encode")
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {e}")))
}

/// One queued write. Each becomes part of the writer's next transaction.
enum WriteOp {
    Append {
        entries: Vec<(u64, LogId, Vec<u8>)>,
        callback: IOFlushed<TypeConfig>,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Committed {
        bytes: Vec<u8>,
    },
    TruncateAfter {
        index: Option<u64>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Write what came before, then stop the writer (see [`LogStore::close`]).
    Stop,
}

/// What readers and the log state need without touching the disk.
struct Cached {
    /// Appended entries not yet committed to redb.
    pending: BTreeMap<u64, Entry>,
    /// The newest entries already in redb, each with its encoded size, just
    /// below `pending`: together they are one run of the log without gaps.
    recent: BTreeMap<u64, (Entry, usize)>,
    /// Encoded bytes in `recent`, at most `tail_bytes`.
    recent_bytes: usize,
    tail_bytes: usize,
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Why the writer's last batch failed: nothing queued becomes durable
    /// any more in this process.
    failed: Option<String>,
}

struct Shared {
    db: Database,
    cached: Mutex<Cached>,
    /// The writer thread, until [`LogStore::close`] joins it.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Woken after each batch the writer finishes.
    flushed: tokio::sync::Notify,
    /// Woken when a write is queued: the writer task waits on it (the
    /// writer thread blocks on the queue instead).
    queued: tokio::sync::Notify,
    pace: Pace,
}

/// What the writer paces its batches by (see "Pacing by the apply").
#[derive(Default)]
struct Pace {
    state: Mutex<PaceState>,
    /// Wakes a waiting writer thread when the state changes.
    changed: Condvar,
    /// Wakes a waiting writer task (the simulation's).
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct PaceState {
    /// Longest a batch waits for the apply; zero turns pacing off.
    max: Duration,
    /// The last index the state machine applied.
    applied: u64,
    /// Whether that apply answered clients here (a leader's does).
    replies: bool,
    /// The apply is waiting for an entry to be flushed here.
    apply_waits: bool,
    /// The first entry of the batch flushed last.
    last_first: u64,
}

impl PaceState {
    /// Whether the writer should hold its next batch: the apply has not
    /// reached the batch flushed last, clients wait on it, and it is not
    /// waiting for this log.
    fn hold(&self) -> bool {
        !self.max.is_zero() && self.replies && !self.apply_waits && self.applied + 1 < self.last_first
    }
}

impl Pace {
    fn update(&self, f: impl FnOnce(&mut PaceState)) {
        f(&mut self.state.lock());
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// Holds the writer thread while [`PaceState::hold`], at most `max`.
    fn wait(&self) {
        let mut state = self.state.lock();
        let deadline = Instant::now() + state.max;
        while state.hold() && !self.changed.wait_until(&mut state, deadline).timed_out() {}
    }

    /// [`Pace::wait`] for the writer task.
    async fn wait_async(&self) {
        let deadline = {
            let state = self.state.lock();
            tokio::time::Instant::now() + state.max
        };
        loop {
            let changed = self.notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.state.lock().hold() {
                return;
            }
            tokio::select! {
                biased;
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Cached {
    /// Entries `start..end` from memory, if the tail held in memory begins
    /// at or before `start`.
    fn tail(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.recent.keys().next().or_else(|| self.pending.keys().next())?;
        if start < *first {
            return None;
        }
        let recent = self.recent.range(start..end).map(|(_, (e, _))| e.clone());
        Some(recent.chain(self.pending.range(start..end).map(|(_, e)| e.clone())).collect())
    }

    /// Moves the flushed entry at `index` from `pending` to `recent`, then
    /// drops the oldest recent entries beyond `tail_bytes`.
    fn flushed(&mut self, index: u64, size: usize) {
        let Some(entry) = self.pending.remove(&index) else { return };
        debug_assert!(self.recent.last_key_value().is_none_or(|(&last, _)| last + 1 == index), "a gap in the tail");
        self.recent.insert(index, (entry, size));
        self.recent_bytes += size;
        while self.recent_bytes > self.tail_bytes
            && let Some((_, (_, size))) = self.recent.pop_first()
        {
            self.recent_bytes -= size;
        }
    }

    /// Keeps only the recent entries for which `keep` holds.
    fn retain_recent(&mut self, keep: impl Fn(u64) -> bool) {
        self.recent.retain(|&i, _| keep(i));
        self.recent_bytes = self.recent.values().map(|(_, size)| size).sum();
    }
}

impl Shared {
    /// Entries `start..end`: the stored ones, then the pending ones.
    fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        // Take the pending entries and open the read under one lock: the
        // writer removes entries from `pending` only after their commit, so
        // whatever is not in `pending` is in this read's view.
        let (pending, txn) = {
            let cached = self.cached.lock();
            let pending: Vec<Entry> = cached.pending.range(start..end).map(|(_, e)| e.clone()).collect();
            let txn = self.db.begin_read().map_err(io_err)?;
            (pending, txn)
        };
        let stored_end = pending.first().map_or(end, |e| e.index());
        let mut out = Vec::new();
        if start < stored_end {
            let log = txn.open_table(LOG).map_err(io_err)?;
            for item in log.range(start..stored_end).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                out.push(decode::<Entry>("log entry", v.value())?);
            }
        }
        out.extend(pending);
        Ok(out)
    }
}

/// The log store handed to openraft. Cloning shares it: the clones are the
/// log readers of the replication tasks.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteOp>,
}

impl LogStore {
    /// Opens or creates the log and starts its writer thread. `cache_bytes`
    /// is redb's page cache: the log is mostly written, and read back soon
    /// after, so a small one serves.
    pub fn open(path: &Path, cache_bytes: usize, tail_bytes: usize) -> io::Result<LogStore> {
        Self::on(Database::builder().set_cache_size(cache_bytes).create(path).map_err(io_err)?, tail_bytes)
    }

    /// The log in `db`, which the caller opened: on a file, or in tests on
    /// a storage backend that can fail. Up to `tail_bytes` of the newest
    /// flushed entries stay in memory for readers.
    pub fn on(db: Database, tail_bytes: usize) -> io::Result<LogStore> {
        let txn = db.begin_write().map_err(io_err)?;
        let (last, vote, committed, last_purged, first) = {
            let log = txn.open_table(LOG).map_err(io_err)?;
            let meta = txn.open_table(META).map_err(io_err)?;
            let last = match log.last().map_err(io_err)? {
                Some((_, v)) => Some(decode::<Entry>("log entry", v.value())?.log_id()),
                None => None,
            };
            let first = log.first().map_err(io_err)?.map(|(k, _)| k.value());
            let get = |k: &str| -> io::Result<Option<Vec<u8>>> {
                Ok(meta.get(k).map_err(io_err)?.map(|v| v.value().to_vec()))
            };
            let vote = get("vote")?.map(|b| decode::<Vote>("vote", &b)).transpose()?;
            let committed = get("committed")?.map(|b| decode::<LogId>("committed", &b)).transpose()?;
            let purged = get("last_purged")?.map(|b| decode::<LogId>("last_purged", &b)).transpose()?;
            (last, vote, committed, purged, first)
        };
        txn.commit().map_err(io_err)?;
        // Entries a purge had not yet deleted when the process stopped.
        let backlog = last_purged.as_ref().map(|p| p.index()).filter(|&p| first.is_some_and(|f| f <= p));
        let last_log_id = match (last, last_purged) {
            (Some(l), Some(p)) if l.index() < p.index() => Some(p),
            (l, p) => l.or(p),
        };
        let shared = Arc::new(Shared {
            db,
            cached: Mutex::new(Cached {
                pending: BTreeMap::new(),
                recent: BTreeMap::new(),
                recent_bytes: 0,
                tail_bytes,
                last_log_id,
                last_purged,
                vote,
                committed,
                failed: None,
            }),
            writer: Mutex::new(None),
            flushed: tokio::sync::Notify::new(),
            queued: tokio::sync::Notify::new(),
            pace: Pace::default(),
        });
        tracing::info!(
            first = ?first,
            last = ?last_log_id.map(|l| l.index()),
            committed = ?committed.map(|c| c.index()),
            purged = ?last_purged.map(|p| p.index()),
            "raft log opened"
        );
        let (writes, rx) = mpsc::channel();
        let thread = spawn_writer(shared.clone(), rx, backlog)?;
        *shared.writer.lock() = thread;
        Ok(LogStore { shared, writes })
    }

    /// Writes what is queued, then stops the writer thread and waits for
    /// it; later writes fail. (A writer task, on a current-thread runtime,
    /// is only told to stop: it cannot be waited for here.) Called once
    /// Raft has stopped, before the process ends or replaces itself: a
    /// writer cut off in the middle of a commit would leave the file
    /// half-written.
    pub fn close(&self) {
        let thread = self.shared.writer.lock().take();
        if self.queue(WriteOp::Stop).is_ok()
            && let Some(thread) = thread
        {
            let _ = thread.join();
        }
    }

    /// Lets the writer hold a batch for up to `max` while the apply is
    /// behind (see "Pacing by the apply"); zero turns it off, the default.
    pub fn pace_by_apply(&self, max: Duration) {
        self.shared.pace.update(|p| p.max = max);
    }

    /// The state machine applied up to `index`; `replies` says whether
    /// clients here were waiting on that batch.
    pub fn applied(&self, index: u64, replies: bool) {
        self.shared.pace.update(|p| {
            p.applied = index;
            p.replies = replies;
        });
    }

    /// Waits until every entry up to `index` in this log is durable here.
    ///
    /// openraft hands a follower's state machine entries that the cluster
    /// committed once they are queued in the local log, before they are
    /// fsynced here. Applying them first would let the state get ahead of
    /// this member's own log; if that fsync then fails, the restarted member
    /// finds its state past the end of its log (openraft 0.10.0-alpha.37
    /// then purges the log to the state's index and panics when its
    /// snapshot is older, which the nemesis hit). Fails if a write failed.
    pub async fn durable_through(&self, index: u64) -> io::Result<()> {
        let mut waiting = false;
        let result = loop {
            let flushed = self.shared.flushed.notified();
            tokio::pin!(flushed);
            flushed.as_mut().enable();
            {
                let cached = self.shared.cached.lock();
                if let Some(why) = &cached.failed {
                    break Err(io_err(format!(
                        "not applying up to entry {index}: the raft log makes nothing durable any more ({why})"
                    )));
                }
                // Truncations drop replaced entries from `pending` at once,
                // and the new ones are queued after them: nothing pending
                // at or below `index` means all of it is on disk.
                if cached.pending.range(..=index).next().is_none() {
                    break Ok(());
                }
            }
            if !waiting {
                // The writer must not hold a batch for an apply that waits
                // for it.
                waiting = true;
                self.shared.pace.update(|p| p.apply_waits = true);
            }
            flushed.await;
        };
        if waiting {
            self.shared.pace.update(|p| p.apply_waits = false);
        }
        result
    }

    fn queue(&self, op: WriteOp) -> io::Result<()> {
        self.writes.send(op).map_err(|_| io_err("the raft log writer has stopped"))?;
        self.shared.queued.notify_one();
        Ok(())
    }

    async fn queue_and_wait(&self, op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> WriteOp) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.queue(op(tx))?;
        rx.await.map_err(|_| io_err("the raft log writer has stopped"))?
    }
}

/// A dropped handle wakes a writer task, so that once the last one is gone
/// it sees the queue closed and ends (a writer thread sees it by itself).
impl Drop for LogStore {
    fn drop(&mut self) {
        self.shared.queued.notify_one();
    }
}

/// At most this many purged entries are deleted in one write batch. A purge
/// behind a snapshot covers ~100,000 entries, and deleting them in the
/// transaction that also appends held every append behind it for 100-180
/// ms; the purge pointer moves at once, and the deletion follows in pieces.
const PURGE_CHUNK: usize = 1024;

/// Starts the writer: a thread, or a task on a current-thread runtime
/// (the deterministic simulation, which must schedule all the work
/// itself). Both write one redb transaction, with one fsync, per drained
/// batch. `backlog` is the highest purged index that may still hold
/// entries. Returns the thread to join.
fn spawn_writer(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriteOp>,
    backlog: Option<u64>,
) -> io::Result<Option<std::thread::JoinHandle<()>>> {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;

    // However the writer ends (closed, or a panic), nothing queued becomes
    // durable any more: applies waiting for it fail.
    fn ended(shared: &Shared, panicked: bool) {
        let why = if panicked { "the raft log writer panicked" } else { "the raft log is closed" };
        shared.cached.lock().failed.get_or_insert_with(|| why.into());
        shared.flushed.notify_waiters();
    }
    if super::runtime::on_one_thread() {
        tokio::spawn(async move {
            let run = AssertUnwindSafe(writer_task(&shared, rx, backlog)).catch_unwind().await;
            ended(&shared, run.is_err());
        });
        return Ok(None);
    }
    let thread = std::thread::Builder::new()
        .name("raft-log-writer".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| writer_thread(&shared, rx, backlog)));
            ended(&shared, run.is_err());
            if let Err(panic) = run {
                std::panic::resume_unwind(panic);
            }
        })
        .map_err(io_err)?;
    Ok(Some(thread))
}

fn writer_thread(shared: &Shared, rx: mpsc::Receiver<WriteOp>, mut backlog: Option<u64>) {
    loop {
        // With deletions left, an idle writer goes on with them.
        let first = if backlog.is_some() {
            match rx.recv_timeout(std::time::Duration::from_millis(10)) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        };
        // Only appends are held: a vote, a truncation or a stop goes at once.
        if matches!(first, Some(WriteOp::Append { .. })) {
            shared.pace.wait();
        }
        if !write_drained(shared, &rx, first, &mut backlog) {
            return;
        }
    }
}

async fn writer_task(shared: &Shared, rx: mpsc::Receiver<WriteOp>, mut backlog: Option<u64>) {
    loop {
        let first = match rx.try_recv() {
            Ok(op) => Some(op),
            Err(mpsc::TryRecvError::Disconnected) => return,
            // With deletions left, an idle writer goes on with them.
            Err(mpsc::TryRecvError::Empty) if backlog.is_some() => None,
            Err(mpsc::TryRecvError::Empty) => {
                shared.queued.notified().await;
                continue;
            }
        };
        if matches!(first, Some(WriteOp::Append { .. })) {
            shared.pace.wait_async().await;
        }
        if !write_drained(shared, &rx, first, &mut backlog) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Drains the queue behind `first` (up to a `Stop`), writes it all in one
/// transaction, then completes each write. Returns false once stopped.
fn write_drained(
    shared: &Shared,
    rx: &mpsc::Receiver<WriteOp>,
    first: Option<WriteOp>,
    backlog: &mut Option<u64>,
) -> bool {
    let mut batch: Vec<WriteOp> = first.into_iter().collect();
    let mut stop = matches!(batch.last(), Some(WriteOp::Stop));
    while !stop && let Ok(op) = rx.try_recv() {
        stop = matches!(op, WriteOp::Stop);
        batch.push(op);
    }
    if stop && batch.len() == 1 {
        return false;
    }
    let started = Instant::now();
    let result = write_batch(&shared.db, &batch, *backlog);
    if let Ok(left) = &result {
        *backlog = *left;
    }
    let result = result.map(|_| ());
    if batch.is_empty() {
        if let Err(e) = result {
            // Left for the next start; a failing disk shows on the next
            // append, which fails the node.
            tracing::warn!("deleting purged log entries: {e}");
            *backlog = None;
        }
        return true;
    }
    let entries: usize =
        batch.iter().map(|op| if let WriteOp::Append { entries, .. } = op { entries.len() } else { 0 }).sum();
    metrics::histogram!("corral_log_fsync_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("corral_log_fsync_entries").record(entries as f64);
    if let Err(e) = &result {
        shared.cached.lock().failed = Some(e.to_string());
    } else {
        let first = batch.iter().find_map(|op| match op {
            WriteOp::Append { entries, .. } => entries.first().map(|(index, _, _)| *index),
            _ => None,
        });
        if let Some(first) = first {
            shared.pace.update(|p| p.last_first = first);
        }
        let mut cached = shared.cached.lock();
        for op in &batch {
            if let WriteOp::Append { entries, .. } = op {
                for (index, log_id, bytes) in entries {
                    // A truncation may have replaced the entry since.
                    if cached.pending.get(index).is_some_and(|e| e.log_id() == *log_id) {
                        cached.flushed(*index, bytes.len());
                    }
                }
            }
        }
    }
    shared.flushed.notify_waiters();
    for op in batch {
        let r = result.as_ref().map(|_| ()).map_err(io_err);
        match op {
            WriteOp::Append { callback, .. } => callback.io_completed(r),
            WriteOp::Vote { done, .. } | WriteOp::TruncateAfter { done, .. } | WriteOp::Purge { done, .. } => {
                let _ = done.send(r);
            }
            WriteOp::Committed { .. } | WriteOp::Stop => {}
        }
    }
    !stop
}

/// Writes `batch` and deletes up to [`PURGE_CHUNK`] purged entries (those
/// at or below `backlog`, or below a purge in the batch). Returns the
/// backlog left.
fn write_batch(db: &Database, batch: &[WriteOp], mut backlog: Option<u64>) -> Result<Option<u64>, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, _, bytes) in entries {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                WriteOp::Vote { bytes, .. } => {
                    meta.insert("vote", bytes.as_slice())?;
                }
                WriteOp::Committed { bytes } => {
                    meta.insert("committed", bytes.as_slice())?;
                }
                WriteOp::TruncateAfter { index, .. } => {
                    let from = index.map_or(0, |i| i + 1);
                    log.retain_in(from.., |_, _| false)?;
                }
                WriteOp::Purge { upto, .. } => {
                    meta.insert("last_purged", encode(upto).as_slice())?;
                    backlog = backlog.max(Some(upto.index()));
                }
                WriteOp::Stop => {}
            }
        }
        if let Some(upto) = backlog {
            let chunk: Vec<u64> =
                log.range(..=upto)?.take(PURGE_CHUNK).map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
            if let Some(&last) = chunk.last() {
                log.retain_in(..=last, |_, _| false)?;
            }
            if chunk.len() < PURGE_CHUNK {
                backlog = None;
            }
        }
    }
    txn.commit()?;
    Ok(backlog)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        // Purged entries may still be on disk until the writer deletes them.
        let start = match self.shared.cached.lock().last_purged.as_ref() {
            Some(p) => start.max(p.index() + 1),
            None => start,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.shared.cached.lock().tail(start, end) {
            return Ok(entries);
        }
        let shared = self.shared.clone();
        super::runtime::blocking(move || shared.read_range(start, end)).await?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.cached.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let cached = self.shared.cached.lock();
        Ok(LogState { last_purged_log_id: cached.last_purged, last_log_id: cached.last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote);
        self.queue_and_wait(|done| WriteOp::Vote { bytes, done }).await?;
        self.shared.cached.lock().vote = Some(*vote);
        Ok(())
    }

    /// Queued without waiting: it becomes durable with the next fsync. A
    /// committed id lost in a crash only makes the restart re-apply less
    /// eagerly; readiness waits for `Raft::wait_for_recovery` anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = &committed {
            self.queue(WriteOp::Committed { bytes: encode(c) })?;
        }
        self.shared.cached.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.cached.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut cached = self.shared.cached.lock();
            for e in entries {
                let log_id = e.log_id();
                encoded.push((log_id.index(), log_id, encode(&e)));
                cached.pending.insert(log_id.index(), e);
                cached.last_log_id = Some(log_id);
            }
        }
        self.queue(WriteOp::Append { entries: encoded, callback })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let index = last_log_id.as_ref().map(|l| l.index());
        {
            let mut cached = self.shared.cached.lock();
            let from = index.map_or(0, |i| i + 1);
            cached.pending.retain(|&i, _| i < from);
            cached.retain_recent(|i| i < from);
            let beyond = |last: &Option<LogId>| last.as_ref().is_some_and(|l| l.index() >= from);
            if last_log_id.is_none() || beyond(&cached.last_log_id) {
                cached.last_log_id = last_log_id.or_else(|| cached.last_purged);
            }
        }
        self.queue_and_wait(|done| WriteOp::TruncateAfter { index, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut cached = self.shared.cached.lock();
            cached.pending.retain(|&i, _| i > log_id.index());
            cached.retain_recent(|i| i > log_id.index());
            cached.last_purged = Some(log_id);
            if cached.last_log_id.as_ref().is_none_or(|l| l.index() < log_id.index()) {
                cached.last_log_id = Some(log_id);
            }
        }
        self.queue_and_wait(|done| WriteOp::Purge { upto: log_id, done }).await
    }
}
