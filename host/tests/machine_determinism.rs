//! The state machine is a pure function of the log: applying a sequence of
//! entries in one batch, one by one, or in any split gives the same state,
//! the same digest and the same outcomes; the running digest equals one
//! recomputed from scratch; a snapshot installed elsewhere reproduces the
//! state byte for byte; a state crashed at any point, on a disk that keeps
//! only what was synced or also some of what was not, reopens at an applied
//! index whose state is exactly the log's up to there.

// Each test binary uses its part of the crash disk.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use corral::machine::apply::session_id;
use corral::machine::command::{ClusterConfig, Command, Identity, Op, Origin, Write};
use corral::machine::{Applied, ApplySink, EntryRef, Payload, StateDb, StateOptions, snapshot};
use corral::proto::data::{Acl, Id};
use corral::proto::request::{CreateRequest, MultiOp};
use parking_lot::Mutex;
use proptest::prelude::*;

/// An install as the sink hears of it: the applied index and the live
/// sessions (id, timeout).
type Installed = (u64, Vec<(i64, i32)>);

/// What the machine told its sink: outcomes, and the last install.
#[derive(Default)]
struct Collect(Mutex<Vec<Applied>>, Mutex<Option<Installed>>);

impl ApplySink for Collect {
    fn publish(&self, _applied_index: u64, outcomes: Vec<Applied>) {
        self.0.lock().extend(outcomes);
    }

    fn installed(&self, applied_index: u64, sessions: Vec<(i64, i32)>) {
        *self.1.lock() = Some((applied_index, sessions));
    }
}

const PATHS: [&str; 6] = ["/a", "/a/b", "/a/b/c", "/c", "/c/d", "/zookeeper/x"];

fn arb_path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS.to_vec()).prop_map(String::from)
}

fn arb_data() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..8))
}

fn arb_create() -> impl Strategy<Value = CreateRequest> {
    (arb_path(), arb_data(), 0..4i32, any::<bool>()).prop_map(|(path, data, flags, open)| CreateRequest {
        path,
        data,
        acl: if open { Acl::open() } else { vec![Acl { perms: 1, id: Id::new("world", "anyone") }] },
        flags,
        ttl: None,
    })
}

fn arb_multi_op() -> impl Strategy<Value = MultiOp> {
    prop_oneof![
        arb_create().prop_map(|req| MultiOp::Create { opcode: 1, req }),
        (arb_path(), -1..2i32).prop_map(|(path, version)| MultiOp::Delete { path, version }),
        (arb_path(), arb_data(), -1..2i32).prop_map(|(path, data, version)| MultiOp::SetData { path, data, version }),
        (arb_path(), -1..2i32).prop_map(|(path, version)| MultiOp::Check { path, version }),
    ]
}

fn arb_write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => arb_create().prop_map(|req| Write::Create { opcode: 15, req }),
        2 => (arb_path(), -1..2i32).prop_map(|(path, version)| Write::Delete { path, version }),
        2 => (arb_path(), arb_data(), -1..2i32).prop_map(|(path, data, version)| Write::SetData { path, data, version }),
        1 => (arb_path(), -1..2i32).prop_map(|(path, version)| Write::SetAcl { path, acl: Acl::open(), version }),
        1 => prop::collection::vec(arb_multi_op(), 0..4).prop_map(Write::Multi),
    ]
}

/// Sessions are created at indexes 2 and 3 by node 1; 0 is never a session.
fn arb_op() -> impl Strategy<Value = Op> {
    let session = prop::sample::select(vec![session_id(1, 2), session_id(1, 3), 0]);
    prop_oneof![
        8 => (session.clone(), arb_write()).prop_map(|(session, write)| Op::Write {
            session: (session != 0).then_some(session),
            identity: Identity { ids: vec![Id::new("ip", "127.0.0.1")], token: None },
            write
        }),
        1 => session.clone().prop_map(|session| Op::ExpireSession { session }),
        1 => Just(Op::CreateSession { timeout_ms: 5000, http: false }),
    ]
}

fn log(ops: Vec<(Op, i64)>) -> Vec<Command> {
    let config = ClusterConfig {
        min_session_timeout_ms: 4000,
        max_session_timeout_ms: 40000,
        max_data_bytes: 1 << 20,
        extended_types: true,
        superuser_digest: None,
    };
    let mut cmds = vec![
        Command { time_ms: 1000, origin: None, op: Op::Init { config, secret: [7; 32], admin_token: [9; 32] } },
        Command {
            time_ms: 1001,
            origin: Some(Origin { node: 1, conn: 1, xid: 0 }),
            op: Op::CreateSession { timeout_ms: 5000, http: false },
        },
        Command {
            time_ms: 1002,
            origin: Some(Origin { node: 1, conn: 2, xid: 0 }),
            op: Op::CreateSession { timeout_ms: 9000, http: false },
        },
    ];
    for (i, (op, dt)) in ops.into_iter().enumerate() {
        // Writes come from the owner of session 2 (conn 1) or 3 (conn 2).
        let conn = if matches!(op, Op::Write { session: Some(s), .. } if s == session_id(1, 3)) { 2 } else { 1 };
        cmds.push(Command { time_ms: 1000 + dt, origin: Some(Origin { node: 1, conn, xid: i as i32 + 1 }), op });
    }
    cmds
}

fn open(dir: &std::path::Path, name: &str) -> StateDb {
    StateDb::open(
        &dir.join(name),
        StateOptions {
            cache_bytes: 1 << 20,
            sync_interval: Duration::from_secs(60),
            event_history: 1000,
            allow_gaps: false,
        },
        None,
    )
    .expect("state opens")
}

/// Applies `cmds` (entry i at index i+1) in batches cut at `cuts`.
fn apply(db: &StateDb, cmds: &[Command], cuts: &[usize]) -> Vec<Applied> {
    let sink = Arc::new(Collect::default());
    let entries: Vec<EntryRef<'_>> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| EntryRef { index: i as u64 + 1, log_id: vec![i as u8], payload: Payload::Command(c) })
        .collect();
    let mut start = 0;
    for &cut in cuts.iter().chain([&entries.len()]) {
        let cut = cut.clamp(start, entries.len());
        db.apply(&entries[start..cut], sink.as_ref()).expect("apply");
        start = cut;
    }
    std::mem::take(&mut *sink.0.lock())
}

fn snapshot_bytes(db: &StateDb) -> Vec<u8> {
    let mut out = Vec::new();
    snapshot::write(&db.read_ungated().unwrap(), b"raft".to_vec(), &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn batching_does_not_change_the_outcome(
        ops in prop::collection::vec((arb_op(), -50..50i64), 1..40),
        cuts in prop::collection::vec(0usize..45, 0..6),
    ) {
        let cmds = log(ops);
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (open(dir.path(), "a"), open(dir.path(), "b"), open(dir.path(), "c"));
        let mut cuts = cuts;
        cuts.sort();
        let whole = apply(&a, &cmds, &[]);
        let single = apply(&b, &cmds, &(1..cmds.len()).collect::<Vec<_>>());
        let split = apply(&c, &cmds, &cuts);
        prop_assert_eq!(&whole, &single);
        prop_assert_eq!(&whole, &split);
        let digest = a.meta().digest;
        prop_assert_eq!(digest, b.meta().digest);
        prop_assert_eq!(digest, c.meta().digest);
        prop_assert_eq!(digest, a.recompute_digest().unwrap(), "running digest drifted");
        let snap = snapshot_bytes(&a);
        prop_assert_eq!(&snap, &snapshot_bytes(&b), "equal states must give equal snapshot bytes");

        // Install elsewhere: same digest, same bytes, same ephemeral index.
        let d = open(dir.path(), "d");
        let told = Collect::default();
        d.install(&mut snap.as_slice(), &told).unwrap();
        prop_assert_eq!(d.meta(), a.meta());
        // The sink hears of the install, with the snapshot's live sessions.
        let sessions = a.read_ungated().unwrap().all_sessions().unwrap();
        let sessions: Vec<(i64, i32)> = sessions.into_iter().map(|(id, s)| (id, s.timeout_ms)).collect();
        prop_assert_eq!(told.1.lock().clone(), Some((a.meta().applied_index, sessions)));
        prop_assert_eq!(snapshot_bytes(&d), snap);
        for s in [session_id(1, 2), session_id(1, 3)] {
            prop_assert_eq!(
                d.read_ungated().unwrap().ephemerals_of(s, "/").unwrap(),
                a.read_ungated().unwrap().ephemerals_of(s, "/").unwrap()
            );
        }
    }
}

#[test]
fn corrupt_snapshots_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a");
    let cmds = log(vec![(
        Op::Write {
            session: Some(session_id(1, 2)),
            identity: Identity::default(),
            write: Write::Create {
                opcode: 15,
                req: CreateRequest {
                    path: "/x".into(),
                    data: Some(b"1".to_vec()),
                    acl: Acl::open(),
                    flags: 0,
                    ttl: None,
                },
            },
        },
        5,
    )]);
    apply(&a, &cmds, &[]);
    let snap = snapshot_bytes(&a);
    let b = open(dir.path(), "b");
    let before = b.meta();
    for at in [20, snap.len() / 2, snap.len() - 3] {
        let mut bad = snap.clone();
        bad[at] ^= 0x55;
        assert!(b.install(&mut bad.as_slice(), &Collect::default()).is_err(), "flipped byte {at} was accepted");
        assert_eq!(b.meta(), before);
    }
    assert!(b.install(&mut &snap[..snap.len() - 1], &Collect::default()).is_err(), "truncated snapshot was accepted");
    b.install(&mut snap.as_slice(), &Collect::default()).unwrap();
    assert_eq!(b.meta().digest, a.meta().digest);
}

/// Opens a state on `disk`, syncing every batch (`durable`) or only when
/// asked.
fn open_on(disk: &common::CrashDisk, durable: bool) -> Result<StateDb, corral::tree::StoreError> {
    let db = redb::Database::builder().set_cache_size(1 << 20).create_with_backend(disk.clone())?;
    let sync_interval = if durable { Duration::ZERO } else { Duration::from_secs(3600) };
    StateDb::on(db, StateOptions { cache_bytes: 1 << 20, sync_interval, event_history: 1000, allow_gaps: false }, None)
}

/// Applies `cmds[from..]` (entry i at index i+1) one batch per cut; stops
/// at the first failing batch. Returns the index of the last batch that
/// applied.
fn apply_from(db: &StateDb, cmds: &[Command], from: usize, cuts: &[usize]) -> Option<u64> {
    let sink = Collect::default();
    let entries: Vec<EntryRef<'_>> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| EntryRef { index: i as u64 + 1, log_id: vec![i as u8], payload: Payload::Command(c) })
        .collect();
    let mut done = None;
    let mut start = from;
    for &cut in cuts.iter().chain([&entries.len()]) {
        let cut = cut.clamp(start, entries.len());
        if cut == start {
            continue;
        }
        db.apply(&entries[start..cut], &sink).ok()?;
        done = Some(cut as u64);
        start = cut;
    }
    done
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A crash loses at most the batches applied since the last sync, never
    /// part of one, and never the meta's word for what was applied: the
    /// reopened state is the log's state at its applied index, its running
    /// digest matches its records, and applying the rest of the log from
    /// there ends where a member that never crashed ends.
    #[test]
    fn a_crashed_state_reopens_at_a_consistent_applied_index(
        ops in prop::collection::vec((arb_op(), -50..50i64), 1..40),
        cuts in prop::collection::vec(0usize..45, 1..8),
        crash_after in 0usize..8,
        durable in any::<bool>(),
        sync_at in prop::option::of(0usize..8),
        fail_sync in any::<bool>(),
        torn_seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let cmds = log(ops);
        let mut cuts = cuts;
        cuts.sort();
        let dir = tempfile::tempdir().unwrap();
        let reference = open(dir.path(), "reference");
        apply(&reference, &cmds, &[]);

        let disk = common::CrashDisk::default();
        let db = open_on(&disk, durable).unwrap();
        let mut synced = 0u64;
        // The end of the last batch tried: a batch whose sync failed may
        // be on disk all the same.
        let mut attempted = 0u64;
        let mut start = 0usize;
        for (batch, &cut) in cuts.iter().take(crash_after).enumerate() {
            let cut = cut.min(cmds.len());
            if cut <= start {
                continue;
            }
            if fail_sync && batch + 1 == crash_after {
                disk.fail_syncs(1);
            }
            attempted = cut as u64;
            let Some(done) = apply_from(&db, &cmds[..cut], start, &[]) else { break };
            start = done as usize;
            if durable {
                synced = done;
            }
            if sync_at == Some(batch) && db.sync().is_ok() {
                synced = done;
            }
        }
        let mut rng = rand::rngs::SmallRng::seed_from_u64(torn_seed);
        // What survives: only what was synced; any subset of the rest too;
        // or all of it (the process died, the machine did not).
        let mode = torn_seed % 3;
        let mut disk = disk.crash(|| mode == 2 || (mode == 1 && rng.random_bool(0.5)));
        drop(db);
        if rng.random_bool(0.3) {
            // A start while fsync still fails, then that process dies too.
            disk.fail_syncs(rng.random_range(1..4));
            drop(open_on(&disk, durable));
            disk = disk.crash(|| true);
        }

        let db = open_on(&disk, durable).unwrap();
        let meta = db.meta();
        let at = meta.applied_index;
        // Nothing synced is lost; nothing is there that was not applied.
        prop_assert!(at >= synced && at <= attempted, "applied {at}, synced {synced}, attempted {attempted}");
        prop_assert_eq!(meta.digest, db.recompute_digest().unwrap(), "the meta does not match the records");
        if at > 0 {
            let partial = open(dir.path(), "partial");
            apply(&partial, &cmds[..at as usize], &[]);
            prop_assert_eq!(meta.digest, partial.meta().digest, "the state at {} is not the log's", at);
        }
        apply_from(&db, &cmds, at as usize, &[]);
        prop_assert_eq!(db.meta().digest, reference.meta().digest);
        prop_assert_eq!(db.meta().applied_index, cmds.len() as u64);
    }
}
