//! Deterministic simulation of Corral's server.
//!
//! Five members run the real openraft, Raft log ([`LogStore`]), state
//! machine ([`StateMachine`] over [`StateDb`]) and snapshot code, and the
//! server around them ([`Shared`]): its client connections
//! (`server::connection`), its peer service (`server::peers`: Raft's
//! requests, forwarded writes, session reports), its dispatcher of replies
//! and watch events, and its duties (the leader's session expiry, a
//! follower's liveness reports). All of it runs on one current-thread tokio
//! runtime whose clock is paused, and entries are stamped by that clock
//! ([`Clock::Simulated`]):
//! - no work runs on a thread the simulation does not schedule (storage
//!   work runs in place on such a runtime: `corral::raft::runtime`);
//! - time moves only when every task waits, so timers fire in the same
//!   order every run;
//! - openraft's randomness (election timeouts) comes from the seed
//!   ([`seed_thread_rng`]), and so do the network's, the clients' and the
//!   nemesis'.
//!
//! Members talk over the server's own transport (`corral::raft::network`:
//! handshake, frames, byte caps, snapshot chunks, timeouts, re-dials),
//! carried by simulated connections instead of TCP ([`dialer`]); a run
//! over TLS ([`SimTls`], `SIM_TLS=1`) puts the server's mutual TLS on
//! them, and its secure client port under the ZooKeeper clients; with
//! `SIM_API=1`, two more clients use the admin HTTP API ([`api_client`]). The
//! nemesis delays their bytes (in order within a connection, as TCP
//! keeps them), resets connections, partitions members (a cut link holds
//! its bytes, and dials across it hear nothing), crashes and restarts
//! members (their connections end with them), fails fsyncs,
//! cuts a disk's power in the middle of its writes (most often inside a
//! redb commit), and changes the membership. Disks are [`CrashDisk`]s: a
//! restarted member finds what it had synced and, half the time, some of
//! the writes since, as pages the OS wrote back on its own.
//!
//! Two kinds of clients. Five propose to the leader's Raft directly: they
//! hold sessions (opened, resumed through a new leader, closed or
//! expired), create paths of their own (some ephemeral), overwrite four
//! shared registers, and try writes as sessions that ended. Three speak
//! ZooKeeper's protocol ([`zk_client`], with `corral::client`) over
//! simulated connections to any member, as real clients do: they resume
//! their sessions on whichever member they reach next, create and
//! overwrite, and read the registers with watches, which they replay on
//! each new connection (`setWatches`). When the faults stop,
//! every member restarts and catches up, and [`check`] runs on every
//! member: no acknowledged write lost or overwritten by an older one,
//! nothing no client wrote, no orphan ephemeral, no write from an ended
//! session, no live session refused, equal digests that match the records;
//! a session's replies never go back in zxid, even across members; each
//! watch fires once, for the first change after its read, and before any
//! reply that shows a later state; and then, with the clients stopped,
//! every session expires.
//!
//! A run is a pure function of its seed: its trace (each message's fate,
//! faults, proposals, outcomes, final digests) is the same event for
//! event. A failing seed reproduces with
//! `SIM_SEEDS=<seed> cargo test -p corral --test sim seeds -- --nocapture`;
//! `SIM_SEEDS=1-200 SIM_SECS=60` sweeps by hand; `SIM_TRACE=1` writes each
//! seed's trace to `/tmp/corral-sim-<seed>.trace` (a failing seed's is
//! always written); `SIM_LOG=<file> RUST_LOG=openraft=info` adds the
//! members' own logs.

// Each test binary uses its part of the crash disk.
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::CrashDisk;
use corral::client::{Client, ClientError};
use corral::config::{ClientAuth, Config};
use corral::machine::command::{ClusterConfig, Command, Identity, Op, Origin, Write};
use corral::machine::{Applied, ApplySink, Reply, SessionChange, StateDb, StateOptions, WriteResult};
use corral::proto::data::{Acl, Id};
use corral::proto::error::ErrorCode;
use corral::proto::op;
use corral::proto::request::{CreateRequest, Request, SetWatches};
use corral::proto::response::Response;
use corral::raft::log_store::LogStore;
use corral::raft::network::{Dialer, Network, PeerStream, Settings};
use corral::raft::state_machine::StateMachine;
use corral::raft::{NodeInfo, Raft, TypeConfig, seed_thread_rng, step_down_unless_voter};
use corral::server::dispatch::Dispatcher;
use corral::server::peers::accept_peer;
use corral::server::sessions::Liveness;
use corral::server::{Clock, Shared, connection, serve_secure, spawn_duties, token_hash};
use corral::tls::{PeerTls, Tls};
use futures::FutureExt;
use openraft::error::Fatal;
use openraft::rt::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

const MEMBERS: u64 = 5;
/// Clients that propose to the leader's Raft directly.
const CLIENTS: u64 = 5;
/// Clients that speak ZooKeeper's protocol to any member, through the
/// server's own connection code.
const ZK_CLIENTS: u64 = 3;
/// Clients of the admin HTTP API, in a run with [`Extras::api`].
const API_CLIENTS: u64 = 2;

/// What the members, the links, the clients and the nemesis share.
struct World {
    seed: u64,
    /// Decides each message's fate.
    rng: Mutex<SmallRng>,
    /// Running members, by id.
    live: Mutex<BTreeMap<u64, Member>>,
    /// Directed links that carry nothing: `(from, to)`.
    cut: Mutex<BTreeSet<(u64, u64)>>,
    /// Connections reset, per thousand chunks carried.
    loss_per_mille: AtomicU64,
    trace: Mutex<Vec<String>>,
    /// The replies to client commands, by `(client, seq)`.
    replies: Mutex<BTreeMap<(u64, i32), Reply>>,
    started: Instant,
    /// Snapshot directories, one per member, kept across restarts, as
    /// their files are fsynced before they count (snapshots being received
    /// among them).
    scratch: tempfile::TempDir,
    /// Set when the faults and the clients stop.
    quiet: AtomicBool,
    /// What must never happen, seen by the harness (a panicked core).
    violations: Mutex<Vec<String>>,
    /// Sessions whose expiry by a leader (not by a client) has applied.
    server_ended: Mutex<BTreeSet<i64>>,
    /// Starts of members so far: each start's connection ids differ.
    boots: AtomicU64,
    /// Set when the run's links use TLS.
    tls: Option<SimTls>,
}

/// A run over TLS, as a secured cluster runs: mutual TLS between members
/// (each member's certificate names it, `member-<id>`, and must name the
/// member a link dials), and the ZooKeeper clients on the members' secure
/// ports, each showing a certificate of its own (its `x509` identity).
/// The server's own TLS code runs over the simulated links
/// (`Link::secure`, `peers::accept_peer`, `server::serve_secure`).
///
/// Keys are Ed25519 and serial numbers fixed, so that every handshake has
/// the same length in every run: the links draw a fate per chunk of
/// bytes, and the run stays a function of its seed although the keys and
/// the handshakes' nonces are random.
struct SimTls {
    /// `ca.pem`, and `member-<id>.pem` and `.key` for each member.
    dir: std::path::PathBuf,
    /// What each ZooKeeper client dials with: the CA's roots and its own
    /// certificate.
    clients: BTreeMap<u64, tokio_rustls::TlsConnector>,
}

impl SimTls {
    fn new(dir: std::path::PathBuf) -> SimTls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ED25519, SerialNumber};
        std::fs::create_dir_all(&dir).expect("TLS directory");
        let ca_key = KeyPair::generate_for(&PKCS_ED25519).expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "simulated CA");
        ca.serial_number = Some(SerialNumber::from(1u64));
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
        let issuer = Issuer::new(ca, ca_key);
        let issue = |names: Vec<String>, cn: &str, serial: u64| {
            let key = KeyPair::generate_for(&PKCS_ED25519).expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.serial_number = Some(SerialNumber::from(serial));
            (params.signed_by(&key, &issuer).expect("certificate"), key)
        };
        for id in 1..=MEMBERS {
            let (cert, key) = issue(vec![format!("member-{id}")], &format!("member-{id}"), 100 + id);
            std::fs::write(dir.join(format!("member-{id}.pem")), cert.pem()).expect("member certificate");
            std::fs::write(dir.join(format!("member-{id}.key")), key.serialize_pem()).expect("member key");
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("CA root");
        let roots = Arc::new(roots);
        let clients = (1..=ZK_CLIENTS)
            .map(|id| {
                let (cert, key) = issue(Vec::new(), &format!("zk-client-{id}"), 200 + id);
                let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("client key");
                let config =
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .expect("TLS versions")
                        .with_root_certificates(roots.clone())
                        .with_client_auth_cert(vec![cert.der().clone()], key)
                        .expect("client certificate");
                (id, tokio_rustls::TlsConnector::from(Arc::new(config)))
            })
            .collect();
        SimTls { dir, clients }
    }

    /// Member `id`'s settings for both: its peer links and its secure port.
    fn configure(&self, id: u64, config: &mut Config) {
        let (cert, key) = (self.dir.join(format!("member-{id}.pem")), self.dir.join(format!("member-{id}.key")));
        config.peer_tls_cert_file = Some(cert.clone());
        config.peer_tls_key_file = Some(key.clone());
        config.peer_tls_ca_file = Some(self.dir.join("ca.pem"));
        config.secure_client_addr = Some(SocketAddr::from(([10, 0, 0, id as u8], 2281)));
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.tls_ca_file = Some(self.dir.join("ca.pem"));
        config.tls_client_auth = ClientAuth::Need;
    }
}

#[derive(Clone)]
struct Member {
    raft: Raft,
    state: Arc<StateDb>,
    disks: Disks,
    /// Its secure port's TLS, in a run over TLS.
    client_tls: Option<Arc<Tls>>,
    /// The server around them: what its client connections, its peer
    /// service and its duties (session expiry, reports) run on.
    shared: Arc<Shared>,
    /// Cancelled when it crashes: its duties and connections end with it.
    stop: CancellationToken,
}

#[derive(Clone)]
struct Disks {
    log: CrashDisk,
    state: CrashDisk,
}

impl World {
    fn note(&self, event: impl Into<String>) {
        let ms = self.started.elapsed().as_millis();
        self.trace.lock().push(format!("{ms:>7} {}", event.into()));
    }

    fn member(&self, id: u64) -> Option<Member> {
        self.live.lock().get(&id).cloned()
    }

    /// The delay of a chunk of bytes on a link, and whether the link
    /// resets instead.
    fn fate(&self) -> (Duration, bool) {
        let mut rng = self.rng.lock();
        let delay = Duration::from_millis(rng.random_range(0..=15));
        let lost = rng.random_range(0..1000) < self.loss_per_mille.load(Ordering::Relaxed);
        (delay, lost)
    }

    /// Member `id`'s data directory: only its snapshots are files (its
    /// databases are on its [`CrashDisk`]s), kept across restarts, as they
    /// are fsynced before they count (snapshots being received among them).
    fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.scratch.path().join(format!("member-{id}"))
    }

    /// Whether `session` ended as a client's session may: closed or
    /// expired by a client here, or expired by a leader.
    fn ended(&self, history: &History, session: i64) -> bool {
        history.ending.contains(&session) || self.server_ended.lock().contains(&session)
    }
}

/// The address a simulated member or client shows in logs.
fn sim_addr(id: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 2181))
}

/// Room in each direction of a simulated connection, as a socket buffer.
const LINK_BUFFER: usize = 64 << 10;

/// Member `id`'s transport settings, as a server's with small caps: a
/// follower catching up gets its entries in parts (an append cut at 2 KiB,
/// about 35 entries, answered as a partial success), and a snapshot comes
/// in many chunks.
fn settings(world: &Arc<World>, id: u64, tls: Option<Arc<PeerTls>>) -> Settings {
    let (max_append_bytes, snapshot_chunk_bytes) = (2 << 10, 16 << 10);
    Settings {
        tls,
        node: id,
        secret: Arc::from(&b"the simulated cluster's secret"[..]),
        max_frame_bytes: max_append_bytes + snapshot_chunk_bytes + (1 << 20),
        max_append_bytes,
        snapshot_chunk_bytes,
        rpc_timeout: Duration::from_millis(1000),
        dialer: dialer(world.clone(), id),
    }
}

/// The links between members. Each dial makes two in-memory byte streams
/// joined by a [`pump`] each way, and serves the far end as member `to`
/// would ([`serve`]); the members speak the server's own transport over
/// them (`corral::raft::network`: the handshake, the frames, the byte cap
/// on appends, the snapshot chunks, the timeouts and re-dials). A dial
/// across a partition hears nothing back; one to a member that is down is
/// refused.
fn dialer(world: Arc<World>, from: u64) -> Dialer {
    Dialer::Custom(Arc::new(move |addr: &str| {
        let world = world.clone();
        let to: u64 = addr.strip_prefix("sim-").and_then(|n| n.parse().ok()).expect("a simulated address");
        Box::pin(async move {
            let (near, member, far) = link(&world, from, to).await?;
            tokio::spawn(serve(from, member, far));
            Ok(Box::new(near) as Box<dyn PeerStream>)
        })
    }))
}

/// A connection from `from` (a member, or a client) to member `to`: two
/// in-memory byte streams joined by a [`pump`] each way. Returns the near
/// end, and member `to` with the far end for it to serve. A dial across a
/// partition hears nothing back; one to a member that is down is refused.
async fn link(world: &Arc<World>, from: u64, to: u64) -> io::Result<(DuplexStream, Member, DuplexStream)> {
    world.note(format!("dial {from}->{to}"));
    if world.cut.lock().contains(&(from, to)) {
        std::future::pending::<()>().await;
    }
    let Some(member) = world.member(to) else {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("member {to} is down")));
    };
    let (near, far_near) = tokio::io::duplex(LINK_BUFFER);
    let (far_far, far) = tokio::io::duplex(LINK_BUFFER);
    let (near_rd, near_wr) = tokio::io::split(far_near);
    let (far_rd, far_wr) = tokio::io::split(far_far);
    let reset = CancellationToken::new();
    tokio::spawn(pump(world.clone(), (from, to), near_rd, far_wr, reset.clone()));
    tokio::spawn(pump(world.clone(), (to, from), far_rd, near_wr, reset));
    Ok((near, member, far))
}

/// Carries one direction of a connection, `from -> to`: each chunk after
/// its own delay but never before the chunk ahead of it (TCP's order);
/// held while a partition cuts the link; and, at the links' loss rate,
/// the whole connection reset, as a lossy link ends up doing.
async fn pump(
    world: Arc<World>,
    (from, to): (u64, u64),
    mut rd: ReadHalf<DuplexStream>,
    mut wr: WriteHalf<DuplexStream>,
    reset: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (world, reset) = (&world, &reset);
    // Owns the sender: once it ends, `deliver` drains what is queued.
    let carry = async move {
        let mut due = Instant::now();
        let mut buf = vec![0u8; LINK_BUFFER];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (delay, lost) = world.fate();
            if lost {
                world.note(format!("reset {from}->{to}"));
                reset.cancel();
                return;
            }
            due = due.max(Instant::now() + delay);
            let _ = tx.send((due, buf[..n].to_vec()));
        }
    };
    let deliver = async {
        while let Some((due, bytes)) = rx.recv().await {
            sleep_until(due).await;
            while world.cut.lock().contains(&(from, to)) {
                sleep(Duration::from_millis(10)).await;
            }
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The sender closed its side: so does this one, once all is through.
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        biased;
        _ = reset.cancelled() => {}
        _ = async { tokio::join!(carry, deliver) } => {}
    }
}

/// A member's side of a connection from member `from`, served by the
/// server's own code (`server::peers`): the handshake, Raft's requests,
/// and the server's own (writes forwarded by followers, their session
/// reports), until the connection ends or the member crashes (its
/// connections end with it, as a process's do).
async fn serve(from: u64, member: Member, stream: DuplexStream) {
    tokio::select! {
        biased;
        _ = member.stop.cancelled() => {}
        _ = accept_peer(member.shared.clone(), stream, sim_addr(from)) => {}
    }
}

/// A member's side of a ZooKeeper client's connection: the server's own
/// connection code, until the client hangs up or the member crashes.
async fn serve_client(from: u64, member: Member, stream: DuplexStream) {
    let shared = member.shared.clone();
    let conn = match &member.client_tls {
        Some(tls) => serve_secure(shared, stream, sim_addr(from), tls.acceptor()).boxed(),
        None => {
            let (rd, wr) = tokio::io::split(stream);
            connection::serve(shared, (Box::new(rd), Box::new(wr)), sim_addr(from), Vec::new()).boxed()
        }
    };
    tokio::select! {
        biased;
        _ = member.stop.cancelled() => {}
        _ = conn => {}
    }
}

/// Member `node`'s apply sink: its server's [`Dispatcher`] (replies and
/// watch events to its connections, sessions to its liveness), and, for
/// the harness, the replies to the commands its direct clients proposed
/// through it and the sessions a leader expired.
struct Replies {
    node: u64,
    world: Arc<World>,
    dispatch: Arc<Dispatcher>,
}

impl ApplySink for Replies {
    fn publish(&self, applied_index: u64, outcomes: Vec<Applied>) {
        {
            let mut replies = self.world.replies.lock();
            for a in &outcomes {
                if let Some(o) = a.origin.filter(|o| o.node == self.node && o.conn <= CLIENTS) {
                    replies.insert((o.conn, o.xid), a.reply.clone());
                }
                if let (None, Some(SessionChange::Ended { id, .. })) = (a.origin, &a.session) {
                    self.world.server_ended.lock().insert(*id);
                }
            }
        }
        self.dispatch.publish(applied_index, outcomes);
    }

    fn installed(&self, applied_index: u64, sessions: Vec<(i64, i32)>) {
        self.world.note(format!("member {} installed a snapshot through {applied_index}", self.node));
        self.dispatch.installed(applied_index, sessions);
    }
}

fn raft_config() -> Arc<openraft::Config> {
    let c = Config {
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        heartbeat_interval_ms: 50,
        // Small, so that runs build, send and install snapshots and purge.
        snapshot_every_entries: 100,
        snapshot_logs_to_keep: 20,
        ..Config::default()
    };
    Arc::new(corral::server::raft_config(&c).expect("valid raft config"))
}

/// Starts member `id` on `disks`.
async fn start(world: &Arc<World>, id: u64, disks: Disks) -> Member {
    let log_db = redb::Database::builder().create_with_backend(disks.log.clone()).expect("log database opens");
    let log = LogStore::on(log_db, 1 << 12).expect("log store opens");
    // Pacing as a server has it, so that its waits are simulated too.
    log.pace_by_apply(Duration::from_millis(2));
    let state_db = redb::Database::builder().create_with_backend(disks.state.clone()).expect("state database opens");
    let options = StateOptions {
        cache_bytes: 1 << 20,
        sync_interval: Duration::from_millis(200),
        event_history: 100,
        allow_gaps: false,
    };
    let state = Arc::new(StateDb::on(state_db, options, None).expect("state opens"));
    // A server's settings, with its session checks often.
    let mut config = Config { node_id: id, data_dir: world.data_dir(id), session_check_ms: 100, ..Config::default() };
    if let Some(tls) = &world.tls {
        tls.configure(id, &mut config);
    }
    let peer_tls = PeerTls::from_config(&config).expect("peer TLS").map(Arc::new);
    let client_tls = Tls::from_config(&config).expect("client TLS").map(Arc::new);
    let config = Arc::new(config);
    let dispatch = Arc::new(Dispatcher::new(id, Arc::new(Liveness::default()), state.applied_index()));
    let sink = Replies { node: id, world: world.clone(), dispatch: dispatch.clone() };
    let sm = StateMachine::new(state.clone(), Arc::new(sink), config.data_dir.join("snapshots"))
        .expect("state machine")
        .after_log(log.clone());
    let network = Network { settings: settings(world, id, peer_tls.clone()) };
    let raft = Raft::new(id, raft_config(), network, log, sm).await.expect("raft starts");
    let boot = world.boots.fetch_add(1, Ordering::Relaxed) as u32 + 1;
    let clock = Clock::Simulated { start_ms: 0, at: world.started };
    let shared = Arc::new(Shared::new(
        config,
        raft.clone(),
        state.clone(),
        dispatch,
        settings(world, id, peer_tls),
        boot,
        clock,
    ));
    shared.time_sessions_from_now().await.expect("sessions load");
    let stop = CancellationToken::new();
    // Detached: they end with `stop`.
    drop(spawn_duties(&shared, &stop));
    let member = Member { raft, state, disks, client_tls, shared, stop };
    world.live.lock().insert(id, member.clone());
    member
}

/// How a crash's note ends when it keeps some unsynced writes.
const TORN: &str = ", keeping some unsynced writes";

/// Pulls the plug on member `id`: its disks keep what was synced and, if
/// `torn` is given, a random half of the writes since, as it picks (pages
/// the OS wrote back on its own before the power went).
async fn crash(world: &World, id: u64, mut torn: Option<SmallRng>) -> Option<Disks> {
    let mut keep = || torn.as_mut().is_some_and(|pages| pages.random_bool(0.5));
    let member = world.live.lock().remove(&id)?;
    member.stop.cancel();
    let disks = Disks { log: member.disks.log.crash(&mut keep), state: member.disks.state.crash(&mut keep) };
    let _ = member.raft.shutdown().await;
    Some(disks)
}

/// Registers every client overwrites: `/r0` .. `/r3`.
const REGISTERS: u64 = 4;

/// What a client asks of the cluster.
enum Ask<'a> {
    /// `path` gets `data`: by a create (ephemeral, owned by the session,
    /// if asked), or by an unconditional overwrite of a register.
    Write {
        path: &'a str,
        data: Vec<u8>,
        overwrite: bool,
        ephemeral: bool,
    },
    OpenSession,
    ResumeSession(i64),
    CloseSession(i64),
    /// What the leader proposes when a session's timeout passes.
    ExpireSession(i64),
}

/// The command for `ask`, from `client`'s connection to member `leader`,
/// as `session`.
fn command(client: u64, seq: u64, leader: u64, now_ms: i64, session: Option<i64>, ask: Ask<'_>) -> Command {
    let op = match ask {
        Ask::Write { path, data, overwrite, ephemeral } => {
            let write = if overwrite {
                Write::SetData { path: path.to_owned(), data: Some(data), version: -1 }
            } else {
                let flags = if ephemeral { 1 } else { 0 };
                let req = CreateRequest { path: path.to_owned(), data: Some(data), acl: Acl::open(), flags, ttl: None };
                Write::Create { opcode: 1, req }
            };
            let identity = Identity { ids: vec![Id { scheme: "ip".into(), id: "127.0.0.1".into() }], token: None };
            Op::Write { session, identity, write }
        }
        Ask::OpenSession => Op::CreateSession { timeout_ms: 5000, http: false },
        Ask::ResumeSession(session) => Op::ResumeSession { session },
        Ask::CloseSession(session) => Op::CloseSession { session },
        Ask::ExpireSession(session) => Op::ExpireSession { session },
    };
    Command { time_ms: now_ms, origin: Some(Origin { node: leader, conn: client, xid: seq as i32 }), op }
}

/// A create with no session, as the harness makes its fixed nodes.
fn create(path: &str, data: &[u8]) -> Command {
    let ask = Ask::Write { path, data: data.to_vec(), overwrite: false, ephemeral: false };
    command(0, 0, 0, 0, None, ask)
}

/// The member that leads: of those that think they lead, the one in the
/// newest term. (Asking any member whom it follows can name a stale
/// leader: a member removed from the cluster hears from nobody again.)
fn leader(world: &World) -> Option<(u64, Raft)> {
    let live = world.live.lock();
    live.iter()
        .map(|(id, m)| (id, m, m.raft.metrics().borrow_watched().clone()))
        .filter(|(_, _, metrics)| metrics.state == ServerState::Leader)
        .max_by_key(|(_, _, metrics)| metrics.current_term)
        .map(|(id, m, _)| (*id, m.raft.clone()))
}

/// What clients did: every write proposed, and those acknowledged, with
/// the zxid of the change they made; the sessions they ended; and what
/// must never happen.
#[derive(Default)]
struct History {
    /// Path -> (mzxid, data) of each acknowledged write.
    acked: BTreeMap<String, Vec<(i64, Vec<u8>)>>,
    /// Path -> the data of each write proposed.
    proposed: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Ephemeral path -> its session.
    ephemerals: BTreeMap<String, i64>,
    /// Sessions whose end was proposed (it may have applied)...
    ending: BTreeSet<i64>,
    /// ... and those whose end surely applied.
    ended: BTreeSet<i64>,
    /// Watches of ZooKeeper clients that fired: the path, the mzxid the
    /// read that set it saw, the event's zxid, and whether the watch was
    /// replayed on a later connection (`setWatches`).
    fired: Vec<(String, i64, i64, bool)>,
    /// Watches still unfired when a reply came on their connection: the
    /// path, the mzxid the read saw, and the reply's zxid.
    waiting: Vec<(String, i64, i64, String)>,
    violations: Vec<String>,
}

/// One client: a session (opened, resumed through whichever member leads
/// now, as a ZooKeeper client reconnects, closed or expired now and then),
/// writes as that session, and now and then a write as a session already
/// ended, which must be refused.
async fn client(world: Arc<World>, seed: u64, id: u64, history: Arc<Mutex<History>>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (id << 32));
    let mut seq = 0u64;
    // The session, and the member its connection is on.
    let mut session: Option<(i64, u64)> = None;
    while !world.quiet.load(Ordering::Relaxed) {
        let Some((leader, raft)) = leader(&world) else {
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        seq += 1;
        let now_ms = world.started.elapsed().as_millis() as i64;
        let sid = session.map(|(s, _)| s);
        // As a connection on the leader does with each request it reads.
        if let (Some(s), Some(m)) = (sid, world.member(leader)) {
            m.shared.dispatch.liveness.touch(s, Instant::now());
        }
        let old = history.lock().ended.iter().copied().nth(rng.random_range(0..8));
        let (ask, what) = match session {
            None => (Ask::OpenSession, "open a session".to_owned()),
            Some((s, on)) if on != leader => (Ask::ResumeSession(s), format!("resume session {s:x}")),
            Some((s, _)) if rng.random_bool(0.03) => {
                history.lock().ending.insert(s);
                if rng.random_bool(0.5) {
                    (Ask::CloseSession(s), format!("close session {s:x}"))
                } else {
                    (Ask::ExpireSession(s), format!("expire session {s:x}"))
                }
            }
            Some(_) if old.is_some() && rng.random_bool(0.05) => {
                let s = old.expect("an ended session");
                let path = format!("/z{id}-{seq}");
                let ask = Ask::Write { path: &path, data: Vec::new(), overwrite: false, ephemeral: false };
                let cmd = command(id, seq, leader, now_ms, Some(s), ask);
                let outcome = tokio::time::timeout(Duration::from_secs(3), raft.client_write(cmd)).await;
                let reply = world.replies.lock().remove(&(id, seq as i32));
                world.note(format!("client {id}: write {path} as ended session {s:x}: {reply:?}"));
                if let (Ok(Ok(_)), Some(Reply::Write(Ok(_)))) = (outcome, reply) {
                    history.lock().violations.push(format!("{path} written as session {s:x}, which had ended"));
                }
                continue;
            }
            Some(_) => {
                let overwrite = rng.random_bool(0.5);
                let ephemeral = !overwrite && rng.random_bool(0.3);
                let path = match (overwrite, ephemeral) {
                    (true, _) => format!("/r{}", rng.random_range(0..REGISTERS)),
                    (false, true) => format!("/e{id}-{seq}"),
                    (false, false) => format!("/c{id}-{seq}"),
                };
                let data = format!("{id}:{seq}").into_bytes();
                {
                    let mut h = history.lock();
                    h.proposed.entry(path.clone()).or_default().insert(data.clone());
                    if ephemeral {
                        h.ephemerals.insert(path.clone(), sid.expect("a session"));
                    }
                }
                let ask = Ask::Write { path: &path, data: data.clone(), overwrite, ephemeral };
                let cmd = command(id, seq, leader, now_ms, sid, ask);
                match tokio::time::timeout(Duration::from_secs(3), raft.client_write(cmd)).await {
                    Ok(Ok(r)) => match world.replies.lock().remove(&(id, seq as i32)) {
                        Some(Reply::Write(Ok(WriteResult::Created { stat, .. } | WriteResult::SetData { stat }))) => {
                            world.note(format!("client {id}: {path} = {id}:{seq} acked at {} by {leader}", r.log_id));
                            history.lock().acked.entry(path).or_default().push((stat.mzxid, data));
                        }
                        Some(Reply::Write(Err(ErrorCode::SessionExpired))) => {
                            world.note(format!("client {id}: {path} refused: session expired"));
                            let s = sid.expect("a session");
                            if !world.ended(&history.lock(), s) {
                                history.lock().violations.push(format!("session {s:x} expired; nobody ended it"));
                            }
                            session = None;
                        }
                        Some(Reply::Write(Err(ErrorCode::SessionMoved))) => {
                            // A resume whose answer was lost moved it: resume again.
                            world.note(format!("client {id}: {path} refused: session moved"));
                            session = session.map(|(s, _)| (s, 0));
                        }
                        other => world.note(format!("client {id}: {path} applied at {} with {other:?}", r.log_id)),
                    },
                    Ok(Err(e)) => {
                        world.note(format!("client {id}: {path} failed at {leader}: {e}"));
                        // Give the cluster time to elect or to reach the leader.
                        sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => world.note(format!("client {id}: {path} timed out at {leader}")),
                }
                sleep(Duration::from_millis(rng.random_range(0..20))).await;
                continue;
            }
        };
        let ending = matches!(ask, Ask::CloseSession(_) | Ask::ExpireSession(_));
        let cmd = command(id, seq, leader, now_ms, None, ask);
        let outcome = tokio::time::timeout(Duration::from_secs(3), raft.client_write(cmd)).await;
        let reply = world.replies.lock().remove(&(id, seq as i32));
        world.note(format!("client {id}: {what} through {leader}: {reply:?}"));
        match (outcome, reply) {
            (Ok(Ok(_)), Some(Reply::Connected { session: s, .. })) => session = Some((s, leader)),
            (Ok(Ok(_)), Some(Reply::ConnectRefused)) => {
                let s = sid.expect("resumed a session");
                if !world.ended(&history.lock(), s) {
                    history.lock().violations.push(format!("session {s:x} vanished; nobody ended it"));
                }
                session = None;
            }
            // Refused: a resume whose answer was lost moved the session to
            // another member, and it lives on. Resume it, as after a write
            // refused the same way.
            (Ok(Ok(_)), Some(Reply::Write(Err(ErrorCode::SessionMoved)))) if ending => {
                session = session.map(|(s, _)| (s, 0));
            }
            (Ok(Ok(_)), _) if ending => {
                history.lock().ended.insert(sid.expect("ended a session"));
                session = None;
            }
            (Ok(Err(_)), _) => sleep(Duration::from_millis(50)).await,
            // Unknown: if it ended, the next resume says so.
            _ => {}
        }
    }
}

/// One ZooKeeper client: it connects to a member it picks (any member:
/// a follower forwards its writes to the leader), opens or resumes its
/// session there with the last zxid it has seen, and then, over the
/// server's own connection code, creates nodes of its own (some
/// ephemeral), overwrites the registers, and reads them with a watch.
/// When the connection breaks (a reset, a crashed member, a write whose
/// fate the member cannot learn) it connects again and replays its
/// watches (`setWatches` with the last zxid it saw), as ZooKeeper clients
/// do. What it checks as it goes:
/// a session's replies never go back in zxid, even across connections,
/// and an event comes only for a watch that waits. What it records for
/// [`check`]: its acknowledged writes, and its watches, fired or not.
async fn zk_client(world: Arc<World>, seed: u64, id: u64, history: Arc<Mutex<History>>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (id << 40) ^ 0x2181);
    // Its own address on the links, apart from the members'.
    let me = 100 + id;
    let mut session: Option<(i64, Vec<u8>)> = None;
    let mut last_zxid = 0i64;
    // The session's watches: path -> the mzxid its read saw, and whether
    // it was replayed on a later connection.
    let mut watches: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    let mut seq = 0u64;
    while !world.quiet.load(Ordering::Relaxed) {
        let to = rng.random_range(1..=MEMBERS);
        let Ok(Ok((near, member, far))) = tokio::time::timeout(Duration::from_secs(1), link(&world, me, to)).await
        else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(serve_client(me, member, far));
        let (sid, password) = session.clone().unwrap_or((0, vec![0; 16]));
        let opened = async {
            let Some(tls) = &world.tls else {
                return Client::over(tokio::io::split(near), sim_addr(to), 4000, (sid, &password), last_zxid).await;
            };
            // The member's secure port: its certificate must name it.
            let near = tls.clients[&id]
                .connect(corral::tls::member_name(to), near)
                .await
                .map_err(|err| ClientError::Connect { addr: sim_addr(to), err })?;
            Client::over(tokio::io::split(near), sim_addr(to), 4000, (sid, &password), last_zxid).await
        };
        let (zk, mut events) = match tokio::time::timeout(Duration::from_secs(3), opened).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(ClientError::Refused(_))) => {
                // The server answered that the session is gone.
                world.note(format!("zk client {id}: session {sid:x} refused by member {to}"));
                if sid != 0 && !world.ended(&history.lock(), sid) {
                    history.lock().violations.push(format!("session {sid:x} vanished; nobody ended it"));
                }
                session = None;
                continue;
            }
            _ => {
                world.note(format!("zk client {id}: no session through member {to}"));
                sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if sid == 0 {
            world.note(format!("zk client {id}: session {:x} opened through member {to}", zk.session_id));
            session = Some((zk.session_id, zk.password.clone()));
            watches.clear();
        } else if zk.session_id != sid {
            history.lock().violations.push(format!("resumed session {sid:x}, got {:x}", zk.session_id));
        } else {
            world.note(format!("zk client {id}: session {sid:x} resumed through member {to}"));
        }
        let sid = zk.session_id;
        // A resumed session's watches were its last connection's: they are
        // registered again, and what changed since fires at once.
        let mut replay = !watches.is_empty();
        for _ in 0..rng.random_range(5..40) {
            if world.quiet.load(Ordering::Relaxed) {
                break;
            }
            seq += 1;
            let register = format!("/r{}", rng.random_range(0..REGISTERS));
            let data = format!("zk{id}:{seq}").into_bytes();
            let choice = if std::mem::take(&mut replay) { None } else { Some(rng.random_range(0..10)) };
            let (req, written) = match choice {
                None => {
                    for (_, replayed) in watches.values_mut() {
                        *replayed = true;
                    }
                    let data = watches.keys().cloned().collect();
                    (Request::SetWatches(SetWatches { relative_zxid: last_zxid, data, ..SetWatches::default() }), None)
                }
                Some(0..=2) => {
                    let ephemeral = rng.random_bool(0.3);
                    let path = format!("/k{id}-{seq}");
                    if ephemeral {
                        history.lock().ephemerals.insert(path.clone(), sid);
                    }
                    let flags = if ephemeral { 1 } else { 0 };
                    let req = CreateRequest {
                        path: path.clone(),
                        data: Some(data.clone()),
                        acl: Acl::open(),
                        flags,
                        ttl: None,
                    };
                    (Request::Create { opcode: op::CREATE, req }, Some(path))
                }
                Some(3..=5) => {
                    let req = Request::SetData { path: register.clone(), data: Some(data.clone()), version: -1 };
                    (req, Some(register.clone()))
                }
                Some(_) => (Request::GetData { path: register.clone(), watch: !watches.contains_key(&register) }, None),
            };
            if let Some(path) = &written {
                history.lock().proposed.entry(path.clone()).or_default().insert(data.clone());
            }
            let reply = match tokio::time::timeout(Duration::from_secs(3), zk.call(&req)).await {
                Ok(Ok(reply)) => reply,
                _ => {
                    world.note(format!("zk client {id}: connection to member {to} lost"));
                    break;
                }
            };
            let expired = {
                let mut h = history.lock();
                if reply.zxid < last_zxid {
                    h.violations.push(format!(
                        "session {sid:x} read zxid {} after {last_zxid} (member {to}): its view went back",
                        reply.zxid
                    ));
                }
                last_zxid = last_zxid.max(reply.zxid);
                let expired = match (reply.err, written) {
                    (0, Some(path)) => {
                        world.note(format!(
                            "zk client {id}: {path} = zk{id}:{seq} acked at {} by member {to}",
                            reply.zxid
                        ));
                        h.acked.entry(path).or_default().push((reply.zxid, data));
                        false
                    }
                    (0, None) if matches!(req, Request::SetWatches(_)) => {
                        world.note(format!("zk client {id}: {} watches replayed through member {to}", watches.len()));
                        false
                    }
                    (0, None) => {
                        match Response::decode(op::GET_DATA, &reply.body) {
                            Ok(Response::Data { stat, .. }) if matches!(req, Request::GetData { watch: true, .. }) => {
                                watches.insert(register, (stat.mzxid, false));
                            }
                            Ok(Response::Data { .. }) => {}
                            other => h.violations.push(format!("getData from member {to} answered {other:?}")),
                        }
                        false
                    }
                    (err, _) => {
                        world.note(format!("zk client {id}: error {err} from member {to}"));
                        err == ErrorCode::SessionExpired as i32
                    }
                };
                // Every event sent before this reply has arrived by now (and
                // perhaps some sent after it: hence after the watch this
                // reply set, if it set one).
                while let Ok(event) = events.try_recv() {
                    match watches.remove(&event.path) {
                        Some((read, replayed)) => h.fired.push((event.path, read, event.zxid, replayed)),
                        None => h.violations.push(format!(
                            "session {sid:x} got an event for {} at zxid {} with no watch waiting there",
                            event.path, event.zxid
                        )),
                    }
                }
                for (path, (read, _)) in &watches {
                    h.waiting.push((path.clone(), *read, reply.zxid, format!("zk client {id} through member {to}")));
                }
                expired
            };
            if expired {
                session = None;
                break;
            }
            sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
        if session.is_some() && rng.random_bool(0.05) {
            history.lock().ending.insert(sid);
            let closed = tokio::time::timeout(Duration::from_secs(3), zk.close()).await;
            world.note(format!("zk client {id}: close session {sid:x}: {closed:?}"));
            session = None;
        }
    }
    // It stops: its session expires on its own.
    if let Some((sid, _)) = session {
        history.lock().ending.insert(sid);
    }
}

/// The admin token's secret: its hash is in the cluster's first command.
const ADMIN_TOKEN: &str = "the simulated cluster's admin token";

/// Member `member`'s side of an admin API connection: the server's own
/// HTTP service (`corral::http::router`, served by hyper as `axum::serve`
/// serves it), until the client hangs up or the member crashes.
async fn serve_http(member: Member, stream: DuplexStream) {
    let prometheus = corral::http::prometheus_builder().build_recorder().handle();
    let router = corral::http::router(member.shared.clone(), prometheus);
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        biased;
        _ = member.stop.cancelled() => {}
        _ = conn => {}
    }
}

/// One request over an HTTP/1.1 connection kept open, as a minimal client
/// writes it; returns the status and the JSON body.
async fn http_call(
    stream: &mut DuplexStream,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> io::Result<(u16, serde_json::Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("a response head that is not UTF-8"))?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse()))
        .ok_or_else(|| bad("a response without content-length"))?
        .map_err(|_| bad("a bad content-length"))?;
    let mut body = buf.split_off(end);
    if body.len() < length {
        let have = body.len();
        body.resize(length, 0);
        stream.read_exact(&mut body[have..]).await?;
    }
    let json = serde_json::from_slice(&body[..length]).map_err(|_| bad("a body that is not JSON"))?;
    Ok((status, json))
}

/// A client of the admin HTTP API on any member, with the admin token:
/// creates paths of its own and overwrites the registers (`POST` and `PUT
/// /api/v1/node`, proposed through the same log as every write); after an
/// acknowledged overwrite it reads the register back from the same member
/// (`GET`), which must show that write or a later one, since the member
/// answers a write only once it has applied it.
async fn api_client(world: Arc<World>, seed: u64, id: u64, history: Arc<Mutex<History>>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (id << 40) ^ 0x8080);
    // Its own address on the links, apart from the members' and the
    // ZooKeeper clients'.
    let me = 200 + id;
    let mut seq = 0u64;
    while !world.quiet.load(Ordering::Relaxed) {
        let to = rng.random_range(1..=MEMBERS);
        let Ok(Ok((mut near, member, far))) = tokio::time::timeout(Duration::from_secs(1), link(&world, me, to)).await
        else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(serve_http(member, far));
        for _ in 0..rng.random_range(3..20) {
            if world.quiet.load(Ordering::Relaxed) {
                break;
            }
            seq += 1;
            let data = format!("api{id}:{seq}");
            let (method, path) = if rng.random_bool(0.4) {
                ("POST", format!("/a{id}-{seq}"))
            } else {
                ("PUT", format!("/r{}", rng.random_range(0..REGISTERS)))
            };
            history.lock().proposed.entry(path.clone()).or_default().insert(data.clone().into_bytes());
            let body = serde_json::json!({ "path": path, "data": data });
            let call = http_call(&mut near, method, "/api/v1/node", Some(&body));
            let (status, reply) = match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(reply)) => reply,
                _ => {
                    world.note(format!("api client {id}: connection to member {to} lost"));
                    break;
                }
            };
            if !(200..300).contains(&status) {
                // Unavailable (no leader, or the outcome unknown): the
                // write may or may not have happened.
                world.note(format!("api client {id}: HTTP {status} from member {to}: {}", reply["code"]));
                continue;
            }
            let Some(zxid) = reply["zxid"].as_i64() else {
                history.lock().violations.push(format!("member {to} acknowledged {path} without a zxid: {reply}"));
                continue;
            };
            world.note(format!("api client {id}: {path} = {data} acked at {zxid} by member {to}"));
            history.lock().acked.entry(path.clone()).or_default().push((zxid, data.into_bytes()));
            if method == "PUT" {
                let target = format!("/api/v1/node?path={path}");
                let read = http_call(&mut near, "GET", &target, None);
                match tokio::time::timeout(Duration::from_secs(10), read).await {
                    Ok(Ok((200, node))) => {
                        let seen = node["stat"]["mzxid"].as_i64().unwrap_or(-1);
                        if seen < zxid {
                            history.lock().violations.push(format!(
                                "member {to} acknowledged {path} at {zxid}, then read it at mzxid {seen}"
                            ));
                        }
                    }
                    Ok(Ok((status, reply))) => {
                        history.lock().violations.push(format!("reading {path} from member {to}: {status} {reply}"))
                    }
                    _ => {
                        world.note(format!("api client {id}: connection to member {to} lost"));
                        break;
                    }
                }
            }
            sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
    }
}

/// Why a member's Raft core has stopped, if it has, as `Node::failed`
/// tells: a fatal error in its metrics, or its metrics channel closed
/// (the core panicked).
fn core_stopped(raft: &Raft) -> Option<Fatal<TypeConfig>> {
    let mut metrics = raft.metrics();
    if let Err(fatal) = &metrics.borrow_watched().running_state {
        return Some(fatal.clone());
    }
    loop {
        match metrics.changed().now_or_never() {
            Some(Ok(())) => continue,
            Some(Err(_)) => return Some(Fatal::Panicked),
            None => return None,
        }
    }
}

/// Restarts each member that stopped on an error (a failed fsync, a power
/// cut) from what it synced and, half the time, some of the writes since,
/// as the server re-executes itself (or the machine comes back). The
/// faults are all storage errors: a core stopped by anything else (a
/// panic) is a violation.
async fn restart_failed(world: &Arc<World>) {
    let failed: Vec<(u64, Fatal<TypeConfig>)> =
        world.live.lock().iter().filter_map(|(id, m)| Some((*id, core_stopped(&m.raft)?))).collect();
    for (id, why) in failed {
        if !matches!(why, Fatal::StorageError(_)) {
            world.violations.lock().push(format!("member {id}'s Raft core stopped: {why}"));
        }
        let mut pages = SmallRng::seed_from_u64(world.rng.lock().random());
        let torn = pages.random_bool(0.5);
        world.note(format!("member {id} stopped on an error: restarting it{}", if torn { TORN } else { "" }));
        if let Some(disks) = crash(world, id, torn.then_some(pages)).await {
            start(world, id, disks).await;
        }
    }
}

/// The leader's view of the membership: its voters, and every member.
fn membership(raft: &Raft) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let m = raft.metrics().borrow_watched().membership_config.clone();
    let members = m.membership();
    (members.voter_ids().collect(), members.nodes().map(|(id, _)| *id).collect())
}

/// One membership change through the leader: with five voters, `pick`
/// stops voting (kept as a learner, or removed from the cluster);
/// otherwise one member on its way back goes one step further (added as
/// a learner, or promoted to voter).
async fn reconfigure(world: Arc<World>, pick: u64, keep_as_learner: bool) {
    let Some((id, raft)) = leader(&world) else { return };
    let (voters, members) = membership(&raft);
    if let Some(why) = step_down_unless_voter(&raft, id).await {
        world.note(format!("membership change refused: {why}"));
        return;
    }
    let change = async {
        if voters.len() as u64 == MEMBERS {
            let what = if keep_as_learner { "demote" } else { "remove" };
            world.note(format!("{what} member {pick}"));
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([pick])), keep_as_learner)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            readmit(&world, &raft, &voters, &members).await
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), change).await {
        Ok(Ok(())) => world.note("membership change applied"),
        Ok(Err(e)) => world.note(format!("membership change failed: {e}")),
        Err(_) => world.note("membership change timed out"),
    }
}

/// Brings the first member that does not vote one step back: a removed
/// one becomes a learner, a learner a voter.
async fn readmit(world: &World, raft: &Raft, voters: &BTreeSet<u64>, members: &BTreeSet<u64>) -> Result<(), String> {
    let Some(id) = (1..=MEMBERS).find(|id| !voters.contains(id)) else { return Ok(()) };
    if members.contains(&id) {
        world.note(format!("promote member {id}"));
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map(|_| ())
    } else {
        world.note(format!("add member {id} as a learner"));
        raft.add_learner(id, NodeInfo { raft_addr: format!("sim-{id}") }, true).await.map(|_| ())
    }
    .map_err(|e| e.to_string())
}

/// Injects faults until `until`: crashes and restarts, fsync failures,
/// partitions and lossy links.
async fn nemesis(world: Arc<World>, seed: u64, until: Duration) -> BTreeMap<u64, Disks> {
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9));
    let mut down: BTreeMap<u64, Disks> = BTreeMap::new();
    while world.started.elapsed() < until {
        sleep(Duration::from_millis(rng.random_range(100..800))).await;
        restart_failed(&world).await;
        let live: Vec<u64> = world.live.lock().keys().copied().collect();
        let pick = |rng: &mut SmallRng, ids: &[u64]| ids[rng.random_range(0..ids.len())];
        match rng.random_range(0..7) {
            0 if live.len() > 2 => {
                let id = pick(&mut rng, &live);
                let torn = rng.random_bool(0.5);
                world.note(format!("crash member {id}{}", if torn { TORN } else { "" }));
                let pages = SmallRng::seed_from_u64(rng.random());
                if let Some(disks) = crash(&world, id, torn.then_some(pages)).await {
                    down.insert(id, disks);
                }
            }
            1 if !down.is_empty() => {
                let ids: Vec<u64> = down.keys().copied().collect();
                let id = pick(&mut rng, &ids);
                world.note(format!("restart member {id}"));
                let disks = down.remove(&id).expect("down");
                start(&world, id, disks).await;
            }
            2 if !live.is_empty() => {
                let id = pick(&mut rng, &live);
                let member = world.member(id).expect("live");
                let (which, disk) =
                    if rng.random_bool(0.5) { ("log", &member.disks.log) } else { ("state", &member.disks.state) };
                if rng.random_bool(0.5) {
                    world.note(format!("fail the next fsync of member {id}'s {which}"));
                    disk.fail_syncs(1);
                } else {
                    // Likely inside a redb commit: between its page writes,
                    // or between its two fsyncs.
                    let after = rng.random_range(0..40);
                    world.note(format!("cut the power of member {id}'s {which} after {after} more writes"));
                    disk.cut_power_after(after);
                }
            }
            3 => {
                let mut cut = world.cut.lock();
                cut.clear();
                let alone = rng.random_range(1..=2);
                let side: BTreeSet<u64> = (0..alone).map(|_| rng.random_range(1..=MEMBERS)).collect();
                for a in &side {
                    for b in 1..=MEMBERS {
                        if !side.contains(&b) {
                            cut.insert((*a, b));
                            cut.insert((b, *a));
                        }
                    }
                }
                drop(cut);
                world.note(format!("partition {side:?} from the rest"));
            }
            5 => {
                let pick = rng.random_range(1..=MEMBERS);
                let keep_as_learner = rng.random_bool(0.5);
                tokio::spawn(reconfigure(world.clone(), pick, keep_as_learner));
            }
            4 => {
                world.cut.lock().clear();
                world.note("heal partitions");
            }
            _ => {
                let loss = rng.random_range(0..100);
                world.loss_per_mille.store(loss, Ordering::Relaxed);
                world.note(format!("links reset at {loss} in 1000 chunks"));
            }
        }
    }
    down
}

/// What a run adds to the base run: TLS on every link ([`SimTls`]), and
/// clients of the admin HTTP API ([`api_client`]). Either changes every
/// seed's course, so the bug seeds ([`bug_seeds_pass`]) run without them.
#[derive(Clone, Copy, Default)]
struct Extras {
    tls: bool,
    api: bool,
}

/// Runs one seed for `secs` of simulated time and checks the outcome.
/// Returns the trace; panics with it on a violation.
fn run(seed: u64, secs: u64, extras: Extras) -> Vec<String> {
    seed_thread_rng(seed);
    if let Ok(path) = std::env::var("SIM_LOG") {
        let file = File::create(&path).unwrap_or_else(|e| panic!("SIM_LOG {path}: {e}"));
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let log = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).without_time();
        // One subscriber per test process: a second seed logs to the first file.
        let _ = log.with_writer(std::sync::Mutex::new(file)).try_init();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    rt.block_on(simulate(seed, secs, extras))
}

async fn simulate(seed: u64, secs: u64, extras: Extras) -> Vec<String> {
    let scratch = tempfile::tempdir().expect("temp dir");
    let tls = extras.tls.then(|| SimTls::new(scratch.path().join("tls")));
    let world = Arc::new(World {
        seed,
        rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        live: Mutex::new(BTreeMap::new()),
        cut: Mutex::new(BTreeSet::new()),
        loss_per_mille: AtomicU64::new(0),
        trace: Mutex::new(Vec::new()),
        replies: Mutex::new(BTreeMap::new()),
        started: Instant::now(),
        scratch,
        quiet: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        server_ended: Mutex::new(BTreeSet::new()),
        boots: AtomicU64::new(0),
        tls,
    });
    if world.tls.is_some() {
        world.note("links use TLS");
    }
    for id in 1..=MEMBERS {
        start(&world, id, Disks { log: CrashDisk::default(), state: CrashDisk::default() }).await;
    }
    let members: BTreeMap<u64, NodeInfo> =
        (1..=MEMBERS).map(|id| (id, NodeInfo { raft_addr: format!("sim-{id}") })).collect();
    world.member(1).expect("member 1").raft.initialize(members).await.expect("cluster initializes");
    // The cluster's first command, as the server proposes it.
    let init = loop {
        if let Some((_, raft)) = leader(&world) {
            let config = ClusterConfig {
                min_session_timeout_ms: 4000,
                max_session_timeout_ms: 40000,
                max_data_bytes: 1 << 20,
                extended_types: false,
                superuser_digest: None,
            };
            let op = Op::Init { config, secret: [7; 32], admin_token: token_hash(ADMIN_TOKEN) };
            if raft.client_write(Command { time_ms: 0, origin: None, op }).await.is_ok() {
                break world.started.elapsed();
            }
        }
        // The members elect a leader within seconds over working links.
        assert!(world.started.elapsed() < Duration::from_secs(60), "the cluster never initialized");
        sleep(Duration::from_millis(50)).await;
    };
    world.note(format!("cluster initialized after {init:?}"));
    for r in 0..REGISTERS {
        let path = format!("/r{r}");
        while !matches!(leader(&world), Some((_, raft)) if raft.client_write(create(&path, b"initial")).await.is_ok()) {
            sleep(Duration::from_millis(50)).await;
        }
    }

    let history = Arc::new(Mutex::new(History::default()));
    let mut clients: Vec<_> =
        (1..=CLIENTS).map(|id| tokio::spawn(client(world.clone(), seed, id, history.clone()))).collect();
    clients.extend((1..=ZK_CLIENTS).map(|id| tokio::spawn(zk_client(world.clone(), seed, id, history.clone()))));
    if extras.api {
        world.note("admin API clients run");
        clients.extend((1..=API_CLIENTS).map(|id| tokio::spawn(api_client(world.clone(), seed, id, history.clone()))));
    }
    let down = nemesis(world.clone(), seed, Duration::from_secs(secs)).await;

    // The faults end: links heal, every member runs again.
    world.quiet.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    world.cut.lock().clear();
    world.loss_per_mille.store(0, Ordering::Relaxed);
    for (id, disks) in down {
        world.note(format!("final restart of member {id}"));
        start(&world, id, disks).await;
    }
    // The clients have ended: the history is complete.
    let history = std::mem::take(&mut *history.lock());
    check(&world, &history).await;
    world.trace.lock().clone()
}

/// Waits for every member to apply the same last entry, then checks the
/// trees against the history.
async fn check(world: &Arc<World>, history: &History) {
    let deadline = world.started.elapsed() + Duration::from_secs(60);
    let fail = |what: String| -> ! {
        let trace = world.trace.lock();
        let file = std::env::temp_dir().join(format!("corral-sim-{}.trace", world.seed));
        let _ = std::fs::write(&file, trace.join("\n"));
        let events: Vec<&String> = trace.iter().filter(|l| !l.contains(" msg ")).collect();
        let tail: Vec<&str> = events[events.len().saturating_sub(40)..].iter().map(|l| l.as_str()).collect();
        panic!("seed {}: {what}\nwhole trace in {}; its last events:\n{}", world.seed, file.display(), tail.join("\n"));
    };
    // All five voting again, then a barrier: a write of the current term
    // commits every entry before it.
    let mut barrier = None;
    let members = loop {
        restart_failed(world).await;
        let members: Vec<(u64, Member)> = world.live.lock().iter().map(|(id, m)| (*id, m.clone())).collect();
        if let Some((leader_id, raft)) = leader(world) {
            let (voters, known) = membership(&raft);
            let all_vote = voters.len() as u64 == MEMBERS;
            if !all_vote {
                if let Some(why) = step_down_unless_voter(&raft, leader_id).await {
                    world.note(format!("membership change refused: {why}"));
                } else {
                    let step = tokio::time::timeout(Duration::from_secs(3), readmit(world, &raft, &voters, &known));
                    if let Ok(Err(e)) = step.await {
                        world.note(format!("membership change failed: {e}"));
                    }
                }
            } else if barrier.is_none()
                && let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(1), raft.client_write(create("/barrier", b""))).await
            {
                barrier = Some(r.log_id);
            }
            let last = raft.metrics().borrow_watched().last_log_index;
            if all_vote && barrier.is_some() && members.iter().all(|(_, m)| Some(m.state.applied_index()) == last) {
                break members;
            }
        }
        if world.started.elapsed() > deadline {
            let states: Vec<String> = members
                .iter()
                .map(|(id, m)| {
                    let r = m.raft.metrics().borrow_watched().clone();
                    format!(
                        "member {id}: applied {} (raft: {:?}, last log {:?}, applied {:?}, {:?})",
                        m.state.applied_index(),
                        r.state,
                        r.last_log_index,
                        r.last_applied,
                        r.running_state
                    )
                })
                .collect();
            fail(format!("members did not converge within 60 s:\n{}", states.join("\n")));
        }
        sleep(Duration::from_millis(100)).await;
    };
    let who = Identity::system();
    let mut digests = BTreeSet::new();
    for (id, m) in &members {
        let meta = m.state.meta();
        let recomputed = m.state.recompute_digest().expect("digest recomputes");
        if recomputed != meta.digest {
            fail(format!("member {id}: digest {:?} does not match its records ({recomputed:?})", meta.digest));
        }
        digests.insert(meta.digest.0);
        world.note(format!("member {id}: applied {}, digest {:?}", meta.applied_index, meta.digest));
        let view = m.state.read_ungated().expect("read view");
        // Each path holds the last write applied to it: one proposed for
        // it, and none older than the newest acknowledged one.
        for (path, acked) in &history.acked {
            let Some(node) = view.node(path).expect("read") else {
                // An ephemeral goes with its session.
                if history.ephemerals.get(path).is_some_and(|s| world.ended(history, *s)) {
                    continue;
                }
                fail(format!("member {id} lost {path}, acknowledged {} times", acked.len()))
            };
            let (newest, data) = acked.iter().max_by_key(|(zxid, _)| *zxid).expect("acknowledged once");
            if node.mzxid < *newest || (node.mzxid == *newest && node.data.as_deref() != Some(data.as_slice())) {
                fail(format!(
                    "member {id} lost an acknowledged write to {path}: it holds {:?} from zxid {}, but {:?} was \
                     acknowledged at zxid {newest}",
                    node.data.as_deref().map(String::from_utf8_lossy),
                    node.mzxid,
                    String::from_utf8_lossy(data)
                ));
            }
        }
        let (children, _) = view.get_children("/", &who).expect("read").expect("root is readable");
        for child in children {
            let path = format!("/{child}");
            if child == "zookeeper" || path == "/barrier" {
                continue;
            }
            if path.starts_with("/z") {
                fail(format!("member {id} holds {path}, written as a session that had ended"));
            }
            let node = view.node(&path).expect("read").expect("a listed child exists");
            if let Some(s) = node.session_owner() {
                if history.ended.contains(&s) || world.server_ended.lock().contains(&s) {
                    fail(format!("member {id} holds {path}, an ephemeral of session {s:x}, which ended"));
                }
                if history.ephemerals.get(&path) != Some(&s) {
                    fail(format!("member {id} holds {path} as an ephemeral of session {s:x}, which did not create it"));
                }
            }
            let data = node.data.unwrap_or_default();
            let written = history.proposed.get(&path).is_some_and(|d| d.contains(&data));
            let initial = path.starts_with("/r") && data == b"initial";
            if !written && !initial {
                fail(format!("member {id} holds {path} = {:?}, which no client wrote", String::from_utf8_lossy(&data)));
            }
        }
    }
    if digests.len() != 1 {
        fail(format!("members diverged: digests {digests:?}"));
    }
    // A watch fires for the first change after the read that set it: its
    // event is past what the read saw, and no later than the first
    // acknowledged change after it. A watch still waiting when a reply
    // came had missed no acknowledged change up to that reply's zxid.
    let first_change = |path: &str, after: i64| {
        history.acked.get(path).into_iter().flatten().map(|(zxid, _)| *zxid).filter(|z| *z > after).min()
    };
    for (path, read, event, replayed) in &history.fired {
        if event <= read {
            fail(format!("a watch on {path} whose read saw zxid {read} fired for zxid {event}"));
        }
        // (A replayed watch that fires at once carries the zxid of the
        // state its replay saw, not of the change.)
        if let Some(first) = first_change(path, *read)
            && *event > first
            && !replayed
        {
            fail(format!("a watch on {path} set at zxid {read} fired at {event}, not for the change at {first}"));
        }
    }
    for (path, read, seen, who) in &history.waiting {
        if let Some(first) = first_change(path, *read)
            && first <= *seen
        {
            fail(format!(
                "{who}: a watch on {path} set at zxid {read} had not fired by a reply at zxid {seen}, after the \
                 change at {first}"
            ));
        }
    }
    let seen: Vec<String> = world.violations.lock().iter().chain(&history.violations).cloned().collect();
    if !seen.is_empty() {
        fail(format!("what must not happen happened:\n{}", seen.join("\n")));
    }
    let acked: usize = history.acked.values().map(Vec::len).sum();
    world.note(format!("{acked} acknowledged writes kept on all {} members", members.len()));
    world.note(format!("{} watch events checked, {} waiting watches", history.fired.len(), history.waiting.len()));

    // Liveness: nobody speaks for any session any more, so the leader
    // expires every one, a timeout after it took over or last heard from
    // it (timeouts here are 4–5 s). One still there after 30 s is a
    // session the leader forgot, as one did when an expiry proposal was
    // lost (docs/reliability.md).
    let until = world.started.elapsed() + Duration::from_secs(30);
    loop {
        // A fault the nemesis armed (a failing fsync, a power cut) may
        // still stop a member: it restarts, as a server does.
        restart_failed(world).await;
        let members: Vec<Member> = world.live.lock().values().cloned().collect();
        let mut left = BTreeSet::new();
        let mut applied = BTreeSet::new();
        for m in &members {
            let view = m.state.read_ungated().expect("read view");
            left.extend(view.all_sessions().expect("sessions").into_iter().map(|(id, _)| id));
            applied.insert(m.state.applied_index());
        }
        if left.is_empty() && applied.len() == 1 && members.len() as u64 == MEMBERS {
            world.note("every session expired once its clients stopped");
            break;
        }
        if world.started.elapsed() > until {
            let left: Vec<String> = left.iter().map(|s| format!("{s:x}")).collect();
            fail(format!("sessions still live 30 s after every client stopped: {}", left.join(", ")));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Seeds from `SIM_SEEDS` (`7`, `1-50` or `3,9,12`), else the CI set
/// (the bugs' seeds run in [`bug_seeds_pass`]).
fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("SIM_SEEDS") else { return vec![1, 2, 3] };
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u64>().expect("seed")..=b.trim().parse().expect("seed")).collect(),
            None => vec![part.trim().parse().expect("seed")],
        })
        .collect()
}

/// TLS on every link with `SIM_TLS=1`, admin API clients with `SIM_API=1`.
fn extras() -> Extras {
    let on = |var| std::env::var(var).is_ok_and(|v| v == "1");
    Extras { tls: on("SIM_TLS"), api: on("SIM_API") }
}

fn secs() -> u64 {
    std::env::var("SIM_SECS").map_or(20, |s| s.parse().expect("SIM_SECS is seconds"))
}

/// One line per seed: what was acknowledged, and which faults ran.
fn summary(seed: u64, trace: &[String]) -> String {
    let count = |what: &[&str]| trace.iter().filter(|l| what.iter().all(|w| l.contains(w))).count();
    let torn = TORN.trim_start_matches(", ");
    format!(
        "seed {seed}: {} writes acknowledged and kept; {} crashes ({} torn), {} fsync failures, {} power cuts \
         mid-write, {} restarts after a storage error ({} torn), {} partitions, {} loss changes, {} connections \
         dialled, {} reset, {} members demoted or removed, {} snapshots installed; sessions: {} opened, {} resumed \
         on another member, {} closed or expired, {} writes as an ended session refused; over ZooKeeper \
         connections: {} writes acknowledged, {} sessions opened, {} resumed, {} refused as gone, {} connections \
         lost, {} watch replays; over the admin API: {} writes acknowledged, {} refused as unavailable, {} \
         connections lost; {}",
        count(&[" acked at "]),
        count(&["crash member"]),
        count(&["crash member", torn]),
        count(&["fail the next fsync"]),
        count(&["cut the power"]),
        count(&["stopped on an error"]),
        count(&["stopped on an error", torn]),
        count(&["partition {"]),
        count(&["links reset at"]),
        count(&["dial "]),
        count(&["reset ", "->"]),
        count(&["demote member"]) + count(&["remove member"]),
        count(&["installed a snapshot"]),
        count(&["open a session", "Connected"]),
        count(&["resume session", "Connected"]),
        count(&["close session", "Closed"]) + count(&["expire session", "Some(None)"]),
        count(&["as ended session", "SessionExpired"]),
        count(&["zk client", " acked at "]),
        count(&["zk client", "opened through"]),
        count(&["zk client", "resumed through"]),
        count(&["zk client", "refused by member"]),
        count(&["zk client", "connection to member", "lost"]),
        count(&["zk client", "watches replayed"]),
        count(&["api client", " acked at "]),
        count(&["api client", "HTTP 503"]),
        count(&["api client", "connection to member", "lost"]),
        trace.iter().rev().find(|l| l.contains("watch events checked")).map_or("", |l| l.trim_start()),
    )
}

#[test]
fn seeds_lose_nothing_and_end_identical() {
    for seed in seeds() {
        let trace = run(seed, secs(), extras());
        if std::env::var("SIM_TRACE").is_ok() {
            let file = std::env::temp_dir().join(format!("corral-sim-{seed}.trace"));
            std::fs::write(&file, trace.join("\n")).expect("trace written");
        }
        eprintln!("{}", summary(seed, &trace));
    }
}

/// The bugs the simulation found (docs/reliability.md), each as a seed
/// that fails within 60 simulated seconds with its fix reverted (found
/// again by a sweep from seed 1 whenever the workload or the links change
/// the seeds' courses: last on 2026-12-07, once ZooKeeper clients joined):
/// - seed 18: a member that had not applied a session's creation yet
///   refused its resume as expired ("session … vanished; nobody ended
///   it"); the resume now goes through the log;
/// - seed 22: a leader that no longer votes took a membership change
///   anyway (no refusal at all, or the check on the union of a joint
///   membership's halves instead of the newest one) and its core panicked
///   on openraft's leader-only assertion;
/// - seed 3: refused but not stepped down, a leader demoted to a learner
///   led on for good and the members never converged;
/// - seed 39: a leader whose expiry proposal was lost never proposed it
///   again ("sessions still live 30 s after every client stopped"); an
///   expiry that has not applied is now proposed again after a timeout
///   (`server::sessions`).
///
/// (The membership fixes are in [`step_down_unless_voter`].)
#[test]
fn bug_seeds_pass() {
    for seed in [3, 18, 22, 39] {
        eprintln!("{}", summary(seed, &run(seed, 60, Extras::default())));
    }
}

#[test]
fn a_seed_replays_event_for_event() {
    let first = run(11, 8, Extras::default());
    let second = run(11, 8, Extras::default());
    assert!(first.iter().any(|l| l.contains(" acked at ")), "the run acknowledged writes");
    assert!(first.iter().any(|l| l.contains("crash member") || l.contains("fail the next fsync")), "faults ran");
    if let Some(i) = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i)) {
        panic!("runs of one seed differ at event {i}: {:?} vs {:?}", first.get(i), second.get(i));
    }
}

/// A run over TLS ([`SimTls`]) and with admin API clients keeps every
/// guarantee, and stays a function of its seed although keys and
/// handshakes are random.
#[test]
fn a_seed_with_tls_and_the_admin_api_loses_nothing_and_replays_event_for_event() {
    let extras = Extras { tls: true, api: true };
    let first = run(4, 12, extras);
    let second = run(4, 12, extras);
    assert!(first.iter().any(|l| l.contains("links use TLS")), "the run used TLS");
    assert!(first.iter().any(|l| l.contains("zk client") && l.contains(" acked at ")), "writes came over TLS");
    assert!(first.iter().any(|l| l.contains("zk client") && l.contains("resumed through")), "sessions resumed");
    assert!(first.iter().any(|l| l.contains("api client") && l.contains(" acked at ")), "the admin API wrote");
    assert!(first.iter().any(|l| l.contains("crash member") || l.contains("partition {")), "faults ran");
    if let Some(i) = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i)) {
        panic!("runs of one seed differ at event {i}: {:?} vs {:?}", first.get(i), second.get(i));
    }
    eprintln!("{}", summary(4, &first));
}
