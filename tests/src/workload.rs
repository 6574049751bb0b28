//! A recorded register workload for the history [`checker`](crate::checker).
//!
//! Each client is a thread with one ZooKeeper session, driven over raw
//! sockets so that every reply's zxid and every notification is seen
//! exactly. It starts on member `client % n` and does one request at a
//! time: `setData` of a unique value, or `getData` with a watch. When its
//! connection breaks, the request in flight is recorded as indeterminate
//! and the client resumes its session on the next member, with its last
//! seen zxid, as a real client does. Each new session first leaves a lease,
//! an ephemeral node, for the sessions check: at the end no lease may
//! outlive its session, and no live session may have lost one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::checker::{self, Event, History, Lease, Op, OpKind, Outcome, Reg};
use crate::cluster::Cluster;
use crate::{Jute, eventually};

const SET_DATA: i32 = 5;
const GET_DATA: i32 = 4;
const CREATE: i32 = 1;
const SYNC: i32 = 9;
/// Where the registers live.
pub const ROOT: &str = "/history";
/// Where each new session of the workload leaves an ephemeral (a lease),
/// for the sessions check.
pub const LEASES: &str = "/history-leases";

pub fn key_path(key: usize) -> String {
    format!("{ROOT}/k{key}")
}

/// A connection that fails instead of panicking.
struct Conn {
    stream: TcpStream,
}

impl Conn {
    /// Opens or resumes a session; `Ok(None)` when the session is gone.
    fn open(
        addr: SocketAddr,
        timeout_ms: i32,
        session: i64,
        password: &[u8],
        last_zxid: i64,
    ) -> std::io::Result<Option<(Conn, i64, Vec<u8>)>> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_millis(timeout_ms as u64 / 2)))?;
        stream.set_nodelay(true)?;
        let mut c = Conn { stream };
        let req = Jute::default().int(0).long(last_zxid).int(timeout_ms).long(session).buf(Some(password)).bool(false);
        c.send_raw(&req.0)?;
        let body = c.read()?;
        if body.len() < 36 {
            return Err(std::io::Error::other("short ConnectResponse"));
        }
        let timeout = i32::from_be_bytes(body[4..8].try_into().unwrap());
        let session = i64::from_be_bytes(body[8..16].try_into().unwrap());
        if timeout <= 0 {
            return Ok(None);
        }
        Ok(Some((c, session, body[20..36].to_vec())))
    }

    fn send_raw(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        self.stream.write_all(&f)
    }

    fn send(&mut self, xid: i32, opcode: i32, body: Jute) -> std::io::Result<()> {
        let mut b = Jute::default().int(xid).int(opcode).0;
        b.extend_from_slice(&body.0);
        self.send_raw(&b)
    }

    fn read(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len);
        if !(0..=1 << 20).contains(&n) {
            return Err(std::io::Error::other("bad frame length"));
        }
        let mut b = vec![0u8; n as usize];
        self.stream.read_exact(&mut b)?;
        Ok(b)
    }
}

/// (version, mzxid) from a Stat.
fn stat(b: &[u8]) -> (i32, i64) {
    (i32::from_be_bytes(b[32..36].try_into().unwrap()), i64::from_be_bytes(b[8..16].try_into().unwrap()))
}

/// Creates the registers, empty, through `server`.
pub fn setup(server: SocketAddr, keys: usize) {
    let mut raw = crate::Raw::connect(server, 10_000);
    for path in [ROOT.to_owned(), LEASES.to_owned()].into_iter().chain((0..keys).map(key_path)) {
        let f = raw.call(1, CREATE, Jute::default().str(&path).buf(Some(b"")).open_acl().int(0));
        assert!(f.err == 0 || f.err == -110, "creating {path}: error {}", f.err);
    }
}

/// The run's shared clock and stop flag.
pub struct Clock {
    start: Instant,
    pub stop: AtomicBool,
    /// Acknowledged writes so far, for progress checks.
    pub acked: AtomicU64,
}

impl Clock {
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock { start: Instant::now(), stop: AtomicBool::new(false), acked: AtomicU64::new(0) })
    }

    /// Nanoseconds on the history's clock.
    pub fn ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Runs one client until `clock.stop`; returns its operations and events.
pub fn client(
    id: usize,
    servers: Vec<SocketAddr>,
    keys: usize,
    clock: Arc<Clock>,
) -> (Vec<Op>, Vec<Event>, Vec<Lease>) {
    let timeout_ms = 4000;
    let mut ops = Vec::new();
    let mut events = Vec::new();
    let mut leases = Vec::new();
    let mut rng = rand::rng();
    let (mut session, mut password, mut last_zxid) = (0i64, vec![0u8; 16], 0i64);
    let mut conn_no = 0u32;
    let mut server = id % servers.len();
    let mut conn: Option<Conn> = None;
    let mut xid = 0;
    let mut recv_seq = 0u64;
    let mut seq = 0u64;
    while !clock.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match Conn::open(servers[server], timeout_ms, session, &password, last_zxid) {
                Ok(Some((mut c, s, p))) => {
                    conn_no += 1;
                    if s != session {
                        // A new session leaves its lease: an ephemeral that
                        // must live exactly as long as the session.
                        xid += 1;
                        let path = format!("{LEASES}/c{id}-{conn_no}");
                        let body = Jute::default().str(&path).buf(Some(b"")).open_acl().int(1);
                        let reply = c.send(xid, CREATE, body).and_then(|()| c.read());
                        match reply {
                            Ok(f) if i32::from_be_bytes(f[12..16].try_into().unwrap()) == 0 => {
                                last_zxid = last_zxid.max(i64::from_be_bytes(f[4..12].try_into().unwrap()));
                                leases.push(Lease { session: s, path });
                            }
                            Ok(_) => {}
                            Err(_) => {
                                session = s;
                                password = p;
                                continue;
                            }
                        }
                    }
                    session = s;
                    password = p;
                    conn = Some(c);
                }
                Ok(None) => {
                    // Expired: start a new session (reads may then be older
                    // than this client saw, which a new session may do).
                    session = 0;
                    password = vec![0; 16];
                    conn_no += 1;
                }
                Err(_) => {
                    server = (server + 1) % servers.len();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            continue;
        };
        xid += 1;
        let key = rand::Rng::random_range(&mut rng, 0..keys);
        let kind = if rand::Rng::random_bool(&mut rng, 0.5) {
            seq += 1;
            OpKind::Set { key, value: format!("c{id}-{seq}") }
        } else {
            OpKind::Get { key, watch: true }
        };
        let body = match &kind {
            OpKind::Set { key, value } => Jute::default().str(&key_path(*key)).buf(Some(value.as_bytes())).int(-1),
            OpKind::Get { key, watch } => Jute::default().str(&key_path(*key)).bool(*watch),
        };
        let opcode = if matches!(kind, OpKind::Set { .. }) { SET_DATA } else { GET_DATA };
        let invoke_ns = clock.ns();
        let mut op = Op {
            client: id,
            session,
            conn: conn_no,
            server,
            kind,
            invoke_ns,
            complete_ns: 0,
            outcome: Outcome::Info,
            zxid: 0,
            reg: None,
            recv_seq: 0,
        };
        let sent = c.send(xid, opcode, body);
        let reply = sent.and_then(|()| {
            loop {
                let f = c.read()?;
                recv_seq += 1;
                let fxid = i32::from_be_bytes(f[0..4].try_into().unwrap());
                let zxid = i64::from_be_bytes(f[4..12].try_into().unwrap());
                if fxid == -1 {
                    // type, state, path
                    let path = String::from_utf8_lossy(&f[28..]).into_owned();
                    if let Some(k) = path.strip_prefix(&format!("{ROOT}/k")).and_then(|k| k.parse().ok()) {
                        events.push(Event { client: id, conn: conn_no, key: k, zxid, recv_seq });
                    }
                    continue;
                }
                if fxid == xid {
                    break Ok((zxid, i32::from_be_bytes(f[12..16].try_into().unwrap()), f[16..].to_vec()));
                }
            }
        });
        op.complete_ns = clock.ns();
        match reply {
            Ok((zxid, err, body)) => {
                op.zxid = zxid;
                op.recv_seq = recv_seq;
                last_zxid = last_zxid.max(zxid);
                if err != 0 {
                    op.outcome = Outcome::Fail(err);
                } else {
                    op.outcome = Outcome::Ok;
                    op.reg = Some(match &op.kind {
                        OpKind::Set { value, .. } => {
                            clock.acked.fetch_add(1, Ordering::Relaxed);
                            let (version, mzxid) = stat(&body);
                            Reg { value: value.clone(), version, mzxid }
                        }
                        OpKind::Get { .. } => {
                            let n = i32::from_be_bytes(body[0..4].try_into().unwrap()).max(0) as usize;
                            let (version, mzxid) = stat(&body[4 + n..]);
                            Reg { value: String::from_utf8_lossy(&body[4..4 + n]).into_owned(), version, mzxid }
                        }
                    });
                }
            }
            Err(_) => {
                // Broken or silent: the outcome is unknown. Move on.
                conn = None;
                server = (server + 1) % servers.len();
            }
        }
        ops.push(op);
    }
    if let Some(mut c) = conn {
        let _ = c.send(-8, -11, Jute::default());
    }
    (ops, events, leases)
}

/// Runs `clients` clients over `servers` while `during` runs (the faults),
/// then stops them.
pub fn run(servers: &[SocketAddr], clients: usize, keys: usize, during: impl FnOnce(&Clock)) -> History {
    let clock = Clock::new();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (servers, clock) = (servers.to_vec(), clock.clone());
            std::thread::spawn(move || client(i, servers, keys, clock))
        })
        .collect();
    during(&clock);
    clock.stop.store(true, Ordering::Relaxed);
    let mut h = History::default();
    for t in handles {
        let (ops, events, leases) = t.join().expect("client thread");
        h.leases.extend(leases);
        h.ops.extend(ops);
        h.events.extend(events);
    }
    h
}

/// Every register as `server` shows it after a `sync`.
pub fn final_state(server: SocketAddr, keys: usize) -> Vec<Option<Reg>> {
    let mut raw = crate::Raw::connect(server, 10_000);
    let f = raw.call(1, SYNC, Jute::default().str(ROOT));
    assert_eq!(f.err, 0, "sync on {server}");
    (0..keys)
        .map(|k| {
            let f = raw.call(2, GET_DATA, Jute::default().str(&key_path(k)).bool(false));
            (f.err == 0).then(|| {
                let n = i32::from_be_bytes(f.body[0..4].try_into().unwrap()).max(0) as usize;
                let (version, mzxid) = stat(&f.body[4 + n..]);
                Reg { value: String::from_utf8_lossy(&f.body[4..4 + n]).into_owned(), version, mzxid }
            })
        })
        .collect()
}

/// Waits until `clock` has counted `n` more acknowledged writes.
pub fn more_writes(clock: &Clock, n: u64, within: Duration) {
    let start = clock.acked.load(Ordering::Relaxed);
    assert!(
        eventually(within, || clock.acked.load(Ordering::Relaxed) >= start + n),
        "writes stalled: {} acknowledged in {within:?}, wanted {n}",
        clock.acked.load(Ordering::Relaxed) - start
    );
}

/// Checks a history against every running member's final state, and the
/// members' digests against each other at one applied index.
pub fn check(c: &mut Cluster, mut h: History, keys: usize) -> checker::Report {
    let (index, digest) = c.converged();
    let running: Vec<SocketAddr> = c.nodes.iter_mut().filter_map(|n| n.is_running().then_some(n.client)).collect();
    h.finals = running.iter().map(|&s| final_state(s, keys)).collect();
    let member = c.nodes.iter_mut().position(|n| n.is_running()).expect("a running member");
    (h.live_sessions, h.final_ephemerals) = sessions_and_leases(&c.nodes[member].api());
    h.lease_ends = lease_deletions(c.nodes[member].http);
    let r = checker::check(&h);
    eprintln!(
        "history: {} ok writes, {} indeterminate ({} took effect), {} reads, {} events, {} leases ({} session ends seen); \
         members at index {index} digest {digest}",
        r.ok_writes, r.info_writes, r.info_effective, r.reads, r.events, r.leases, r.session_ends
    );
    r.assert_valid();
    assert!(r.ok_writes > 100 && r.reads > 100, "too little load to mean anything: {r:?}");
    r
}

/// The live sessions, and the leases left with their owners, as one member
/// shows them: read as children, sessions, children again, until the two
/// listings agree (an expiry in between would delete a lease).
fn sessions_and_leases(api: &str) -> (Vec<i64>, Vec<(String, i64)>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let get = |path: &str| -> serde_json::Value {
        agent
            .get(format!("{api}{path}"))
            .header("authorization", format!("Bearer {}", crate::cluster::TOKEN))
            .call()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap()
    };
    let hex = |v: &serde_json::Value| i64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let leases = || -> Vec<(String, i64)> {
        let page = get(&format!("/api/v1/children?path={LEASES}&stat=true&limit=10000"));
        page["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (format!("{LEASES}/{}", c["name"].as_str().unwrap()), hex(&c["stat"]["ephemeral_owner"])))
            .collect()
    };
    loop {
        let before = leases();
        let live = get("/api/v1/sessions").as_array().unwrap().iter().map(|s| hex(&s["id"])).collect();
        if leases() == before {
            return (live, before);
        }
    }
}

/// The zxid of every lease deletion the member's event history still holds
/// (`/api/v1/events` from zxid 0): the end of each lease's session. Reads
/// the replayed backlog until the stream goes quiet.
fn lease_deletions(http: SocketAddr) -> std::collections::HashMap<String, i64> {
    use std::io::BufRead;
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write!(
        s,
        "GET /api/v1/events?path={LEASES}&from_zxid=0 HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        crate::cluster::TOKEN
    )
    .unwrap();
    let mut ends = std::collections::HashMap::new();
    let mut event = String::new();
    for line in std::io::BufReader::new(s).lines() {
        // HTTP/1.0: the body is not chunked, so each SSE line is a line.
        let Ok(line) = line else { break };
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:")
            && event == "change"
        {
            let v: serde_json::Value = serde_json::from_str(d.trim()).expect("a change event is JSON");
            if v["type"] == "deleted" {
                ends.insert(v["path"].as_str().unwrap().to_owned(), v["zxid"].as_i64().unwrap());
            }
        }
    }
    ends
}
