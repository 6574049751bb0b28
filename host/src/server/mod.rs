//! The node: storage, Raft, and the client port, wired together.
//!
//! [`Node::start`] opens the data directory, starts openraft on the redb
//! stores, bootstraps a one-member cluster on a fresh directory, waits until
//! the state machine has re-applied everything committed, and only then
//! opens the client port. The pieces:
//! - [`connection`]: one task per client connection;
//! - [`dispatch`]: routes applied outcomes (events, replies) to connections;
//! - [`watches`]: this node's watch registry;
//! - [`sessions`]: session liveness, and expiry through the log;
//! - [`fourlw`]: the four-letter words.

pub mod connection;
pub mod dispatch;
pub mod fourlw;
pub mod peers;
pub mod sessions;
pub mod watches;

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use openraft::ServerState;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::dispatch::Dispatcher;
use self::sessions::Liveness;
use crate::config::Config;
use crate::machine::command::{Command, Op};
use crate::machine::plugins::PluginEnv;
use crate::machine::{StateDb, StateOptions};
use crate::plugin::{Runtime, RuntimeOptions};
use crate::raft::Raft;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, Settings};
use crate::raft::state_machine::StateMachine;
use crate::tree::StoreError;

/// A new admin API token and the SHA-256 that is stored in its place.
pub fn new_token() -> (String, [u8; 32]) {
    use base64::Engine;
    let token =
        format!("corral_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let hash = token_hash(&token);
    (token, hash)
}

/// The SHA-256 of an admin token: what the replicated state keeps.
pub fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Wall-clock milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where a member's entry times come from. The leader stamps each command
/// it proposes, and apply reads time from the entry only.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// `start_ms` plus the time tokio's clock has moved since `at`: the
    /// deterministic simulation's, whose paused clock moves only when
    /// every task waits.
    Simulated { start_ms: i64, at: Instant },
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Simulated { start_ms, at } => start_ms + at.elapsed().as_millis() as i64,
        }
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {err}")]
    DataDir { path: String, err: std::io::Error },
    #[error("state store: {0}")]
    State(#[from] StoreError),
    #[error("raft log store: {0}")]
    Log(std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("listening on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
    #[error("wasm plugin engine: {0}")]
    Plugins(String),
    #[error("secure client port: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Request counts and latencies, for the four-letter words and metrics.
#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    latency: Mutex<Latency>,
}

#[derive(Default)]
struct Latency {
    min_us: u64,
    max_us: u64,
    sum_us: u64,
    count: u64,
}

impl Stats {
    /// Records one answered request.
    pub fn record(&self, opcode: i32, started: Instant) {
        let elapsed = started.elapsed();
        let us = elapsed.as_micros() as u64;
        {
            let mut l = self.latency.lock();
            l.min_us = if l.count == 0 { us } else { l.min_us.min(us) };
            l.max_us = l.max_us.max(us);
            l.sum_us += us;
            l.count += 1;
        }
        let name = crate::proto::op::name(opcode);
        metrics::counter!("corral_requests_total", "op" => name).increment(1);
        metrics::histogram!("corral_request_seconds", "op" => name).record(elapsed.as_secs_f64());
    }

    /// (min, avg, max) latency in ms, as `srvr` prints it.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let l = self.latency.lock();
        let avg = if l.count == 0 { 0.0 } else { l.sum_us as f64 / l.count as f64 / 1000.0 };
        (l.min_us as f64 / 1000.0, avg, l.max_us as f64 / 1000.0)
    }

    /// `srst`: reset the counters.
    pub fn reset(&self) {
        *self.latency.lock() = Latency::default();
        self.received.store(0, Ordering::Relaxed);
        self.sent.store(0, Ordering::Relaxed);
    }
}

/// What every connection and background task of a node shares.
pub struct Shared {
    pub node: u64,
    pub config: Arc<Config>,
    pub raft: Raft,
    pub state: Arc<StateDb>,
    pub dispatch: Arc<Dispatcher>,
    pub stats: Stats,
    pub started: Instant,
    /// Connection ids are `boot << 32 | counter`: unique across restarts,
    /// because replies are routed by (node, connection).
    boot: u64,
    next_conn: AtomicU64,
    ready: std::sync::atomic::AtomicBool,
    /// When the last expensive four-letter word ran.
    pub last_dump: Mutex<Option<Instant>>,
    /// How this node talks to other members.
    pub transport: Settings,
    /// A follower's ordered channel to the leader.
    pub forwarder: peers::Forwarder,
    /// What stamps the commands this member proposes.
    pub clock: Clock,
}

impl Shared {
    /// A member's shared parts around its Raft, state and dispatcher.
    /// `boot` tells this run's connection ids from an earlier run's.
    pub fn new(
        config: Arc<Config>,
        raft: Raft,
        state: Arc<StateDb>,
        dispatch: Arc<Dispatcher>,
        transport: Settings,
        boot: u32,
        clock: Clock,
    ) -> Shared {
        Shared {
            node: config.node_id,
            config,
            raft,
            state,
            dispatch,
            stats: Stats::default(),
            started: Instant::now(),
            boot: boot as u64,
            next_conn: AtomicU64::new(1),
            ready: std::sync::atomic::AtomicBool::new(false),
            last_dump: Mutex::new(None),
            transport,
            forwarder: peers::Forwarder::default(),
            clock,
        }
    }

    /// Gives every live session a full timeout from now: after a start,
    /// nobody knows when each was last heard from.
    pub async fn time_sessions_from_now(&self) -> Result<(), StartError> {
        let state = self.state.clone();
        let sessions = crate::raft::runtime::blocking(move || state.read_ungated()?.all_sessions())
            .await
            .map_err(|e| StartError::Raft(format!("loading sessions: {e}")))??;
        let sessions = sessions.into_iter().map(|(id, s)| (id, s.timeout_ms)).collect();
        self.dispatch.liveness.replace(sessions, Instant::now());
        Ok(())
    }

    /// The time this member stamps on a command it proposes now.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn next_conn_id(&self) -> u64 {
        (self.boot << 32) | (self.next_conn.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF)
    }

    /// Read-only mode arrives with the cluster; a node is read-write today.
    pub fn read_only(&self) -> bool {
        false
    }

    /// Caught up with the log and serving clients.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `standalone` for a one-member cluster, as ZooKeeper says it;
    /// otherwise this member's Raft role.
    pub fn mode(&self) -> &'static str {
        let m = self.raft.metrics().borrow_watched().clone();
        let members = m.membership_config.membership().voter_ids().count();
        match m.state {
            ServerState::Leader if members <= 1 => "standalone",
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Learner => "observer",
            _ => "candidate",
        }
    }
}

/// A running node.
pub struct Node {
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The secure port's TLS settings, read at open (so that bad files stop
    /// the start), used by `serve`.
    tls: Option<crate::tls::Tls>,
    /// The Raft log, closed at shutdown once Raft has stopped.
    log: LogStore,
}

/// openraft's settings for a member with `c`'s timers.
pub fn raft_config(c: &Config) -> Result<openraft::Config, StartError> {
    openraft::Config {
        cluster_name: "corral".into(),
        election_timeout_min: c.election_timeout_min_ms,
        election_timeout_max: c.election_timeout_max_ms,
        heartbeat_interval: c.heartbeat_interval_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_every_entries),
        max_in_snapshot_log_to_keep: c.snapshot_logs_to_keep,
        purge_batch_size: 256,
        // A member that was down or cut off asks whether it could win before
        // it raises its term: rejoining does not depose a healthy leader.
        enable_pre_vote: Some(true),
        // A restarted leader must win a new term before it leads again, as
        // in Raft. Restored in its old term (openraft's default), it would
        // reuse the log ids of entries it had sent to followers but lost in
        // the crash (a leader replicates entries before its own fsync), and
        // members holding equal log ids for different entries diverge.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))
}

/// The wasm runtime, with its compile cache in the data directory.
fn plugin_runtime(config: &Config) -> Result<Arc<Runtime>, StartError> {
    let runtime = Runtime::new(RuntimeOptions {
        max_wasm_stack: config.plugin_max_wasm_stack_bytes as usize,
        cache_dir: config.data_dir.join("plugin-cache"),
        watchdog: Duration::from_millis(config.plugin_watchdog_ms),
    })
    .map_err(|e| StartError::Plugins(e.to_string()))?;
    tracing::info!(fingerprint = runtime.fingerprint(), "wasm plugin engine ready");
    Ok(Arc::new(runtime))
}

impl Node {
    /// Opens storage and starts Raft; a fresh data directory becomes a
    /// one-member cluster. Then [`Node::recover`], then [`Node::serve`].
    pub async fn open(config: Config) -> Result<Node, StartError> {
        let config = Arc::new(config);
        if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
        let tls = crate::tls::Tls::from_config(&config)?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|err| StartError::DataDir { path: dir.display().to_string(), err })?;
        let state = Arc::new(StateDb::open(
            &dir.join("state.redb"),
            StateOptions {
                cache_bytes: config.state_cache_bytes as usize,
                sync_interval: Duration::from_millis(config.state_sync_interval_ms),
                event_history: config.event_history_entries,
                allow_gaps: false,
            },
            Some(PluginEnv { runtime: plugin_runtime(&config)? }),
        )?);
        let log =
            LogStore::open(&dir.join("raft-log.redb"), config.log_cache_bytes as usize, config.log_tail_bytes as usize)
                .map_err(StartError::Log)?;
        log.pace_by_apply(Duration::from_micros(config.log_pace_max_us));
        let liveness = Arc::new(Liveness::default());
        let dispatch = Arc::new(Dispatcher::new(config.node_id, liveness.clone(), state.applied_index()));
        let sm = StateMachine::new(state.clone(), dispatch.clone(), dir.join("snapshots"))
            .map_err(|err| StartError::DataDir { path: dir.display().to_string(), err })?
            .after_log(log.clone());
        let transport = peers::settings(&config)?;
        let network = Network { settings: transport.clone() };
        let raft = Raft::new(config.node_id, Arc::new(raft_config(&config)?), network, log.clone(), sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let fresh = !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if fresh && !config.join {
            // Every initial member initializes with the same list; whichever
            // gets there second finds a vote or log already and is refused,
            // which is expected.
            let members = peers::initial_members(&config);
            let n = members.len();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node = config.node_id, members = n, "initialized a new cluster"),
                Err(e) => tracing::info!(node = config.node_id, "not initializing the cluster: {e}"),
            }
        }
        let shared =
            Arc::new(Shared::new(config.clone(), raft, state, dispatch, transport, rand::random(), Clock::System));
        // Other members must reach this one before it can know a leader.
        let raft_addr = config.raft_addr;
        let listener = TcpListener::bind(raft_addr)
            .await
            .map_err(|err| StartError::Listen { addr: raft_addr.to_string(), err })?;
        let shutdown = CancellationToken::new();
        let tasks = vec![tokio::spawn(peers::listen(shared.clone(), listener, shutdown.clone()))];
        Ok(Node { shared, shutdown, tasks, tls, log })
    }

    /// Waits until the state machine has applied everything this node had
    /// committed before it stopped, and until the cluster is initialized.
    /// When this node initializes the cluster, returns the bootstrap admin
    /// token: it exists nowhere else (only its hash is stored), so the
    /// caller must show it once.
    pub async fn recover(&self) -> Result<Option<String>, StartError> {
        let s = &self.shared;
        let wait = Duration::from_millis(s.config.startup_timeout_ms);
        // A lone member elects itself at once. A member of a larger cluster
        // waits for its peers as long as it takes, and says so.
        let alone = !s.config.join && s.config.initial_members().len() == 1;
        loop {
            let known = s.raft.wait(Some(wait)).metrics(|m| m.current_leader.is_some(), "a leader is known").await;
            match known {
                Ok(_) => break,
                Err(e) if alone => return Err(StartError::Raft(format!("no leader within {wait:?}: {e}"))),
                Err(_) if s.config.join => tracing::info!("waiting to be added to the cluster"),
                Err(_) => tracing::info!("waiting for a quorum of the cluster to elect a leader"),
            }
        }
        // The first leader writes the cluster's `Init`. Leadership may move
        // while it does; then the next leader tries. Apply keeps only the
        // first `Init`, so a node shows its token only if its own won.
        let mut proposed = None;
        s.raft.wait_for_recovery(Some(wait)).await.map_err(|e| StartError::Raft(format!("recovery: {e}")))?;
        while s.state.meta().init.is_none() {
            if s.raft.is_leader() && proposed.is_none() {
                let (token, hash) = match &s.config.initial_admin_token {
                    Some(t) => (t.clone(), token_hash(t)),
                    None => new_token(),
                };
                let secret: [u8; 32] = rand::random();
                let init = Op::Init { config: s.config.cluster_seed(), secret, admin_token: hash };
                match s.raft.client_write(Command { time_ms: s.now_ms(), origin: None, op: init }).await {
                    Ok(_) => proposed = Some((token, secret)),
                    Err(e) => tracing::info!("initializing the cluster: {e}; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let won = s.state.meta().init.map(|i| i.secret);
        let bootstrap_token = proposed.filter(|(_, secret)| Some(*secret) == won).map(|(token, _)| token);
        s.time_sessions_from_now().await?;
        if let Some(init) = s.state.meta().init
            && init.config != s.config.cluster_seed()
        {
            tracing::warn!(
                replicated = ?init.config,
                "this node's settings for replicated config differ from the cluster's; the cluster's apply"
            );
        }
        tracing::info!(applied = s.state.applied_index(), sessions = s.dispatch.liveness.len(), "state recovered");
        // An operator-chosen token is not news.
        Ok(bootstrap_token.filter(|_| s.config.initial_admin_token.is_none()))
    }

    /// Opens the client port and the background tasks; marks the node ready.
    /// `http_addr` is where this node's admin API listens, published for
    /// the other members and the console.
    pub async fn serve(&mut self, http_addr: std::net::SocketAddr) -> Result<std::net::SocketAddr, StartError> {
        let s = self.shared.clone();
        let addr = s.config.client_addr;
        let listener =
            TcpListener::bind(addr).await.map_err(|err| StartError::Listen { addr: addr.to_string(), err })?;
        let local = listener.local_addr().map_err(|err| StartError::Listen { addr: addr.to_string(), err })?;
        self.tasks.push(tokio::spawn(accept_loop(s.clone(), listener, None, self.shutdown.clone())));
        let every = Duration::from_millis(s.config.tls_reload_interval_ms.max(10));
        if let Some(peer_tls) = s.transport.tls.clone() {
            self.tasks.push(tokio::spawn(crate::tls::reload_loop(peer_tls, every, self.shutdown.clone())));
        }
        if let (Some(addr), Some(tls)) = (s.config.secure_client_addr, self.tls.take()) {
            let secure =
                TcpListener::bind(addr).await.map_err(|err| StartError::Listen { addr: addr.to_string(), err })?;
            let local = secure.local_addr().map_err(|err| StartError::Listen { addr: addr.to_string(), err })?;
            let tls = Arc::new(tls);
            self.tasks.push(tokio::spawn(crate::tls::reload_loop(tls.clone(), every, self.shutdown.clone())));
            self.tasks.push(tokio::spawn(accept_loop(s.clone(), secure, Some(tls), self.shutdown.clone())));
            tracing::info!(%local, "serving ZooKeeper clients over TLS");
        }
        self.tasks.extend(spawn_duties(&s, &self.shutdown));
        #[cfg(target_env = "gnu")]
        if s.config.memory_trim_interval_ms > 0 {
            let every = Duration::from_millis(s.config.memory_trim_interval_ms);
            self.tasks.push(tokio::spawn(trim_loop(s.clone(), every, self.shutdown.clone())));
        }
        let published = peers::publish_member_info(s.clone(), local, http_addr, self.shutdown.clone());
        self.tasks.push(tokio::spawn(published));
        s.ready.store(true, Ordering::Release);
        tracing::info!(%local, "serving ZooKeeper clients");
        Ok(local)
    }

    /// Resolves if the Raft core stops on a fatal error (a panic, such as
    /// openraft#2116, or a storage failure). Nothing can be served then;
    /// the caller restarts the node.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_watched().running_state {
                return fatal.to_string();
            }
            if rx.changed().await.is_err() {
                return "the raft core stopped".into();
            }
        }
    }

    /// Why this node stopped applying the log for good (see
    /// [`StateDb::halted`]), if it did.
    pub fn halted(&self) -> Option<String> {
        self.shared.state.halted()
    }

    /// Stops accepting, stops Raft, and makes the applied state durable.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        // Let the log's last commit finish: the process may replace itself
        // next, which would cut it off half-written.
        let log = self.log.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || log.close()).await {
            tracing::warn!("closing the raft log: {e}");
        }
        // It waits for an apply still running (a plugin call, perhaps) and
        // fsyncs: off the async workers.
        let state = self.shared.state.clone();
        match tokio::task::spawn_blocking(move || state.close()).await {
            Ok(Err(e)) => tracing::error!("closing the state: {e}"),
            Err(e) => tracing::error!("closing the state: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Starts what a serving member does on its own, until `stop`: the
/// leader's session expiry and reaping of containers and TTL nodes, a
/// follower's session reports, and the watch on leadership that retires
/// the link to an old leader.
pub fn spawn_duties(s: &Arc<Shared>, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(expiry_loop(s.clone(), stop.clone())),
        tokio::spawn(reap_loop(s.clone(), stop.clone())),
        tokio::spawn(peers::report_loop(s.clone(), stop.clone())),
        tokio::spawn(peers::leader_watch(s.clone(), stop.clone())),
    ]
}

/// Accepts client connections, over TLS when `tls` is given.
async fn accept_loop(
    s: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let limit = s.config.max_connections_per_ip as usize;
        if limit > 0 && s.dispatch.connections_from(peer.ip()) >= limit {
            tracing::warn!(%peer, limit, "too many connections from this address; refusing");
            metrics::counter!("corral_connections_refused_total").increment(1);
            drop(stream);
            continue;
        }
        let Some(tls) = &tls else {
            tokio::spawn(connection::serve(s.clone(), connection::plain(stream), peer, Vec::new()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_secure(s.clone(), stream, peer, tls.acceptor()));
    }
}

/// Serves a client's connection to the secure port: the TLS handshake
/// (within `handshake_timeout_ms`), then the connection, with the `x509`
/// identity of the certificate the client showed, if any (and `super` when
/// that is `tls_superuser_dn`).
pub async fn serve_secure<S>(s: Arc<Shared>, stream: S, peer: std::net::SocketAddr, acceptor: tokio_rustls::TlsAcceptor)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limit = Duration::from_millis(s.config.handshake_timeout_ms);
    let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::info!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return tracing::info!(%peer, "TLS handshake timed out"),
    };
    let mut ids = Vec::new();
    if let Some(subject) = crate::tls::client_subject(stream.get_ref().1) {
        if s.config.tls_superuser_dn.as_deref() == Some(subject.as_str()) {
            ids.push(crate::proto::data::Id::new("super", ""));
        }
        ids.push(crate::proto::data::Id::new("x509", &subject));
    }
    let (rd, wr) = tokio::io::split(stream);
    connection::serve(s, (Box::new(rd), Box::new(wr)), peer, ids).await;
}

/// On the leader, proposes the expiry of sessions that went silent. After
/// this node becomes leader, every session first gets a full timeout.
async fn expiry_loop(s: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(s.config.session_check_ms));
    let mut was_leader = s.raft.is_leader();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leader = s.raft.is_leader();
        if leader && !was_leader {
            s.dispatch.liveness.restart_all(Instant::now());
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        for session in s.dispatch.liveness.take_expired(Instant::now()) {
            tracing::info!(session = format!("0x{session:x}"), "session expired");
            let cmd = Command { time_ms: s.now_ms(), origin: None, op: Op::ExpireSession { session } };
            if s.raft.client_write_ff(cmd, None).await.is_err() {
                s.dispatch.liveness.unmark(session);
            }
        }
    }
}

/// Hands the memory that the C allocator holds free back to the kernel
/// once writes pause: after each `memory_trim_interval_ms` in which nothing
/// was applied. glibc gives each thread that allocates under contention an
/// arena of its own and returns little of what is freed there, so after a
/// burst of writes tens of MB stay resident doing nothing
/// (docs/perf/changes.md). `malloc_trim` walks every arena and releases the
/// whole pages of free chunks. Under load it would cost throughput: the
/// next allocations fault the same pages back in.
#[cfg(target_env = "gnu")]
async fn trim_loop(s: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = s.dispatch.applied();
    let mut trimmed_at = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let applied = s.dispatch.applied();
        let quiet = applied == seen;
        seen = applied;
        if !quiet || trimmed_at == Some(applied) {
            continue;
        }
        trimmed_at = Some(applied);
        let started = Instant::now();
        // SAFETY: malloc_trim takes each arena's own lock; any thread may
        // call it at any time.
        let released = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        tracing::debug!(released = ?released.map(|r| r == 1), took = ?started.elapsed(), "memory trimmed");
    }
}

/// On the leader, proposes the deletion of containers that became empty and
/// of expired TTL nodes, at most `container_max_per_minute` a minute. Apply
/// re-checks each with the entry's time, so a node touched meanwhile stays.
async fn reap_loop(s: Arc<Shared>, stop: CancellationToken) {
    let c = &s.config;
    let mut tick = tokio::time::interval(Duration::from_millis(c.container_check_interval_ms));
    let never_used = (c.container_max_never_used_ms > 0).then_some(c.container_max_never_used_ms as i64);
    let per_check = (c.container_max_per_minute as u64 * c.container_check_interval_ms / 60_000).max(1) as usize;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !s.raft.is_leader() {
            continue;
        }
        let state = s.state.clone();
        let now = s.now_ms();
        let found =
            crate::raft::runtime::blocking(move || state.read_ungated()?.reap_candidates(now, never_used, per_check))
                .await;
        let paths = match found {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!("looking for containers and TTL nodes to delete: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!("reaper task: {e}");
                continue;
            }
        };
        for path in paths {
            let cmd = Command { time_ms: s.now_ms(), origin: None, op: Op::Reap { path, never_used_ms: never_used } };
            if s.raft.client_write_ff(cmd, None).await.is_err() {
                break;
            }
        }
    }
}
