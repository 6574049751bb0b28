//! The state machine is a pure function of the log: applying a sequence of
//! entries in one batch, one by one, or in any split gives the same state,
//! the same digest and the same outcomes; the running digest equals one
//! recomputed from scratch; a snapshot installed elsewhere reproduces the
//! state byte for byte.

use std::sync::Arc;
use std::time::Duration;

use corral::machine::apply::session_id;
use corral::machine::command::{ClusterConfig, Command, Identity, Op, Origin, Write};
use corral::machine::{Applied, ApplySink, EntryRef, Payload, StateDb, StateOptions, snapshot};
use corral::proto::data::{Acl, Id};
use corral::proto::request::{CreateRequest, MultiOp};
use parking_lot::Mutex;
use proptest::prelude::*;

#[derive(Default)]
struct Collect(Mutex<Vec<Applied>>);

impl ApplySink for Collect {
    fn publish(&self, _applied_index: u64, outcomes: Vec<Applied>) {
        self.0.lock().extend(outcomes);
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
        StateOptions { cache_bytes: 1 << 20, sync_interval: Duration::from_secs(60), event_history: 1000 },
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
        d.install(&mut snap.as_slice()).unwrap();
        prop_assert_eq!(d.meta(), a.meta());
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
        assert!(b.install(&mut bad.as_slice()).is_err(), "flipped byte {at} was accepted");
        assert_eq!(b.meta(), before);
    }
    assert!(b.install(&mut &snap[..snap.len() - 1]).is_err(), "truncated snapshot was accepted");
    b.install(&mut snap.as_slice()).unwrap();
    assert_eq!(b.meta().digest, a.meta().digest);
}
