//! Configuration: one [`Config`], from defaults, a TOML file, `CORRAL_*`
//! environment variables and command-line flags, in rising precedence.
//!
//! Every key is a field below, named with its unit last. Unknown keys, in
//! the file or the environment, are refused: a typo must not silently leave
//! a default in place.
//!
//! Some settings only seed the cluster's *replicated* configuration when a
//! fresh data directory initializes the cluster: the session timeout bounds,
//! the data size limit, extended types and the superuser digest. They decide
//! outcomes, so every member must agree on them; changing them later goes
//! through the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::machine::command::ClusterConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This member's Raft node id, 1..=254.
    pub node_id: u64,
    /// Where the Raft log, the state and the snapshots live.
    pub data_dir: PathBuf,
    /// The ZooKeeper client port.
    pub client_addr: SocketAddr,
    /// A second ZooKeeper port that speaks TLS (ZooKeeper's
    /// `secureClientPort`); off unless set. Needs `tls_cert_file` and
    /// `tls_key_file`.
    pub secure_client_addr: Option<SocketAddr>,
    /// PEM: this server's certificate chain, leaf first.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// PEM: the CAs that sign client certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// `none`, `want` (a certificate is checked when shown) or `need`
    /// (ZooKeeper's `ssl.clientAuth`); `want` and `need` take a CA file.
    pub tls_client_auth: ClientAuth,
    /// How often the certificate, key and CA files are checked for changes;
    /// new connections use the new files, open ones keep theirs.
    pub tls_reload_interval_ms: u64,
    /// A client certificate subject (RFC 2253, `CN=ops,O=Example`) that is
    /// the superuser, as ZooKeeper's `X509AuthenticationProvider.superUser`.
    pub tls_superuser_dn: Option<String>,
    /// PEM: this member's certificate for mutual TLS between members. It
    /// must name the member as a DNS subject alternative name
    /// `member-<node_id>`. Set all three `peer_tls_*` files, or none (then
    /// members talk plain TCP, authenticated by the cluster secret).
    pub peer_tls_cert_file: Option<PathBuf>,
    pub peer_tls_key_file: Option<PathBuf>,
    /// PEM: the CAs that sign members' certificates.
    pub peer_tls_ca_file: Option<PathBuf>,
    /// The admin HTTP API, health and metrics.
    pub http_addr: SocketAddr,
    /// Where other members reach this one (Raft traffic).
    pub raft_addr: SocketAddr,
    /// The members a fresh cluster starts with, as `id=host:port` (their
    /// Raft addresses); empty for a one-member cluster of this node.
    pub initial_cluster: Vec<String>,
    /// Shared by all members: peers that cannot prove they know it are
    /// refused. Required when there is more than one member.
    pub cluster_secret: String,
    /// This node joins a running cluster (it is added with `corral cluster
    /// add-learner`) instead of starting a new one.
    pub join: bool,
    /// The admin token of a new cluster, chosen by the operator (at least
    /// 24 characters); by default one is generated and printed once.
    pub initial_admin_token: Option<String>,
    /// Accept ZooKeeper's `reconfig` opcode (ZooKeeper's
    /// `reconfigEnabled`). It still needs the superuser or WRITE on
    /// `/zookeeper/config`.
    pub reconfig_enabled: bool,

    /// ZooKeeper's tickTime: the unit of the default session timeout bounds.
    pub tick_time_ms: u64,
    /// Seed of the replicated minimum session timeout; default 2 ticks.
    pub min_session_timeout_ms: Option<u32>,
    /// Seed of the replicated maximum session timeout; default 20 ticks.
    pub max_session_timeout_ms: Option<u32>,
    /// How often the leader looks for silent sessions.
    pub session_check_ms: u64,
    /// How long a new connection may take to send its ConnectRequest, and
    /// its session to be committed.
    pub handshake_timeout_ms: u64,
    /// How long start-up may wait for a leader and for recovery.
    pub startup_timeout_ms: u64,
    /// How often the leader looks for empty containers and expired TTL nodes.
    pub container_check_interval_ms: u64,
    /// Most containers and TTL nodes deleted per minute.
    pub container_max_per_minute: u32,
    /// Also delete containers that never had a child once unchanged this
    /// long; 0 keeps them (ZooKeeper's default).
    pub container_max_never_used_ms: u64,

    /// Largest frame a client may send (jute.maxbuffer); larger closes the
    /// connection.
    pub max_frame_bytes: u32,
    /// Seed of the replicated largest znode data.
    pub max_data_bytes: u32,
    /// Connections from one IP address; 0 means no limit.
    pub max_connections_per_ip: u32,
    /// Requests one connection may have in flight before the server stops
    /// reading from it (backpressure).
    pub max_outstanding_requests: u32,
    /// Messages (events, replies) queued for one connection before the
    /// server drops it as too slow.
    pub connection_queue: u32,
    /// Most children one getChildren may return; a node with more answers
    /// BadArguments (page through the admin API instead).
    pub max_children_listed: u32,
    /// Least time between two expensive four-letter words (cons, dump, wchc,
    /// wchp) on this node.
    pub four_letter_dump_interval_ms: u64,
    /// Seed of the replicated `extendedTypesEnabled` (TTL nodes).
    pub extended_types: bool,
    /// Seed of the replicated superuser, as `user:base64(sha1(user:pass))`.
    pub superuser_digest: Option<String>,
    /// Four-letter words that are answered; `*` allows all.
    pub four_letter_words: Vec<String>,

    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// A snapshot is built after this many entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the last snapshot.
    pub snapshot_logs_to_keep: u64,
    /// redb page cache for the state, in bytes. It counts in the resident
    /// set; the OS page cache serves what it misses.
    pub state_cache_bytes: u64,
    /// redb page cache for the Raft log, in bytes.
    pub log_cache_bytes: u64,
    /// The newest flushed Raft log entries kept in memory, in encoded
    /// bytes: the apply and replication read them without going to redb.
    pub log_tail_bytes: u64,
    /// Longest time the Raft log holds a batch back while the apply is
    /// behind, so that one fsync covers more entries; 0 turns it off.
    pub log_pace_max_us: u64,
    /// Freed heap memory goes back to the kernel (`malloc_trim`) after each
    /// interval this long in which nothing was applied; 0 turns it off.
    pub memory_trim_interval_ms: u64,
    /// Longest time between durable commits of the applied state.
    pub state_sync_interval_ms: u64,
    /// Largest AppendEntries message, in bytes (openraft caps entries, not
    /// bytes).
    pub max_append_bytes: u32,
    /// Size of the pieces a snapshot is sent in.
    pub snapshot_chunk_bytes: u32,
    /// How long a Raft message may wait for its answer.
    pub raft_rpc_timeout_ms: u64,
    /// How long a write on a member without a leader (an election is on)
    /// waits for one before its client gets ConnectionLoss.
    pub leader_wait_ms: u64,
    /// How many committed entries a member may have left to apply and still
    /// answer ready on `/health/ready`. Under load the apply always trails
    /// the commit by a few entries: readiness must not flap with it.
    pub ready_max_apply_lag: u64,
    /// The wasm stack a plugin call may use. Where a deep recursion traps
    /// depends on it, so it is part of the engine fingerprint: every member
    /// must use the same value.
    pub plugin_max_wasm_stack_bytes: u64,
    /// A plugin call still running after this long stops this node's apply
    /// (fail-stop). Fuel ends legal calls long before; this catches what
    /// fuel cannot (a host bug, a pathological compile).
    pub plugin_watchdog_ms: u64,
    /// Entries whose watch events are kept, so that the admin API's event
    /// stream can resume from a past zxid.
    pub event_history_entries: u64,
    /// Largest admin API request body.
    pub http_max_body_bytes: u32,
    /// Most nodes one admin API export (`/api/v1/export`) returns; larger
    /// subtrees are refused with a clear error, never cut short.
    pub http_export_max_nodes: u32,
    /// Most data bytes one export returns, likewise.
    pub http_export_max_bytes: u64,
    /// Most nodes one search (`/api/v1/search`) visits before it stops and
    /// says its answer is incomplete.
    pub http_search_max_visited: u32,
    /// Serve `/metrics` without a token (for a Prometheus scraper on a
    /// trusted network). Off by default: every route but health needs one.
    pub http_metrics_public: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./corral-data"),
            client_addr: "127.0.0.1:2181".parse().expect("valid address"),
            secure_client_addr: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_client_auth: ClientAuth::Need,
            tls_reload_interval_ms: 60_000,
            tls_superuser_dn: None,
            peer_tls_cert_file: None,
            peer_tls_key_file: None,
            peer_tls_ca_file: None,
            http_addr: "127.0.0.1:8080".parse().expect("valid address"),
            raft_addr: "127.0.0.1:2888".parse().expect("valid address"),
            initial_cluster: Vec::new(),
            cluster_secret: String::new(),
            join: false,
            initial_admin_token: None,
            reconfig_enabled: false,
            tick_time_ms: 2000,
            min_session_timeout_ms: None,
            max_session_timeout_ms: None,
            session_check_ms: 500,
            handshake_timeout_ms: 10_000,
            startup_timeout_ms: 60_000,
            container_check_interval_ms: 60_000,
            container_max_per_minute: 10_000,
            container_max_never_used_ms: 0,
            max_frame_bytes: 1 << 20,
            max_data_bytes: 1 << 20,
            max_connections_per_ip: 60,
            max_outstanding_requests: 1000,
            connection_queue: 10_000,
            max_children_listed: 100_000,
            four_letter_dump_interval_ms: 1_000,
            extended_types: false,
            superuser_digest: None,
            four_letter_words: ["srvr", "stat", "ruok", "envi", "conf", "isro", "mntr"].map(String::from).to_vec(),
            // The upper bound is also the leader lease: a leader whose
            // quorum has not answered an RPC sent within it refuses
            // writes. 160 ms was exceeded on a loaded 2-core machine (3
            // members and 256 writing sessions), and every write failed.
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 50,
            snapshot_every_entries: 100_000,
            snapshot_logs_to_keep: 10_000,
            state_cache_bytes: 32 << 20,
            log_cache_bytes: 8 << 20,
            log_tail_bytes: 4 << 20,
            log_pace_max_us: 2000,
            memory_trim_interval_ms: 1000,
            state_sync_interval_ms: 1000,
            max_append_bytes: 8 << 20,
            snapshot_chunk_bytes: 1 << 20,
            raft_rpc_timeout_ms: 2000,
            leader_wait_ms: 2000,
            ready_max_apply_lag: 1000,
            plugin_max_wasm_stack_bytes: 512 << 10,
            plugin_watchdog_ms: 30_000,
            event_history_entries: 100_000,
            http_max_body_bytes: 4 << 20,
            http_export_max_nodes: 100_000,
            http_export_max_bytes: 64 << 20,
            http_search_max_visited: 200_000,
            http_metrics_public: false,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Layers defaults, the TOML file (if any), `CORRAL_*` variables and the
    /// flags that were given, then validates the result.
    pub fn load(file: Option<&std::path::Path>, flags: impl Serialize) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", f.display())));
            }
            fig = fig.merge(Toml::file(f));
        }
        // CORRAL_CONFIG names the file; CORRAL_API_* belong to the CLI.
        let env = Env::prefixed("CORRAL_").ignore(&["config", "api_url", "api_token"]);
        let config: Config = fig.merge(env).merge(Serialized::globals(flags)).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let peer_files = [&self.peer_tls_cert_file, &self.peer_tls_key_file, &self.peer_tls_ca_file];
        if peer_files.iter().any(|f| f.is_some()) && !peer_files.iter().all(|f| f.is_some()) {
            return bad("set all of peer_tls_cert_file, peer_tls_key_file and peer_tls_ca_file, or none".into());
        }
        if self.secure_client_addr.is_some() && (self.tls_cert_file.is_none() || self.tls_key_file.is_none()) {
            return bad("secure_client_addr needs tls_cert_file and tls_key_file".into());
        }
        if self.tls_client_auth != ClientAuth::None && self.secure_client_addr.is_some() && self.tls_ca_file.is_none() {
            return bad("tls_client_auth want or need needs tls_ca_file (or set tls_client_auth = \"none\")".into());
        }
        if !(1..=254).contains(&self.node_id) {
            return bad(format!("node_id must be in 1..=254, not {}", self.node_id));
        }
        for m in &self.initial_cluster {
            let ok = m.split_once('=').is_some_and(|(id, addr)| {
                id.trim().parse::<u64>().is_ok_and(|i| (1..=254).contains(&i)) && addr.trim().contains(':')
            });
            if !ok {
                return bad(format!("initial_cluster entry {m:?}: expected id=host:port with id in 1..=254"));
            }
        }
        let members = self.initial_members();
        if !self.join && !members.contains_key(&self.node_id) {
            return bad(format!("initial_cluster does not list this node (node_id {})", self.node_id));
        }
        if (self.join || members.len() > 1) && self.cluster_secret.len() < 16 {
            return bad("a cluster of several members needs cluster_secret, at least 16 characters".into());
        }
        if self.initial_admin_token.as_ref().is_some_and(|t| t.len() < 24) {
            return bad("initial_admin_token must be at least 24 characters".into());
        }
        if !(64 << 10..=64 << 20).contains(&self.plugin_max_wasm_stack_bytes) || self.plugin_watchdog_ms < 100 {
            return bad(
                "plugin_max_wasm_stack_bytes must be 64 KiB to 64 MiB and plugin_watchdog_ms at least 100".into()
            );
        }
        if self.max_append_bytes < 1 << 16 || self.snapshot_chunk_bytes < 1 << 12 {
            return bad("max_append_bytes must be at least 64 KiB and snapshot_chunk_bytes at least 4 KiB".into());
        }
        if self.log_pace_max_us > 100_000 {
            return bad("log_pace_max_us must be at most 100000 (100 ms)".into());
        }
        if self.min_session_timeout() > self.max_session_timeout() {
            return bad("min_session_timeout_ms is above max_session_timeout_ms".into());
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms
            || self.heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            return bad("need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms".into());
        }
        for (name, v) in [
            ("tick_time_ms", self.tick_time_ms),
            ("session_check_ms", self.session_check_ms),
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("max_outstanding_requests", self.max_outstanding_requests as u64),
            ("connection_queue", self.connection_queue as u64),
            ("snapshot_every_entries", self.snapshot_every_entries),
            ("container_check_interval_ms", self.container_check_interval_ms),
            ("container_max_per_minute", self.container_max_per_minute as u64),
            ("max_children_listed", self.max_children_listed as u64),
        ] {
            if v == 0 {
                return bad(format!("{name} must be above 0"));
            }
        }
        Ok(())
    }

    /// The initial members, by id, with their Raft addresses. Without
    /// `initial_cluster`, this node alone.
    pub fn initial_members(&self) -> BTreeMap<u64, String> {
        if self.initial_cluster.is_empty() {
            return BTreeMap::from([(self.node_id, self.raft_addr.to_string())]);
        }
        self.initial_cluster
            .iter()
            .filter_map(|m| m.split_once('='))
            .filter_map(|(id, addr)| Some((id.trim().parse().ok()?, addr.trim().to_owned())))
            .collect()
    }

    pub fn min_session_timeout(&self) -> u32 {
        self.min_session_timeout_ms.unwrap_or((2 * self.tick_time_ms) as u32)
    }

    pub fn max_session_timeout(&self) -> u32 {
        self.max_session_timeout_ms.unwrap_or((20 * self.tick_time_ms) as u32)
    }

    /// The replicated configuration a fresh cluster starts with.
    pub fn cluster_seed(&self) -> ClusterConfig {
        ClusterConfig {
            min_session_timeout_ms: self.min_session_timeout() as i32,
            max_session_timeout_ms: self.max_session_timeout() as i32,
            max_data_bytes: self.max_data_bytes,
            extended_types: self.extended_types,
            superuser_digest: self.superuser_digest.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoFlags {}

    /// docs/configuration.md documents every key.
    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let keys = serde_json::to_value(Config::default()).unwrap();
        let keys = keys.as_object().unwrap();
        assert!(keys.len() > 20);
        for k in keys.keys() {
            assert!(doc.contains(&format!("| `{k}` |")), "docs/configuration.md does not document `{k}`");
        }
    }

    #[test]
    fn layers_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "tick_time_ms = 100\nclient_addr = \"127.0.0.1:3000\"\n").unwrap();
        let c = Config::load(Some(&f), NoFlags {}).unwrap();
        assert_eq!(c.tick_time_ms, 100);
        assert_eq!(c.min_session_timeout(), 200);
        assert_eq!(c.client_addr.port(), 3000);

        #[derive(Serialize)]
        struct Port {
            client_addr: &'static str,
        }
        let c = Config::load(Some(&f), Port { client_addr: "127.0.0.1:4000" }).unwrap();
        assert_eq!(c.client_addr.port(), 4000);

        std::fs::write(&f, "tick_time = 100\n").unwrap();
        let e = Config::load(Some(&f), NoFlags {}).unwrap_err().to_string();
        assert!(e.contains("tick_time"), "{e}");

        std::fs::write(&f, "node_id = 0\n").unwrap();
        assert!(Config::load(Some(&f), NoFlags {}).is_err());
    }
}

/// Whether TLS clients must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    None,
    Want,
    Need,
}
