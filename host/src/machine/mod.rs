//! The replicated state machine: znode semantics on top of the stored tree.
//!
//! [`StateDb`] owns `state.redb`. Raft hands it committed entries in batches
//! ([`StateDb::apply`]); each command's transition is in [`apply`], reads are
//! in [`read`], and the canonical snapshot format is in [`snapshot`].
//!
//! Applying is deterministic: the outcome of an entry depends only on the
//! state and the entry. No clock, no randomness, no node configuration.
//!
//! ## Visibility: why there is a gate
//!
//! ZooKeeper promises that a client sees a watch event before it sees the
//! data that fired it. A batch's changes become visible to readers at the
//! redb commit, and its events reach the connections when the [`ApplySink`]
//! routes them. Both happen under the write side of [`StateDb::gate`]; a
//! read opens its redb transaction under the read side. So a read either
//! sees the state before the batch, or sees it after the batch's events are
//! already queued on every connection, ahead of the read's own reply.

pub mod acl;
pub mod apply;
pub mod command;
pub mod plugins;
pub mod read;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use redb::{Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use self::apply::Tables;
use self::command::{ClusterConfig, Command, Origin};
use self::plugins::PluginEnv;
use crate::proto::data::Stat;
use crate::proto::error::ErrorCode;
use crate::proto::response::EventType;
use crate::tree::{self, Digest, META, NODES, Owner, RecordKind, StoreError};

/// Set by the first `Init` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitState {
    pub config: ClusterConfig,
    pub secret: [u8; 32],
}

/// The machine's own record, stored under `meta` and in every snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Index of the last applied entry: the current zxid.
    pub applied_index: u64,
    /// The last applied log id, encoded by the Raft layer.
    pub applied_log_id: Option<Vec<u8>>,
    /// The last applied membership, encoded by the Raft layer.
    pub membership: Option<Vec<u8>>,
    pub digest: Digest,
    /// Znodes in the tree.
    pub node_count: u64,
    /// Bytes of znode data in the tree.
    pub data_bytes: u64,
    /// Ephemeral znodes in the tree.
    pub ephemeral_count: u64,
    /// Replicated time: the largest entry time applied so far.
    pub last_time_ms: i64,
    pub init: Option<InitState>,
    /// The cluster's members, from the last applied membership entry, with
    /// the addresses each published (`Op::MemberInfo`).
    pub members: BTreeMap<u64, Member>,
    /// The index of the last membership entry: `/zookeeper/config`'s version.
    pub config_version: u64,
    /// The wasm engine fingerprint of the cluster, fixed by the first
    /// plugin deploy: members with another one do not apply plugin entries.
    pub plugin_fingerprint: Option<String>,
    /// Validators and triggers deployed: while zero, writes skip plugins.
    pub bound_plugins: u32,
    /// The index of the entry that paused plugins for an engine upgrade,
    /// while they are paused (`EngineAction`).
    pub plugins_paused_at: Option<u64>,
}

/// One member as the replicated state knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub raft_addr: String,
    /// Votes (a ZooKeeper participant), or only follows (an observer).
    pub voter: bool,
    /// Its ZooKeeper client address, once it published it.
    pub client_addr: Option<String>,
    /// Its admin HTTP address, once it published it.
    pub http_addr: Option<String>,
    /// The Corral version and wasm engine fingerprint it runs, as it
    /// published them at its last start (`Op::MemberBuild`).
    pub version: Option<String>,
    pub engine: Option<String>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("meta encodes")
    }

    fn decode(bytes: &[u8]) -> Result<Meta, StoreError> {
        postcard::from_bytes(bytes).map_err(|err| StoreError::Corrupt { what: "meta", err })
    }
}

/// The result of a successful write, before the server encodes it for the
/// opcode the client used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    Created {
        path: String,
        stat: Stat,
    },
    Deleted,
    SetData {
        stat: Stat,
    },
    SetAcl {
        stat: Stat,
    },
    Checked,
    Synced {
        path: String,
    },
    /// An admin API token was created or revoked.
    Token {
        id: String,
    },
    /// All results, or one error code per op when the multi failed.
    Multi(Result<Vec<WriteResult>, Vec<i32>>),
    /// A plugin was deployed, rolled back or removed; `sha256` is the code
    /// that is (or was) active.
    Plugin {
        name: String,
        sha256: [u8; 32],
    },
    /// A recipe ran: its result, or its deterministic error (its writes
    /// were then discarded).
    Called(Result<Vec<u8>, crate::plugin::CallError>),
}

/// What the origin connection is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    None,
    Connected {
        session: i64,
        password: [u8; 16],
        timeout_ms: i32,
    },
    /// The session to resume is gone.
    ConnectRefused,
    Write(Result<WriteResult, ErrorCode>),
    /// The session closed at the client's request.
    Closed,
    /// A plugin vetoed the write, or the write failed in a plugin: nothing
    /// was changed. Over ZooKeeper the client sees `code`; the admin API
    /// also shows `message`.
    Rejected {
        code: ErrorCode,
        message: String,
    },
}

/// A change to the set of live sessions, for the liveness tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    Opened { id: i64, timeout_ms: i32, owner: Owner },
    Resumed { id: i64, timeout_ms: i32, owner: Owner, previous: Owner },
    Ended { id: i64, owner: Owner },
}

/// A watch event of an applied change, with the ACL of the node it is
/// about: watchers without READ on that node are not told (ZooKeeper's fix
/// for CVE-2024-23944).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub path: String,
    pub acl: Vec<crate::proto::data::Acl>,
}

/// The outcome of one applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entry's log index, which is its zxid.
    pub index: u64,
    pub origin: Option<Origin>,
    pub reply: Reply,
    /// Watch events, in the order the changes happened.
    pub events: Vec<Event>,
    pub session: Option<SessionChange>,
}

/// Receives each batch's outcomes, in log order, while the gate is held: it
/// must queue and return, never block.
pub trait ApplySink: Send + Sync {
    fn publish(&self, applied_index: u64, outcomes: Vec<Applied>);

    /// The state was replaced by a snapshot's, applied through
    /// `applied_index`, whose live sessions are `sessions` (id, timeout):
    /// the entries it covers were never published here. Called under the
    /// gate, as `publish` is.
    fn installed(&self, applied_index: u64, sessions: Vec<(i64, i32)>);
}

/// What a log entry holds, as the machine sees it.
pub enum Payload<'a> {
    Blank,
    /// A membership change: encoded by the Raft layer, and as the members'
    /// Raft addresses and whether each votes.
    Membership {
        encoded: Vec<u8>,
        members: BTreeMap<u64, (String, bool)>,
    },
    Command(&'a Command),
}

/// One committed entry to apply.
pub struct EntryRef<'a> {
    pub index: u64,
    /// The entry's log id, encoded by the Raft layer.
    pub log_id: Vec<u8>,
    pub payload: Payload<'a>,
}

/// Tuning for `state.redb`. None of it changes outcomes.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// redb's page cache, which counts in the resident set.
    pub cache_bytes: usize,
    /// Applies are committed without fsync; at most this long passes before
    /// one is fsynced. The Raft log is the durable record: a crash re-applies
    /// the entries since the last durable commit.
    pub sync_interval: Duration,
    /// Entries whose watch events are kept for the admin API's event stream.
    pub event_history: u64,
    /// Accept entries that skip indexes. Only openraft's storage conformance
    /// Suite sets it: it applies synthetic, sparse logs. On a member a gap
    /// means an entry was lost on the way to apply, and applying halts.
    pub allow_gaps: bool,
}

/// The replicated state, stored in `state.redb`.
pub struct StateDb {
    db: Database,
    gate: RwLock<()>,
    meta: Mutex<Meta>,
    /// On tokio's clock, which a simulation's paused clock drives.
    last_sync: Mutex<tokio::time::Instant>,
    options: StateOptions,
    plugins: Option<PluginEnv>,
    /// Why applying stopped for good on this node, if it did.
    halted: Mutex<Option<String>>,
    /// Held by every apply, install and sync from start to commit; `true`
    /// once [`StateDb::close`] ran, after which nothing writes the state.
    closed: Mutex<bool>,
}

impl StateDb {
    /// Opens or creates `state.redb`. A new one holds the initial tree.
    /// `plugins` runs plugin entries; without it, a plugin entry halts
    /// this node's apply.
    pub fn open(path: &Path, options: StateOptions, plugins: Option<PluginEnv>) -> Result<StateDb, StoreError> {
        Self::on(Database::builder().set_cache_size(options.cache_bytes).create(path)?, options, plugins)
    }

    /// The state in `db`, which the caller opened: on a file, or in tests
    /// on a storage backend that can fail and crash.
    pub fn on(db: Database, options: StateOptions, plugins: Option<PluginEnv>) -> Result<StateDb, StoreError> {
        let txn = db.begin_write()?;
        let stored = txn.open_table(META)?.get("meta")?.map(|v| v.value().to_vec());
        let meta = match stored {
            Some(bytes) => Meta::decode(&bytes)?,
            None => {
                let mut meta = Meta::default();
                let mut tables = Tables::open(&txn)?;
                for (p, node) in apply::initial_nodes() {
                    tables.write_node(&mut meta, p, Some(&node))?;
                }
                drop(tables);
                txn.open_table(META)?.insert("meta", meta.encode().as_slice())?;
                meta
            }
        };
        txn.commit()?;
        tracing::info!(
            target: "corral::apply",
            applied = meta.applied_index,
            digest = format_args!("{:016x}", meta.digest.0),
            "state opened"
        );
        let state = StateDb {
            db,
            gate: RwLock::new(()),
            meta: Mutex::new(meta),
            last_sync: Mutex::new(tokio::time::Instant::now()),
            options,
            plugins,
            halted: Mutex::new(None),
            closed: Mutex::new(false),
        };
        state.prepare_plugins()?;
        Ok(state)
    }

    /// Starts compiling every active plugin in the background (loading it
    /// from the compile cache where an earlier run left it), so that the
    /// first entry that calls one waits for as little as possible. Applying
    /// waits for a compile that is under way rather than starting its own.
    fn prepare_plugins(&self) -> Result<(), StoreError> {
        let Some(env) = &self.plugins else { return Ok(()) };
        let view = self.read_ungated()?;
        let (Some(records), Some(blobs)) = (view.txn_table(tree::PLUGINS), view.txn_table(tree::BLOBS)) else {
            return Ok(());
        };
        let blobs = blobs?;
        for rec in plugins::all(&records?)? {
            let hash = rec.active_version().sha256;
            if let Some(code) = blobs.get(hash.as_slice())? {
                env.runtime.prepare(hash, rec.kind, code.value().into());
            }
        }
        Ok(())
    }

    /// Why this node stopped applying (a plugin host fault, an engine
    /// fingerprint that differs from the cluster's), if it did. Such a node
    /// must not restart into the same entry: it needs an operator.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().clone()
    }

    /// The plugin runtime, if this node has one.
    pub fn plugins(&self) -> Option<&PluginEnv> {
        self.plugins.as_ref()
    }

    /// The machine record as of the last applied batch.
    pub fn meta(&self) -> Meta {
        self.meta.lock().clone()
    }

    pub fn applied_index(&self) -> u64 {
        self.meta.lock().applied_index
    }

    /// Applies a batch of committed entries in one redb transaction, then
    /// makes it visible and publishes its outcomes, both under the gate.
    pub fn apply(&self, entries: &[EntryRef<'_>], sink: &dyn ApplySink) -> Result<(), StoreError> {
        let result = self.apply_batch(entries, sink);
        if let Err(StoreError::Halt(why)) = &result {
            tracing::error!("stopped applying the log: {why}");
            *self.halted.lock() = Some(why.clone());
        }
        result
    }

    fn apply_batch(&self, entries: &[EntryRef<'_>], sink: &dyn ApplySink) -> Result<(), StoreError> {
        let closed = self.closed.lock();
        if *closed {
            return Err(StoreError::Closed);
        }
        if let Some(why) = self.halted() {
            return Err(StoreError::Halt(why));
        }
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let mut meta = self.meta();
        let mut txn = self.db.begin_write()?;
        let durable = self.last_sync.lock().elapsed() >= self.options.sync_interval;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        let mut outcomes = Vec::with_capacity(entries.len());
        {
            let mut tables = Tables::open(&txn)?;
            for e in entries {
                // Entries come one after another: a gap or a repeat would
                // make this member's state differ from the others' for good.
                let next = meta.applied_index + 1;
                let gap = e.index > next && !self.options.allow_gaps;
                if meta.applied_log_id.is_some() && (e.index < next || gap) {
                    return Err(StoreError::Halt(format!(
                        "the log handed entry {} to apply right after entry {}: applying it would skip or repeat \
                         entries; stopping rather than diverge from the other members",
                        e.index, meta.applied_index
                    )));
                }
                match &e.payload {
                    Payload::Blank => {}
                    Payload::Membership { encoded, members } => {
                        meta.membership = Some(encoded.clone());
                        outcomes.push(apply::apply_membership(&mut tables, &mut meta, e.index, members)?);
                    }
                    Payload::Command(cmd) => outcomes.push(apply::apply_command(
                        &mut tables,
                        &mut meta,
                        e.index,
                        cmd,
                        self.plugins.as_ref(),
                    )?),
                }
                meta.applied_index = e.index;
                meta.applied_log_id = Some(e.log_id.clone());
            }
        }
        txn.open_table(META)?.insert("meta", meta.encode().as_slice())?;
        self.record_events(&txn, &outcomes)?;
        debug_assert_eq!(meta.applied_index, last.index);
        let _gate = self.gate.write();
        txn.commit()?;
        if durable {
            *self.last_sync.lock() = tokio::time::Instant::now();
        }
        // One line per batch at debug level: with `RUST_LOG=corral::apply=debug`
        // members' logs name the first index where their digests differ.
        tracing::debug!(
            target: "corral::apply",
            first = entries[0].index,
            last = last.index,
            digest = format_args!("{:016x}", meta.digest.0),
            durable,
            "applied"
        );
        *self.meta.lock() = meta;
        sink.publish(last.index, outcomes);
        Ok(())
    }

    /// Keeps the batch's watch events in the local `events` history, pruned
    /// to the newest `event_history` entries.
    fn record_events(&self, txn: &redb::WriteTransaction, outcomes: &[Applied]) -> Result<(), StoreError> {
        use redb::ReadableTableMetadata;
        let mut table = txn.open_table(tree::EVENTS)?;
        for a in outcomes.iter().filter(|a| !a.events.is_empty()) {
            let events: Vec<(EventType, &str)> = a.events.iter().map(|e| (e.kind, e.path.as_str())).collect();
            let bytes = postcard::to_allocvec(&events).expect("events encode");
            table.insert(a.index, bytes.as_slice())?;
        }
        while table.len()? > self.options.event_history {
            table.pop_first()?;
        }
        Ok(())
    }

    /// Makes everything applied so far durable.
    ///
    /// It rewrites the stored `Meta` as this transaction sees it, never the
    /// in-memory copy: a batch may have committed its tables and `Meta` but
    /// not yet updated that copy (a sync on another thread, or at shutdown
    /// while an apply is still finishing). Writing the older copy made the
    /// tables say N while `Meta` said N-1, and the batch was applied again
    /// after a restart: a divergence the fault tests found.
    pub fn sync(&self) -> Result<(), StoreError> {
        let closed = self.closed.lock();
        if *closed {
            return Err(StoreError::Closed);
        }
        self.sync_locked(&closed)
    }

    /// [`StateDb::sync`], for a caller that holds the `closed` lock.
    fn sync_locked(&self, _closed: &MutexGuard<'_, bool>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(META)?;
            let stored = table.get("meta")?.map(|v| v.value().to_vec());
            if let Some(bytes) = stored {
                table.insert("meta", bytes.as_slice())?;
            }
        }
        txn.commit()?;
        *self.last_sync.lock() = tokio::time::Instant::now();
        Ok(())
    }

    /// Makes everything applied durable and stops all later writes: an
    /// apply or install still running finishes first, and any that come
    /// after fail. For shutdown, before the process ends or replaces itself
    /// (which would cut a write off half-done).
    pub fn close(&self) -> Result<(), StoreError> {
        let mut closed = self.closed.lock();
        *closed = true;
        self.sync_locked(&closed)
    }

    /// Opens a consistent read of the state. While the returned guard lives,
    /// no batch becomes visible; drop it as soon as the read (and any watch
    /// registration) is done.
    pub fn read(&self) -> Result<(RwLockReadGuard<'_, ()>, ReadView), StoreError> {
        let guard = self.gate.read();
        let view = ReadView::open(self.db.begin_read()?)?;
        Ok((guard, view))
    }

    /// [`StateDb::read`] if no batch is becoming visible right now, else
    /// `None` at once: for a caller that must not wait (an async task),
    /// which then reads on a blocking thread instead.
    pub fn try_read(&self) -> Result<Option<(RwLockReadGuard<'_, ()>, ReadView)>, StoreError> {
        let Some(guard) = self.gate.try_read() else { return Ok(None) };
        Ok(Some((guard, ReadView::open(self.db.begin_read()?)?)))
    }

    /// A read that does not need the gate: snapshots, metrics, admin views.
    pub fn read_ungated(&self) -> Result<ReadView, StoreError> {
        ReadView::open(self.db.begin_read()?)
    }

    /// Replaces the whole state with a snapshot's (see [`snapshot::install`])
    /// and tells `sink`, before any read sees the new state.
    pub fn install(
        &self,
        source: &mut dyn std::io::Read,
        sink: &dyn ApplySink,
    ) -> Result<Meta, snapshot::SnapshotError> {
        let closed = self.closed.lock();
        if *closed {
            return Err(StoreError::Closed.into());
        }
        let gate = self.gate.write();
        let meta = snapshot::install(&self.db, source)?;
        *self.meta.lock() = meta.clone();
        *self.last_sync.lock() = tokio::time::Instant::now();
        let sessions = self.read_ungated()?.all_sessions()?.into_iter().map(|(id, s)| (id, s.timeout_ms)).collect();
        sink.installed(meta.applied_index, sessions);
        drop(gate);
        drop(closed);
        // The snapshot's plugins are new to this member: compile them now,
        // not when the first entry after the snapshot calls one.
        if let Err(e) = self.prepare_plugins() {
            tracing::warn!("compiling the plugins of an installed snapshot: {e}");
        }
        Ok(meta)
    }

    /// Recomputes the digest from every stored record. Tests compare it with
    /// the running one.
    pub fn recompute_digest(&self) -> Result<Digest, StoreError> {
        let view = self.read_ungated()?;
        view.recompute_digest()
    }
}

/// One consistent read of the state.
pub struct ReadView {
    txn: ReadTransaction,
    pub nodes: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl ReadView {
    fn open(txn: ReadTransaction) -> Result<ReadView, StoreError> {
        let nodes = txn.open_table(NODES)?;
        Ok(ReadView { txn, nodes })
    }

    pub fn meta(&self) -> Result<Meta, StoreError> {
        let table = self.txn.open_table(META)?;
        let v = table.get("meta")?.expect("state.redb always holds meta");
        Meta::decode(v.value())
    }

    pub fn sessions(&self) -> Result<ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        Ok(self.txn.open_table(tree::SESSIONS)?)
    }

    pub fn ephemerals(&self) -> Result<ReadOnlyTable<&'static [u8], ()>, StoreError> {
        Ok(self.txn.open_table(tree::EPHEMERALS)?)
    }

    /// A table that may not exist yet in an older file.
    pub(crate) fn txn_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<K, V>,
    ) -> Option<Result<ReadOnlyTable<K, V>, StoreError>> {
        match self.txn.open_table(def) {
            Ok(t) => Some(Ok(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    pub fn tokens(&self) -> Result<ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        Ok(self.txn.open_table(tree::TOKENS)?)
    }

    /// The watch events of entries after `zxid`, oldest first, and the
    /// oldest zxid the history still holds (`None` if it is empty).
    pub fn events_after(&self, zxid: u64) -> Result<(Vec<(u64, Vec<(EventType, String)>)>, Option<u64>), StoreError> {
        let table = match self.txn.open_table(tree::EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(e.into()),
        };
        let oldest = table.first()?.map(|(k, _)| k.value());
        let mut out = Vec::new();
        for item in table.range(zxid + 1..)? {
            let (k, v) = item?;
            let events = postcard::from_bytes(v.value()).map_err(|err| StoreError::Corrupt { what: "events", err })?;
            out.push((k.value(), events));
        }
        Ok((out, oldest))
    }

    /// The digest computed from scratch over every record.
    pub fn recompute_digest(&self) -> Result<Digest, StoreError> {
        let mut d = Digest::default();
        for item in self.nodes.iter()? {
            let (k, v) = item?;
            d.add(RecordKind::Node, k.value(), v.value());
        }
        for item in self.sessions()?.iter()? {
            let (k, v) = item?;
            d.add(RecordKind::Session, &k.value().to_be_bytes(), v.value());
        }
        for item in self.tokens()?.iter()? {
            let (k, v) = item?;
            d.add(RecordKind::Token, k.value().as_bytes(), v.value());
        }
        for (kind, def) in tree::PLUGIN_TABLES {
            let Some(table) = self.txn_table(def) else { continue };
            for item in table?.iter()? {
                let (k, v) = item?;
                d.add(kind, k.value(), v.value());
            }
        }
        if let Some(init) = self.meta()?.init {
            let bytes = postcard::to_allocvec(&init.config).expect("config encodes");
            d.add(RecordKind::Config, b"config", &bytes);
        }
        Ok(d)
    }
}
