//! openraft's view of the state machine: an adapter over [`StateDb`], and
//! snapshot files in `snapshots/`.
//!
//! Applying runs on a blocking thread (redb does file I/O; see
//! [`super::runtime::blocking`]); the outcomes go
//! to the [`ApplySink`] (the server's dispatcher), which sends the watch
//! events and replies. openraft's own responders only learn that the entry
//! is applied: replies never come from `client_write`'s return value.
//!
//! Snapshot files are named `snap-<index>.bin`, zero-padded so that name
//! order is index order. Building or installing one makes it current and
//! removes the older ones. Each is written under its own temporary name
//! first: openraft builds snapshots in a task of their own, so a build and
//! an install (or a received snapshot) can be written at the same time.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};

use super::TypeConfig;
use super::log_store::LogStore;
use crate::machine::{ApplySink, EntryRef, Meta, Payload, StateDb, snapshot};

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {e}")))
}

/// The Raft view of the machine meta: last applied log id and membership.
fn applied_of(meta: &Meta) -> io::Result<(Option<LogId>, Membership)> {
    let log_id = meta.applied_log_id.as_deref().map(|b| decode("applied log id", b)).transpose()?;
    let membership = meta.membership.as_deref().map(|b| decode("membership", b)).transpose()?.unwrap_or_default();
    Ok((log_id, membership))
}

/// The state machine handed to openraft.
pub struct StateMachine {
    state: Arc<StateDb>,
    sink: Arc<dyn ApplySink>,
    snapshots: Arc<SnapshotDir>,
    /// This member's Raft log: entries are applied once they are durable
    /// in it (see [`LogStore::durable_through`]).
    log: Option<LogStore>,
}

impl StateMachine {
    pub fn new(state: Arc<StateDb>, sink: Arc<dyn ApplySink>, snapshot_dir: PathBuf) -> io::Result<StateMachine> {
        fs::create_dir_all(&snapshot_dir)?;
        let snapshots = SnapshotDir { dir: snapshot_dir, next_tmp: AtomicU64::new(0) };
        snapshots.remove_unfinished()?;
        Ok(StateMachine { state, sink, snapshots: Arc::new(snapshots), log: None })
    }

    /// Applies entries only once they are durable in `log`, so that the
    /// state never gets ahead of this member's own log. Members always set
    /// it; tests that apply synthetic entries, never appended, do not.
    pub fn after_log(mut self, log: LogStore) -> StateMachine {
        self.log = Some(log);
        self
    }
}

/// Where snapshot files live.
struct SnapshotDir {
    dir: PathBuf,
    /// Numbers this process's temporary files, one per build or install.
    next_tmp: AtomicU64,
}

impl SnapshotDir {
    fn path_for(&self, index: u64) -> PathBuf {
        self.dir.join(format!("snap-{index:020}.bin"))
    }

    /// Snapshot files, oldest first.
    fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap-") && n.ends_with(".bin"))
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The newest snapshot, opened. A concurrent publish may remove the
    /// file between listing and opening it: then the newer one is read.
    fn current(&self) -> io::Result<Option<SnapshotOf<TypeConfig, File>>> {
        loop {
            let Some(path) = self.list()?.pop() else { return Ok(None) };
            match File::open(&path) {
                Ok(file) => return Self::read(file).map(Some),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves a finished temp file into place, durably, and keeps only the
    /// newest snapshot (a concurrent install may have published a newer
    /// one). Returns the published file, open: it stays readable even if
    /// a newer snapshot has already superseded it.
    fn publish(&self, tmp: &Path, index: u64) -> io::Result<File> {
        let file = File::open(tmp)?;
        fs::rename(tmp, self.path_for(index))?;
        File::open(&self.dir)?.sync_all()?;
        let mut names = self.list()?;
        names.pop();
        for older in names {
            match fs::remove_file(&older) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        metrics::gauge!("corral_snapshot_bytes").set(file.metadata()?.len() as f64);
        Ok(file)
    }

    /// A fresh temporary file name. One name per build or install: a
    /// shared name let a concurrent build and install write one file, and
    /// the install published a snapshot whose header the build had
    /// overwritten (an older index than the log had been purged to, so the
    /// member could not start again — found by the 30-minute soak).
    fn tmp(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("building-{}-{n}.tmp", std::process::id()))
    }

    /// Removes what a process that died mid-build or mid-receive left.
    /// Runs before this member listens to others, so nothing is being
    /// written here yet.
    fn remove_unfinished(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "tmp") {
                tracing::info!(path = %p.display(), "removing an unfinished snapshot file");
                fs::remove_file(&p)?;
            }
        }
        Ok(())
    }

    /// Reads a snapshot file's header: what openraft knows of it.
    fn read(mut file: File) -> io::Result<SnapshotOf<TypeConfig, File>> {
        let (raft_meta, _) = snapshot::read_header(&mut BufReader::new(&mut file)).map_err(io_err)?;
        let meta: SnapshotMeta = decode("snapshot meta", &raft_meta)?;
        file.rewind()?;
        Ok(SnapshotOf::<TypeConfig, File> { meta, snapshot: file })
    }
}

/// Builds snapshots off the apply path, from an MVCC read of `state.redb`.
pub struct SnapshotBuilder {
    state: Arc<StateDb>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, File>, io::Error> {
        let state = self.state.clone();
        let dir = self.snapshots.clone();
        super::runtime::blocking(move || {
            let started = std::time::Instant::now();
            // Durable state first: the log is purged up to this snapshot.
            state.sync().map_err(io_err)?;
            let synced = started.elapsed();
            let view = state.read_ungated().map_err(io_err)?;
            let meta = view.meta().map_err(io_err)?;
            let (last_log_id, last_membership) = applied_of(&meta)?;
            let raft_meta = SnapshotMeta { last_log_id, last_membership };
            let tmp = dir.tmp();
            let mut out = BufWriter::new(File::create(&tmp)?);
            snapshot::write(&view, postcard::to_allocvec(&raft_meta).expect("meta encodes"), &mut out)
                .map_err(io_err)?;
            out.into_inner().map_err(io_err)?.sync_all()?;
            let file = dir.publish(&tmp, meta.applied_index)?;
            tracing::info!(
                index = meta.applied_index,
                sync_ms = synced.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "snapshot built"
            );
            SnapshotDir::read(file)
        })
        .await?
    }
}

/// Copies what it reads into a file: installing a snapshot also keeps it.
struct Tee<R, W> {
    src: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        applied_of(&self.state.meta())
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        if let (Some(log), Some((last, _))) = (&self.log, batch.last()) {
            log.durable_through(last.log_id().index()).await?;
        }
        let state = self.state.clone();
        let sink = self.sink.clone();
        let (batch, result) = super::runtime::blocking(move || {
            let refs: Vec<EntryRef<'_>> = batch
                .iter()
                .map(|(e, _)| {
                    let log_id = e.log_id();
                    EntryRef {
                        index: log_id.index(),
                        log_id: postcard::to_allocvec(&log_id).expect("log id encodes"),
                        payload: match &e.payload {
                            EntryPayload::Blank => Payload::Blank,
                            EntryPayload::Normal(cmd) => Payload::Command(cmd),
                            EntryPayload::Membership(m) => {
                                let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
                                let members = m
                                    .nodes()
                                    .map(|(id, n)| (*id, (n.raft_addr.clone(), voters.contains(id))))
                                    .collect();
                                let stored = Membership::new(Some(log_id), m.clone());
                                let encoded = postcard::to_allocvec(&stored).expect("membership encodes");
                                Payload::Membership { encoded, members }
                            }
                        },
                    }
                })
                .collect();
            let started = std::time::Instant::now();
            let result = state.apply(&refs, sink.as_ref());
            metrics::histogram!("corral_apply_seconds").record(started.elapsed().as_secs_f64());
            drop(refs);
            (batch, result)
        })
        .await?;
        result.map_err(io_err)?;
        if let (Some(log), Some((last, _))) = (&self.log, batch.last()) {
            log.applied(last.log_id().index(), batch.iter().any(|(_, r)| r.is_some()));
        }
        metrics::counter!("corral_applied_entries_total").increment(batch.len() as u64);
        metrics::histogram!("corral_apply_batch_entries").record(batch.len() as f64);
        for (_, responder) in batch {
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { state: self.state.clone(), snapshots: self.snapshots.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: File) -> Result<(), io::Error> {
        let (state, sink) = (self.state.clone(), self.sink.clone());
        let dir = self.snapshots.clone();
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index());
        super::runtime::blocking(move || {
            let tmp = dir.tmp();
            let mut tee = Tee { src: BufReader::new(snapshot), copy: BufWriter::new(File::create(&tmp)?) };
            let installed = state.install(&mut tee, sink.as_ref()).map_err(io_err)?;
            io::copy(&mut tee.src, &mut tee.copy)?;
            tee.copy.into_inner().map_err(io_err)?.sync_all()?;
            dir.publish(&tmp, index)?;
            tracing::info!(index = installed.applied_index, "snapshot installed");
            Ok(())
        })
        .await?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, File>>, io::Error> {
        self.snapshots.current()
    }
}
