//! openraft's storage conformance Suite (45 checks) against Corral's redb
//! log store and state machine: no holes, ordered writes, the purge pointer
//! surviving, membership recovery, snapshot build and install. Then a
//! snapshot built while another is installed, which openraft allows, and
//! the log on a disk that crashes at any write or fails a sync.

// Each test binary uses its part of the crash disk.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use corral::machine::{Applied, ApplySink, StateDb, StateOptions};
use corral::machine::{EntryRef, Payload};
use corral::raft::TypeConfig;
use corral::raft::log_store::LogStore;
use corral::raft::state_machine::StateMachine;
use openraft::StorageError;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;

/// The Suite applies only blank and membership entries: nothing to route
/// but the `/zookeeper/config` change of a membership, which has no origin.
struct Discard;

impl ApplySink for Discard {
    fn publish(&self, _applied_index: u64, outcomes: Vec<Applied>) {
        assert!(outcomes.iter().all(|a| a.origin.is_none()), "the Suite applies no client commands");
    }

    fn installed(&self, _applied_index: u64, _sessions: Vec<(i64, i32)>) {}
}

/// Builds a store whose log keeps `tail_bytes` of flushed entries in memory.
struct Builder {
    tail_bytes: usize,
}

fn state_db(dir: &std::path::Path) -> Arc<StateDb> {
    open_state(dir, false)
}

/// `allow_gaps`: the Suite applies synthetic logs that skip indexes.
fn open_state(dir: &std::path::Path, allow_gaps: bool) -> Arc<StateDb> {
    let options = StateOptions {
        cache_bytes: 1 << 20,
        sync_interval: Duration::from_millis(100),
        event_history: 1000,
        allow_gaps,
    };
    Arc::new(StateDb::open(&dir.join("state.redb"), options, None).expect("state opens"))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20, self.tail_bytes).expect("log store opens");
        let state = open_state(dir.path(), true);
        let sm = StateMachine::new(state, Arc::new(Discard), dir.path().join("snapshots")).expect("sm");
        Ok((dir, log, sm))
    }
}

/// Three times: every read from redb (no tail in memory), reads that span
/// redb and a tail of a few entries, and every read from memory.
#[test]
fn openraft_storage_suite() {
    for tail_bytes in [0, 64, 1 << 20] {
        TypeConfig::run(async {
            Suite::test_all(Builder { tail_bytes }).await.expect("openraft storage suite");
        });
    }
}

/// Blank entries `from..=to` of term 1, leader 1.
fn blanks(from: u64, to: u64) -> Vec<EntryRef<'static>> {
    (from..=to)
        .map(|i| EntryRef {
            index: i,
            log_id: postcard::to_allocvec(&log_id::<TypeConfig>(1, 1, i)).expect("log id encodes"),
            payload: Payload::Blank,
        })
        .collect()
}

fn apply_blanks(state: &StateDb, from: u64, to: u64) {
    state.apply(&blanks(from, to), &Discard).expect("blank entries apply");
}

/// openraft builds snapshots in a task of their own, so a member that is
/// sent a snapshot can be building one at the same time. Each must be
/// written to a file of its own: with one shared temporary name, the
/// install published a file whose header the build had overwritten, and
/// the member, whose log was purged up to the installed index, could not
/// start again (found by the 30-minute soak). Every published snapshot's
/// header must name the index in its file name, and the newest must be the
/// installed one.
#[test]
fn a_snapshot_built_while_another_is_installed_keeps_both_intact() {
    TypeConfig::run(async {
        // The snapshot to install: a state at index 5,000.
        let source = tempfile::tempdir().expect("temp dir");
        let state = state_db(source.path());
        apply_blanks(&state, 1, 5_000);
        let mut sm = StateMachine::new(state, Arc::new(Discard), source.path().join("snapshots")).expect("sm");
        let sent = sm.get_snapshot_builder().await.build_snapshot().await.expect("source snapshot builds");
        let sent_path = source.path().join("snapshots").join(format!("snap-{:020}.bin", 5_000));
        assert!(sent_path.exists(), "the source snapshot is published under its index");

        for round in 0..20u64 {
            // The receiver is behind, at index 100 + round, with a large
            // enough state that the two writes overlap.
            let dir = tempfile::tempdir().expect("temp dir");
            let state = state_db(dir.path());
            apply_blanks(&state, 1, 100 + round);
            let snapshots = dir.path().join("snapshots");
            let mut sm = StateMachine::new(state, Arc::new(Discard), snapshots.clone()).expect("sm");
            let mut builder = sm.get_snapshot_builder().await;
            let file = std::fs::File::open(&sent_path).expect("source snapshot opens");
            let (built, installed) = futures::join!(builder.build_snapshot(), sm.install_snapshot(&sent.meta, file));
            installed.expect("the install succeeds");
            let built = built.expect("the build succeeds");
            assert!(built.meta.last_log_id.is_some_and(|l| l.index() == 100 + round || l.index() == 5_000));

            let current = sm.get_current_snapshot().await.expect("current snapshot").expect("one exists");
            assert_eq!(current.meta.last_log_id, sent.meta.last_log_id, "round {round}: the install is current");
            for entry in std::fs::read_dir(&snapshots).expect("snapshot dir") {
                let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
                assert!(!name.ends_with(".tmp"), "round {round}: {name} left behind");
            }
            assert_eq!(sm.applied_state().await.expect("applied").0.map(|l| l.index()), Some(5_000));
        }
    });
}

/// Entries at or below `upto` still on disk in the log file at `path`, read
/// directly; `None` while a store still holds the file open.
fn stored_at_or_below(path: &std::path::Path, upto: u64) -> Option<usize> {
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
    let db = redb::Database::open(path).ok()?;
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let log = txn.open_table(table).expect("log table");
    Some(redb::ReadableTable::range(&log, ..=upto).expect("range").count())
}

/// `f`'s first `Some`, trying for up to 10 s: a closed store's writer
/// thread lets go of the file a moment after the store is dropped.
fn within_10s<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Some(v) => return Some(v),
            None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => return None,
        }
    }
}

/// A purge behind a snapshot covers about 100,000 entries. Deleting them
/// in the transaction that also appends held appends for 100-180 ms, so the
/// purge pointer moves at once and the writer deletes the entries in pieces.
/// Purged entries are never read back meanwhile, and a store reopened with
/// deletions left finishes them.
#[test]
fn a_large_purge_is_deleted_in_pieces_and_never_read_back() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::testing::blank_ent;
    TypeConfig::run(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("raft-log.redb");
        let mut log = LogStore::open(&path, 1 << 20, 1 << 20).expect("log store opens");
        log.blocking_append((1..=20_000).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.expect("append");
        log.purge(log_id::<TypeConfig>(1, 1, 19_000)).await.expect("purge");
        log.blocking_append((20_001..=20_010).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.expect("append");
        let read = log.get_log_reader().await.try_get_log_entries(0..30_000).await.expect("read");
        assert_eq!((read.len(), read.first().map(|e| e.log_id.index())), (1_010, Some(19_001)));
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(19_000));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(20_010));
        drop(log);

        // Reopened: the same state, whatever the writer had deleted.
        let mut log = within_10s(|| LogStore::open(&path, 1 << 20, 1 << 20).ok()).expect("the log store opens again");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(19_000));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(20_010));
        let read = log.get_log_reader().await.try_get_log_entries(0..30_000).await.expect("read");
        assert_eq!((read.len(), read.first().map(|e| e.log_id.index())), (1_010, Some(19_001)));
        // Give the writer time to finish deleting, then close and look.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(log);
        let left = within_10s(|| stored_at_or_below(&path, 19_000).filter(|&n| n == 0));
        assert_eq!(left, Some(0), "purged entries left on disk");
    });
}

/// Applying must see every committed entry once, in order. A gap (an
/// entry the log store did not hand over) or a repeat would leave this
/// member's state different from the others' for good, silently: both stop
/// the apply instead, with the state as it was.
#[test]
fn an_entry_out_of_sequence_stops_the_apply_and_changes_nothing() {
    for (what, from, to) in [("a gap", 12, 13), ("a repeat", 10, 11)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = state_db(dir.path());
        apply_blanks(&state, 1, 10);
        let before = (state.applied_index(), state.meta().digest);
        let err = state.apply(&blanks(from, to), &Discard).expect_err(what);
        assert!(err.to_string().contains(&format!("entry {from} to apply right after entry 10")), "{what}: {err}");
        assert!(state.halted().is_some(), "{what}: the member stops applying");
        assert_eq!((state.applied_index(), state.meta().digest), before, "{what}: nothing applied");
    }
}

/// openraft hands a follower's state machine the entries the cluster
/// committed as soon as they are queued in the member's own log, before
/// this member fsynced them. Applied then, a failed fsync left the state
/// past the end of the member's log, and the restarted member panicked in
/// openraft (the nemesis found it). Entries are applied only once they
/// are durable in the member's log; when that fsync fails, the apply fails
/// and the state stays where it was.
#[test]
fn entries_are_applied_only_once_durable_in_the_members_own_log() {
    use futures::StreamExt;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::testing::blank_ent;

    TypeConfig::run(async {
        let disk = common::CrashDisk::default();
        let db = redb::Database::builder().create_with_backend(disk.clone()).expect("log database");
        let mut log = LogStore::on(db, 1 << 20).expect("log store opens");
        let dir = tempfile::tempdir().expect("temp dir");
        let state = state_db(dir.path());
        let mut sm = StateMachine::new(state.clone(), Arc::new(Discard), dir.path().join("snapshots"))
            .expect("sm")
            .after_log(log.clone());
        let entries = |from: u64, to: u64| (from..=to).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect::<Vec<_>>();
        let apply = |from: u64, to: u64| futures::stream::iter(entries(from, to)).map(|e| Ok((e, None)));

        log.append(entries(1, 3), IOFlushed::noop()).await.expect("queued");
        sm.apply(apply(1, 3)).await.expect("durable entries apply");
        assert_eq!(state.applied_index(), 3);

        disk.fail_syncs(1);
        log.append(entries(4, 5), IOFlushed::noop()).await.expect("queued");
        let err = sm.apply(apply(4, 5)).await.expect_err("entries whose fsync failed do not apply");
        assert!(err.to_string().contains("the raft log makes nothing durable any more"), "{err}");
        assert_eq!(state.applied_index(), 3, "the state stays within the member's log");
    });
}

/// Pacing by the apply: while a leader's apply has not reached the batch
/// the log flushed last, the log holds its next batch back (here for up to
/// a minute, so that only the apply can let it go). It lets it go when the
/// apply catches up or waits for the log itself, and a follower's apply
/// (no replies waiting) holds nothing. Run with the writer thread
/// (multi-threaded runtime) and the writer task (the simulation's).
#[test]
fn the_log_holds_a_batch_only_while_a_leaders_apply_is_behind() {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::blank_ent;

    async fn scenario() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20, 1 << 20).expect("log store opens");
        log.pace_by_apply(Duration::from_secs(60));
        let blanks = |from: u64, to: u64| (from..=to).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect::<Vec<_>>();
        let quick = Duration::from_secs(10);
        let appended = |log: &LogStore, from, to| {
            let mut log = log.clone();
            tokio::spawn(async move { log.blocking_append(blanks(from, to)).await.expect("append") })
        };
        // Flushed last: the batch of entries 4 and 5.
        log.blocking_append(blanks(1, 3)).await.expect("append");
        log.blocking_append(blanks(4, 5)).await.expect("append");

        // A follower's apply behind it holds nothing.
        log.applied(2, false);
        tokio::time::timeout(quick, appended(&log, 6, 6)).await.expect("a follower does not pace").unwrap();

        // A leader's apply behind entry 6 (flushed last) holds entry 7 ...
        log.applied(4, true);
        let mut held = appended(&log, 7, 7);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut held).await.is_err(),
            "flushed while the leader's apply was behind"
        );
        // ... until the apply reaches that batch.
        log.applied(5, true);
        tokio::time::timeout(quick, held).await.expect("released when the apply caught up").unwrap();

        // Behind again (entry 7 flushed last), but the apply waits for the
        // log: entry 8 goes at once.
        log.applied(5, true);
        let mut held = appended(&log, 8, 8);
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut held).await.is_err(), "not held");
        tokio::time::timeout(quick, log.durable_through(8)).await.expect("the apply waiting is not held").unwrap();
        tokio::time::timeout(quick, held).await.expect("flushed").unwrap();
        // Behind again: a stop is not held.
        log.close();
    }
    for multi_thread in [true, false] {
        let mut runtime = match multi_thread {
            true => tokio::runtime::Builder::new_multi_thread(),
            false => tokio::runtime::Builder::new_current_thread(),
        };
        let started = std::time::Instant::now();
        runtime.enable_all().build().unwrap().block_on(scenario());
        // Nothing was held for the whole minute.
        assert!(started.elapsed() < Duration::from_secs(40), "held for {:?}", started.elapsed());
    }
}

/// One step of the log crash test.
#[derive(Debug, Clone)]
enum LogOp {
    /// Appends this many entries of the current term.
    Append(u64),
    /// Truncates this many entries off the end, then moves to a new term.
    Truncate(u64),
    /// Purges up to this many entries from the start.
    Purge(u64),
    /// Votes in the next term.
    Vote,
}

fn arb_log_op() -> impl proptest::strategy::Strategy<Value = LogOp> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1u64..40).prop_map(LogOp::Append),
        1 => (0u64..10).prop_map(LogOp::Truncate),
        1 => (1u64..60).prop_map(LogOp::Purge),
        1 => Just(LogOp::Vote),
    ]
}

/// What a log holds, as its owner was told: the terms of the entries after
/// the purge point, the purge point and the vote.
#[derive(Debug, Clone, Default, PartialEq)]
struct LogModel {
    /// Index to term, for entries after `purged`.
    entries: std::collections::BTreeMap<u64, u64>,
    purged: u64,
    vote_term: Option<u64>,
}

/// Reads back what a log store holds after `purged`.
async fn read_model(log: &mut LogStore) -> LogModel {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    let state = log.get_log_state().await.expect("log state");
    let purged = state.last_purged_log_id.map_or(0, |l| l.index());
    let last = state.last_log_id.map_or(0, |l| l.index());
    let entries = log.try_get_log_entries(purged + 1..last + 1).await.expect("entries after the purge point");
    assert_eq!(entries.len() as u64, last - purged, "no holes between the purge point and the last entry");
    let vote_term = log.read_vote().await.expect("vote").map(|v| v.leader_id().term);
    let entries = entries.iter().map(|e| (e.log_id.index(), e.log_id.leader_id.term)).collect();
    LogModel { entries, purged, vote_term }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// The Raft log on a disk that loses power at any write, length change
    /// or sync, or fails a sync: redb reopens the image (whether it keeps
    /// only what was synced, any subset of the rest, or all of it), and
    /// the log holds exactly what its owner was last told it holds, or the
    /// step it was attempting when the disk failed (a batch is atomic):
    /// every acknowledged entry, no holes, the acknowledged vote.
    #[test]
    fn a_crashed_log_reopens_with_every_acknowledged_step(
        ops in proptest::collection::vec(arb_log_op(), 1..24),
        power_after in proptest::option::of(0u32..300),
        fail_sync_at in proptest::option::of(0usize..24),
        torn_seed in proptest::prelude::any::<u64>(),
        failed_start in proptest::prelude::any::<bool>(),
    ) {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::testing::blank_ent;
        use rand::{Rng, SeedableRng};

        TypeConfig::run(async move {
            let disk = common::CrashDisk::default();
            let db = redb::Database::builder().create_with_backend(disk.clone()).expect("log database");
            let mut log = LogStore::on(db, 1 << 20).expect("log store opens");
            if let Some(n) = power_after {
                disk.cut_power_after(n);
            }
            let (mut acked, mut term) = (LogModel::default(), 1u64);
            let mut attempted = acked.clone();
            // The term of every index appended, purged or not.
            let mut terms = std::collections::BTreeMap::new();
            for (step, op) in ops.iter().enumerate() {
                if fail_sync_at == Some(step) {
                    disk.fail_syncs(1);
                }
                let last = acked.entries.last_key_value().map_or(acked.purged, |(&i, _)| i);
                let done = match *op {
                    LogOp::Append(n) => {
                        let new: Vec<_> = (last + 1..=last + n).map(|i| blank_ent::<TypeConfig>(term, 1, i)).collect();
                        attempted.entries.extend(new.iter().map(|e| (e.log_id.index(), term)));
                        terms.extend(new.iter().map(|e| (e.log_id.index(), term)));
                        log.blocking_append(new).await.is_ok()
                    }
                    LogOp::Truncate(n) => {
                        let keep = last.saturating_sub(n).max(acked.purged);
                        attempted.entries.retain(|&i, _| i <= keep);
                        term += 1;
                        let at = (keep > 0).then(|| log_id::<TypeConfig>(terms[&keep], 1, keep));
                        log.truncate_after(at).await.is_ok()
                    }
                    LogOp::Purge(n) => {
                        let upto = (acked.purged + n).min(last);
                        if upto <= acked.purged {
                            continue;
                        }
                        attempted.entries.retain(|&i, _| i > upto);
                        attempted.purged = upto;
                        log.purge(log_id::<TypeConfig>(terms[&upto], 1, upto)).await.is_ok()
                    }
                    LogOp::Vote => {
                        term += 1;
                        attempted.vote_term = Some(term);
                        let vote = openraft::Vote::new(term, 1);
                        log.save_vote(&vote).await.is_ok()
                    }
                };
                if !done {
                    break;
                }
                acked = attempted.clone();
            }
            // Pull the plug: keep only what was synced, a random part of
            // the rest, or all of it (the process died, not the machine).
            let mut rng = rand::rngs::SmallRng::seed_from_u64(torn_seed);
            let mode = torn_seed % 3;
            let mut image = disk.crash(|| mode == 2 || (mode == 1 && rng.random_bool(0.5)));
            log.close();
            drop(log);
            if failed_start {
                // A start whose own first commit fails, then another crash.
                image.fail_syncs(1);
                if let Ok(db) = redb::Database::builder().create_with_backend(image.clone()) {
                    let _ = LogStore::on(db, 1 << 20);
                }
                image = image.crash(|| rng.random_bool(0.5));
            }
            let db = redb::Database::builder().create_with_backend(image).expect("the crashed log reopens");
            let mut log = LogStore::on(db, 1 << 20).expect("the log store opens");
            let found = read_model(&mut log).await;
            // A purge deletes lazily: entries at or below the purge point
            // may remain, and are not read.
            let entries_after = |m: &LogModel, purged: u64| {
                m.entries.range(purged + 1..).map(|(&i, &t)| (i, t)).collect::<Vec<_>>()
            };
            let is = |m: &LogModel| {
                m.purged == found.purged
                    && m.vote_term == found.vote_term
                    && entries_after(m, found.purged) == entries_after(&found, found.purged)
            };
            assert!(
                is(&acked) || is(&attempted),
                "reopened log {found:?}\nis neither the acknowledged one {acked:?}\nnor the attempted one {attempted:?}"
            );
            log.close();
        });
    }
}
