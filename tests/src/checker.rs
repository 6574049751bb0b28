//! A history checker for ZooKeeper's consistency model (ordered sequential
//! consistency): linearizable writes, per-session FIFO order, reads that
//! never go back in zxid, and watch events before the data.
//!
//! The workload ([`crate::workload`]) drives registers: znodes `k0..kN`
//! written with `setData` of globally unique values and read with
//! `getData` (often with a watch). Every operation is recorded with its
//! outcome — `Ok`, a definite `Fail`, or `Info` when the connection broke
//! with it in flight — and the zxid of its reply. The checker replays the
//! writes by zxid and checks every observation against the replay
//! (the replay-by-zxid design of shared/docs/reliability-security.md §5.1).
//!
//! An `Info` write may or may not have taken effect. It counts as effective
//! when its unique value is observed (by a read or in the final state), at
//! the zxid that observation reports.

use std::collections::{BTreeMap, HashMap};

/// What one operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A definite error code: the operation did not happen.
    Fail(i32),
    /// The connection broke first: it may or may not have happened.
    Info,
}

/// A register's content as a reply shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reg {
    pub value: String,
    pub version: i32,
    pub mzxid: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Set { key: usize, value: String },
    Get { key: usize, watch: bool },
}

/// One operation of one client.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub session: i64,
    /// Connection number within the client: watches live on one connection.
    pub conn: u32,
    /// Index of the member it was sent to.
    pub server: usize,
    pub kind: OpKind,
    /// Monotonic ns from a clock shared by all clients.
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    /// The reply header's zxid (0 for `Info`).
    pub zxid: i64,
    /// For a successful `Set`, version and mzxid from its Stat (value is the
    /// written one); for a successful `Get`, what it read.
    pub reg: Option<Reg>,
    /// Position of the reply among everything this client received.
    pub recv_seq: u64,
}

/// A watch notification as a client received it.
#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub conn: u32,
    pub key: usize,
    pub zxid: i64,
    pub recv_seq: u64,
}

/// An ephemeral node a session created, acknowledged.
#[derive(Debug, Clone)]
pub struct Lease {
    pub session: i64,
    pub path: String,
}

/// Everything a run observed.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    pub events: Vec<Event>,
    /// The registers as each member showed them at the end, after `sync`.
    pub finals: Vec<Vec<Option<Reg>>>,
    /// Ephemerals the clients' sessions created (one per new session).
    pub leases: Vec<Lease>,
    /// At the end: the sessions still live, and every ephemeral left in the
    /// leases' directory with its owner.
    pub live_sessions: Vec<i64>,
    pub final_ephemerals: Vec<(String, i64)>,
    /// The zxid at which each lease was deleted, as far as the event
    /// history reaches: the end of its session.
    pub lease_ends: HashMap<String, i64>,
}

/// What the check found, beyond pass or fail.
#[derive(Debug, Default)]
pub struct Report {
    pub ok_writes: usize,
    pub info_writes: usize,
    pub info_effective: usize,
    pub reads: usize,
    pub events: usize,
    pub leases: usize,
    /// Sessions whose end zxid is known (their lease's deletion was seen).
    pub session_ends: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn assert_valid(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations (showing up to 20):\n{}",
            self.violations.len(),
            self.violations.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// A write that took effect, at a zxid.
#[derive(Debug, Clone)]
struct Effective {
    zxid: i64,
    value: String,
    /// The version an `Ok` set's reply reported.
    version: Option<i32>,
}

pub fn check(h: &History) -> Report {
    let mut r = Report::default();
    let mut violations = Vec::new();
    let mut v = |m: String| violations.push(m);
    // Every value ever observed, with the mzxid it was observed at.
    let mut observed: HashMap<&str, i64> = HashMap::new();
    for op in &h.ops {
        if let (OpKind::Get { .. }, Outcome::Ok, Some(reg)) = (&op.kind, &op.outcome, &op.reg) {
            observed.insert(&reg.value, reg.mzxid);
        }
    }
    for reg in h.finals.iter().flatten().flatten() {
        observed.insert(&reg.value, reg.mzxid);
    }

    // The effective writes of each key.
    let mut writes: BTreeMap<usize, Vec<Effective>> = BTreeMap::new();
    let mut unresolved_info: HashMap<usize, usize> = HashMap::new();
    let mut by_zxid: HashMap<i64, &Op> = HashMap::new();
    let (mut ok_writes, mut info_writes, mut info_effective) = (0, 0, 0);
    for op in &h.ops {
        let OpKind::Set { key, value } = &op.kind else { continue };
        match op.outcome {
            Outcome::Ok => {
                ok_writes += 1;
                let reg = op.reg.as_ref().expect("an ok set has a stat");
                // W1: one zxid per write, and the Stat agrees with the header.
                if reg.mzxid != op.zxid {
                    v(format!("set {value:?}: reply zxid {} but stat mzxid {}", op.zxid, reg.mzxid));
                }
                if let Some(other) = by_zxid.insert(op.zxid, op) {
                    v(format!("two ok writes share zxid {}: {other:?} and {op:?}", op.zxid));
                }
                writes.entry(*key).or_default().push(Effective {
                    zxid: op.zxid,
                    value: value.clone(),
                    version: Some(reg.version),
                });
            }
            Outcome::Info => {
                info_writes += 1;
                match observed.get(value.as_str()) {
                    Some(&zxid) => {
                        info_effective += 1;
                        writes.entry(*key).or_default().push(Effective { zxid, value: value.clone(), version: None });
                    }
                    None => *unresolved_info.entry(*key).or_default() += 1,
                }
            }
            Outcome::Fail(_) => {}
        }
    }
    // A notification is an observation too: a change at its zxid. One that
    // no known write explains is an indeterminate write of that key that
    // took effect and was overwritten before anyone read it.
    let mut explained: std::collections::HashSet<(usize, i64)> =
        writes.iter().flat_map(|(k, l)| l.iter().map(move |w| (*k, w.zxid))).collect();
    for e in &h.events {
        if explained.contains(&(e.key, e.zxid)) {
            continue;
        }
        if let Some(n) = unresolved_info.get_mut(&e.key).filter(|n| **n > 0) {
            *n -= 1;
            info_effective += 1;
            explained.insert((e.key, e.zxid));
            writes.entry(e.key).or_default().push(Effective { zxid: e.zxid, value: String::new(), version: None });
        }
    }
    for list in writes.values_mut() {
        list.sort_by_key(|w| w.zxid);
    }
    r.ok_writes = ok_writes;
    r.info_writes = info_writes;
    r.info_effective = info_effective;

    // W2: real-time order of ok writes.
    let mut ok: Vec<&Op> =
        h.ops.iter().filter(|o| matches!(o.kind, OpKind::Set { .. }) && o.outcome == Outcome::Ok).collect();
    let mut by_complete = ok.clone();
    by_complete.sort_by_key(|o| o.complete_ns);
    ok.sort_by_key(|o| o.invoke_ns);
    let (mut i, mut max_before) = (0, (0i64, None::<&Op>));
    for b in &ok {
        while i < by_complete.len() && by_complete[i].complete_ns < b.invoke_ns {
            if by_complete[i].zxid > max_before.0 {
                max_before = (by_complete[i].zxid, Some(by_complete[i]));
            }
            i += 1;
        }
        if b.zxid <= max_before.0 {
            v(format!("real-time order: {:?} completed before {b:?} began but has a later zxid", max_before.1));
        }
    }

    // W3 and R2: per session, reply zxids never go back (this covers FIFO
    // order of writes and reading one's own writes), across reconnects.
    let mut clients: BTreeMap<(usize, i64), Vec<&Op>> = BTreeMap::new();
    for op in &h.ops {
        clients.entry((op.client, op.session)).or_default().push(op);
    }
    for ops in clients.values_mut() {
        ops.sort_by_key(|o| o.invoke_ns);
        let mut last: (i64, Option<&Op>) = (0, None);
        for op in ops.iter().filter(|o| o.outcome != Outcome::Info) {
            if op.zxid < last.0 {
                v(format!("session zxid went back from {} to {}: after {:?}, {op:?}", last.0, op.zxid, last.1));
            }
            if matches!(op.kind, OpKind::Set { .. }) && op.outcome == Outcome::Ok && op.zxid == last.0 {
                v(format!("two writes of one session at zxid {}", op.zxid));
            }
            last = (last.0.max(op.zxid), Some(op));
        }
    }

    // W4: the versions ok writes returned match their place in the replay.
    for (key, list) in &writes {
        let slack = unresolved_info.get(key).copied().unwrap_or(0) as i32;
        for (rank, w) in list.iter().enumerate() {
            if let Some(version) = w.version {
                let expected = rank as i32 + 1;
                if version < expected || version > expected + slack {
                    v(format!(
                        "k{key}: write {:?} at zxid {} returned version {version}, replay says {expected}",
                        w.value, w.zxid
                    ));
                }
            }
        }
    }

    // R1: every read shows the replayed state at its zxid.
    let mut reads = 0;
    for op in &h.ops {
        let (OpKind::Get { key, .. }, Outcome::Ok, Some(reg)) = (&op.kind, &op.outcome, &op.reg) else { continue };
        reads += 1;
        let list = writes.get(key).map(Vec::as_slice).unwrap_or_default();
        let latest = list.iter().rev().find(|w| w.zxid <= op.zxid);
        match latest {
            None if reg.mzxid == 0 || reg.value.is_empty() => {}
            None => v(format!("k{key}: read {reg:?} at zxid {} but no write to it is known (phantom)", op.zxid)),
            Some(w) if w.value != reg.value || w.zxid != reg.mzxid => v(format!(
                "k{key}: read {:?} (mzxid {}) at zxid {}, replay says {:?} (zxid {})",
                reg.value, reg.mzxid, op.zxid, w.value, w.zxid
            )),
            Some(_) => {}
        }
    }
    r.reads = reads;

    // W5: every member ends with the replayed final state.
    for (member, regs) in h.finals.iter().enumerate() {
        for (key, reg) in regs.iter().enumerate() {
            let last = writes.get(&key).and_then(|l| l.last());
            let shown = reg.as_ref().map(|r| (r.value.as_str(), r.mzxid));
            let expected = last.map(|w| (w.value.as_str(), w.zxid));
            if let (Some(shown), Some(expected)) = (shown, expected)
                && shown != expected
            {
                v(format!("member {member}: k{key} ends as {shown:?}, replay says {expected:?} (lost write?)"));
            }
            if shown.is_none() {
                v(format!("member {member}: k{key} is missing at the end"));
            }
        }
    }

    // V1-V4: watch events, per connection.
    let mut conn_frames: BTreeMap<(usize, u32), (Vec<&Op>, Vec<&Event>)> = BTreeMap::new();
    for op in &h.ops {
        if op.outcome != Outcome::Info {
            conn_frames.entry((op.client, op.conn)).or_default().0.push(op);
        }
    }
    for e in &h.events {
        conn_frames.entry((e.client, e.conn)).or_default().1.push(e);
    }
    r.events = h.events.len();
    for ((client, conn), (ops, events)) in &conn_frames {
        let mut last = 0;
        for e in events {
            if e.zxid <= last {
                v(format!("client {client} conn {conn}: event zxids not increasing ({last} then {})", e.zxid));
            }
            last = e.zxid;
        }
        // Each watching read registers a one-shot watch on its key.
        for reg_op in
            ops.iter().filter(|o| matches!(o.kind, OpKind::Get { watch: true, .. }) && o.outcome == Outcome::Ok)
        {
            let OpKind::Get { key, .. } = reg_op.kind else { unreachable!() };
            // The first change after the registration fires it.
            let Some(change) = writes.get(&key).and_then(|l| l.iter().find(|w| w.zxid > reg_op.zxid)) else {
                continue;
            };
            let event = events.iter().find(|e| e.key == key && e.recv_seq > reg_op.recv_seq);
            let first_later_reply =
                ops.iter().filter(|o| o.recv_seq > reg_op.recv_seq && o.zxid >= change.zxid).map(|o| o.recv_seq).min();
            match (event, first_later_reply) {
                (Some(e), _) if e.zxid != change.zxid => v(format!(
                    "client {client} conn {conn}: watch on k{key} from zxid {} fired at {}, but the first change is at {}",
                    reg_op.zxid, e.zxid, change.zxid
                )),
                (Some(e), Some(seq)) if seq < e.recv_seq => v(format!(
                    "client {client} conn {conn}: a reply at zxid >= {} came before the event for k{key} (data before event)",
                    change.zxid
                )),
                (None, Some(_)) => v(format!(
                    "client {client} conn {conn}: missed the event for k{key} at zxid {} (watch set at {})",
                    change.zxid, reg_op.zxid
                )),
                _ => {}
            }
        }
        // V2: one-shot watches fire at most once per registration.
        let mut regs: HashMap<usize, i64> = HashMap::new();
        for op in ops.iter().filter(|o| matches!(o.kind, OpKind::Get { watch: true, .. }) && o.outcome == Outcome::Ok) {
            if let OpKind::Get { key, .. } = op.kind {
                *regs.entry(key).or_default() += 1;
            }
        }
        let mut fired: HashMap<usize, i64> = HashMap::new();
        for e in events {
            *fired.entry(e.key).or_default() += 1;
        }
        for (key, n) in fired {
            if n > regs.get(&key).copied().unwrap_or(0) {
                v(format!("client {client} conn {conn}: {n} events for k{key} from fewer registrations"));
            }
        }
    }
    check_sessions(h, &mut r, &mut v);
    r.violations = violations;
    r
}

/// Sessions: no ephemeral outlives its session (no orphan), no live
/// session loses one it created, and nothing is acknowledged to a session
/// after it ended (its lease's deletion, in the same entry as the end).
fn check_sessions(h: &History, r: &mut Report, v: &mut impl FnMut(String)) {
    r.leases = h.leases.len();
    let ends: HashMap<i64, i64> =
        h.leases.iter().filter_map(|l| h.lease_ends.get(&l.path).map(|&z| (l.session, z))).collect();
    r.session_ends = ends.len();
    for op in h.ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if let Some(&end) = ends.get(&op.session)
            && op.zxid > end
        {
            v(format!(
                "client {} was answered at zxid {} on session 0x{:x}, which ended at zxid {end}",
                op.client, op.zxid, op.session
            ));
        }
    }
    let live: std::collections::HashSet<i64> = h.live_sessions.iter().copied().collect();
    let left: HashMap<&str, i64> = h.final_ephemerals.iter().map(|(p, o)| (p.as_str(), *o)).collect();
    for (path, owner) in &h.final_ephemerals {
        if !live.contains(owner) {
            v(format!("orphan ephemeral {path}: its session 0x{owner:x} has ended"));
        }
    }
    for l in h.leases.iter().filter(|l| live.contains(&l.session)) {
        match left.get(l.path.as_str()) {
            Some(&owner) if owner == l.session => {}
            Some(&owner) => v(format!("{} belongs to 0x{owner:x}, not to its creator 0x{:x}", l.path, l.session)),
            None => v(format!("{} is gone while its session 0x{:x} lives", l.path, l.session)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(client: usize, t: (u64, u64), key: usize, value: &str, zxid: i64, version: i32) -> Op {
        Op {
            client,
            session: client as i64,
            conn: 0,
            server: 0,
            kind: OpKind::Set { key, value: value.into() },
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome: Outcome::Ok,
            zxid,
            reg: Some(Reg { value: value.into(), version, mzxid: zxid }),
            recv_seq: t.1,
        }
    }

    fn get(client: usize, t: (u64, u64), key: usize, value: &str, mzxid: i64, zxid: i64) -> Op {
        Op {
            client,
            session: client as i64,
            conn: 0,
            server: 0,
            kind: OpKind::Get { key, watch: true },
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome: Outcome::Ok,
            zxid,
            reg: Some(Reg { value: value.into(), version: 0, mzxid }),
            recv_seq: t.1,
        }
    }

    fn fin(value: &str, mzxid: i64) -> Vec<Vec<Option<Reg>>> {
        vec![vec![Some(Reg { value: value.into(), version: 0, mzxid })]]
    }

    fn good() -> History {
        History {
            ops: vec![set(0, (1, 2), 0, "a", 10, 1), get(1, (3, 4), 0, "a", 10, 10), set(1, (5, 6), 0, "b", 11, 2)],
            events: vec![Event { client: 1, conn: 0, key: 0, zxid: 11, recv_seq: 5 }],
            finals: fin("b", 11),
            // Session 7 lives and keeps its lease; session 8 ended, and its
            // lease went with it.
            leases: vec![Lease { session: 7, path: "/l/a".into() }, Lease { session: 8, path: "/l/b".into() }],
            live_sessions: vec![7],
            final_ephemerals: vec![("/l/a".into(), 7)],
            lease_ends: [("/l/b".to_owned(), 20)].into(),
        }
    }

    #[test]
    fn an_answer_after_the_session_ended_is_caught() {
        let mut h = good();
        let mut late = set(3, (7, 8), 0, "c", 21, 3);
        late.session = 8;
        h.ops.push(late);
        h.finals = fin("c", 21);
        let r = check(&h);
        assert_eq!(r.session_ends, 1);
        assert!(r.violations.iter().any(|v| v.contains("which ended at zxid 20")), "{:?}", r.violations);
    }

    #[test]
    fn an_orphan_ephemeral_and_a_lost_one_are_caught() {
        let mut h = good();
        h.final_ephemerals.push(("/l/b".into(), 8));
        assert!(check(&h).violations.iter().any(|v| v.contains("orphan ephemeral /l/b")), "{:?}", check(&h).violations);
        let mut h = good();
        h.final_ephemerals.clear();
        assert!(check(&h).violations.iter().any(|v| v.contains("/l/a is gone while its session")));
        let mut h = good();
        h.final_ephemerals = vec![("/l/a".into(), 9)];
        h.live_sessions.push(9);
        assert!(check(&h).violations.iter().any(|v| v.contains("not to its creator")));
    }

    #[test]
    fn a_valid_history_passes() {
        let r = check(&good());
        r.assert_valid();
        assert_eq!((r.ok_writes, r.reads, r.events), (2, 1, 1));
    }

    #[test]
    fn a_lost_write_is_caught() {
        let mut h = good();
        h.finals = fin("a", 10);
        assert!(check(&h).violations.iter().any(|v| v.contains("lost write")));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_of_the_session_is_caught() {
        let mut h = good();
        h.ops.push(get(1, (7, 8), 0, "a", 10, 10));
        assert!(check(&h).violations.iter().any(|v| v.contains("went back")));
    }

    #[test]
    fn a_read_that_disagrees_with_the_replay_is_caught() {
        let mut h = good();
        h.ops[1] = get(1, (3, 4), 0, "b", 10, 10);
        assert!(!check(&h).violations.is_empty());
    }

    #[test]
    fn real_time_order_and_shared_zxids_are_caught() {
        let mut h = good();
        h.ops[2] = set(1, (5, 6), 0, "b", 9, 2);
        h.finals = fin("a", 10);
        let r = check(&h);
        assert!(r.violations.iter().any(|v| v.contains("real-time")), "{:?}", r.violations);
        let mut h = good();
        h.ops.push(set(2, (7, 8), 0, "c", 11, 3));
        assert!(check(&h).violations.iter().any(|v| v.contains("share zxid")));
    }

    #[test]
    fn watch_violations_are_caught() {
        // The event arrives after a reply that already shows the change.
        let mut h = good();
        h.ops.push(get(1, (7, 8), 0, "b", 11, 11));
        h.events[0].recv_seq = 9;
        assert!(check(&h).violations.iter().any(|v| v.contains("data before event")));
        // No event at all.
        let mut h = good();
        h.ops.push(get(1, (7, 8), 0, "b", 11, 11));
        h.events.clear();
        assert!(check(&h).violations.iter().any(|v| v.contains("missed the event")));
        // Two events from one registration.
        let mut h = good();
        h.events.push(Event { client: 1, conn: 0, key: 0, zxid: 12, recv_seq: 7 });
        assert!(check(&h).violations.iter().any(|v| v.contains("fewer registrations")));
    }

    #[test]
    fn version_gaps_are_caught_unless_an_indeterminate_write_explains_them() {
        let mut h = good();
        h.ops[2] = set(1, (5, 6), 0, "b", 11, 3);
        assert!(check(&h).violations.iter().any(|v| v.contains("returned version")));
        h.ops.push(Op { outcome: Outcome::Info, reg: None, zxid: 0, ..set(2, (4, 9), 0, "lost-in-flight", 0, 0) });
        check(&h).assert_valid();
    }
}
