//! What a log entry carries: a [`Command`].
//!
//! A command holds everything its apply may read besides the replicated
//! state: the leader's time stamp, the caller's identity, and the request.
//! Apply reads nothing else, not even this node's configuration, so every
//! replica computes the same outcome from the same log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::proto::data::Id;
use crate::proto::request::{CreateRequest, MultiOp};
pub use crate::tree::Scope;

/// The application payload of one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Wall-clock ms on the proposing node. Apply uses
    /// `max(previous entry time, time_ms)`, so replicated time never goes back.
    pub time_ms: i64,
    /// Who waits for the reply, if anyone.
    pub origin: Option<Origin>,
    pub op: Op,
}

/// The connection a reply goes to: the node it is on, its connection id
/// there, and the request's xid. Only the node named here sends the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: u64,
    pub conn: u64,
    pub xid: i32,
}

/// The caller's identity, carried in the entry so that ACL checks at apply
/// see exactly what the serving node saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Authenticated ids: `ip:<addr>` first, then one per successful
    /// `addauth`, and `super:` for the superuser. An admin API token adds
    /// `token:<id>`.
    pub ids: Vec<Id>,
    /// The admin API token the request came with. Apply checks that it still
    /// exists and grants the operation, so a revocation is ordered with the
    /// writes in the log.
    pub token: Option<String>,
}

impl Identity {
    pub fn is_super(&self) -> bool {
        self.ids.iter().any(|id| id.scheme == "super")
    }

    /// The server itself: what triggers run as when no client changed the
    /// tree (a session's end, a reaped node).
    pub fn system() -> Identity {
        Identity { ids: vec![Id { scheme: "super".into(), id: "corral".into() }], token: None }
    }
}

/// Settings that change outcomes. They are replicated state, seeded from the
/// bootstrap node's configuration and changed only through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Largest znode data, in bytes.
    pub max_data_bytes: u32,
    /// `zookeeper.extendedTypesEnabled`: allow TTL nodes.
    pub extended_types: bool,
    /// `user:base64(sha1(user:password))` of the superuser, if any.
    pub superuser_digest: Option<String>,
}

impl ClusterConfig {
    /// A session timeout negotiated into the cluster's bounds. Config
    /// validation keeps min ≤ max; an entry that says otherwise (a corrupt
    /// or hostile log, which the fuzzer produced) still gets an answer, not
    /// a panic.
    pub fn negotiate(&self, timeout_ms: i32) -> i32 {
        let (lo, hi) = (self.min_session_timeout_ms, self.max_session_timeout_ms);
        timeout_ms.clamp(lo.min(hi), lo.max(hi))
    }
}

/// Every kind of change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The first command of a cluster: its config, the secret that session
    /// passwords derive from, and the hash of the bootstrap admin token.
    /// Later `Init`s are ignored.
    Init {
        config: ClusterConfig,
        secret: [u8; 32],
        admin_token: [u8; 32],
    },
    /// A new session, owned by the origin's connection; `http` sessions
    /// belong to the admin API and are renewed by keep-alive requests.
    CreateSession {
        timeout_ms: i32,
        http: bool,
    },
    /// A reconnect: the origin's connection becomes the session's owner.
    ResumeSession {
        session: i64,
    },
    /// The client's `closeSession`.
    CloseSession {
        session: i64,
    },
    /// The leader saw no sign of life for a whole timeout.
    ExpireSession {
        session: i64,
    },
    /// A client write, run as `session`. Admin API writes may have none;
    /// they cannot create ephemerals then.
    Write {
        session: Option<i64>,
        identity: Identity,
        write: Write,
    },
    /// The leader found a container or TTL node that may be due for
    /// deletion; apply re-checks with the entry's time and deletes it if so.
    /// `never_used_ms`, if set, also reaps containers that never had a
    /// child and were not changed for that long.
    Reap {
        path: String,
        never_used_ms: Option<i64>,
    },
    /// A new admin API token.
    CreateToken {
        hash: [u8; 32],
        name: String,
        scopes: Vec<Scope>,
        identity: Identity,
    },
    /// Revokes the token with this id.
    RevokeToken {
        id: String,
        identity: Identity,
    },
    /// A member publishes where clients reach it, for `/zookeeper/config`
    /// and the admin API's member list.
    MemberInfo {
        node: u64,
        client_addr: String,
        http_addr: String,
    },
    /// One piece of a plugin's code, for the deploy that names `upload`.
    PluginChunk {
        upload: String,
        offset: u64,
        /// The size of the whole upload: the last chunk completes it.
        total: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        identity: Identity,
    },
    /// Activates an uploaded plugin under `name` (a new plugin, or a new
    /// version of one).
    PluginDeploy(Box<Deploy>),
    /// Makes the previous version of a plugin active again.
    PluginRollback {
        name: String,
        identity: Identity,
    },
    PluginRemove {
        name: String,
        identity: Identity,
    },
    /// Calls a recipe, as `session` if any.
    Call {
        session: Option<i64>,
        identity: Identity,
        plugin: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// Disables a plugin by hand (as its breaker would), or enables it
    /// again and clears its trap count. Variants are encoded by position:
    /// new ones go at the end.
    PluginEnable {
        name: String,
        enabled: bool,
        identity: Identity,
    },
    /// A member publishes the build it runs: Corral's version and its wasm
    /// engine fingerprint. `PluginEngine::Adopt` needs every member's.
    MemberBuild {
        node: u64,
        version: String,
        engine: String,
    },
    /// Pauses plugin work for an engine upgrade, or adopts the engine every
    /// member now runs and resumes it.
    PluginEngine {
        action: EngineAction,
        identity: Identity,
    },
}

/// The two steps of changing the cluster's wasm engine (a Corral upgrade).
/// A member whose engine differs from the cluster's must not run plugins;
/// while plugins are paused, none runs anywhere, so members can be
/// upgraded one by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineAction {
    /// From this entry on, every plugin call fails with "paused" and no
    /// deploy or rollback is taken.
    Pause,
    /// Makes `fingerprint` the cluster's and resumes plugins: refused
    /// unless every member published it (`Op::MemberBuild`).
    Adopt { fingerprint: String },
}

/// A plugin deploy: what was uploaded, what it is, where it binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub name: String,
    pub kind: crate::plugin::Kind,
    pub upload: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Path prefixes a validator or trigger watches.
    pub bindings: Vec<String>,
    pub limits: crate::plugin::Limits,
    /// Consecutive traps after which the plugin is disabled.
    pub breaker: u32,
    /// The engine fingerprint of the node that checked the code.
    pub fingerprint: String,
    /// What the deploying node's check of the code against the kind's
    /// world found it imports: checked once, recorded here, trusted by
    /// every member (code that fails the check is never proposed).
    pub imports: Vec<String>,
    pub identity: Identity,
}

/// A client write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// `opcode` is the one the client used: it decides which modes are legal.
    Create {
        opcode: i32,
        req: CreateRequest,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<crate::proto::data::Acl>,
        version: i32,
    },
    Multi(Vec<MultiOp>),
    /// `sync`: ordered with the writes, it changes nothing.
    Sync {
        path: String,
    },
    /// `deleteContainer`: deletes an empty container.
    DeleteContainer {
        path: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Init { .. } => write!(f, "init"),
            Op::CreateSession { timeout_ms, http } => {
                write!(f, "createSession({timeout_ms}ms{})", if *http { ", http" } else { "" })
            }
            Op::ResumeSession { session } => write!(f, "resumeSession(0x{session:x})"),
            Op::CloseSession { session } => write!(f, "closeSession(0x{session:x})"),
            Op::ExpireSession { session } => write!(f, "expireSession(0x{session:x})"),
            Op::Reap { path, .. } => write!(f, "reap {path:?}"),
            Op::CreateToken { name, .. } => write!(f, "createToken({name:?})"),
            Op::RevokeToken { id, .. } => write!(f, "revokeToken({id})"),
            Op::MemberInfo { node, client_addr, .. } => write!(f, "memberInfo({node}: {client_addr})"),
            Op::PluginChunk { upload, offset, data, .. } => {
                write!(f, "pluginChunk({upload} @{offset} +{})", data.len())
            }
            Op::PluginDeploy(d) => write!(f, "pluginDeploy({} {:?})", d.name, d.kind),
            Op::PluginRollback { name, .. } => write!(f, "pluginRollback({name})"),
            Op::PluginRemove { name, .. } => write!(f, "pluginRemove({name})"),
            Op::PluginEnable { name, enabled, .. } => write!(f, "pluginEnable({name}: {enabled})"),
            Op::MemberBuild { node, version, engine } => write!(f, "memberBuild({node}: {version}, engine {engine})"),
            Op::PluginEngine { action: EngineAction::Pause, .. } => write!(f, "pluginEngine(pause)"),
            Op::PluginEngine { action: EngineAction::Adopt { fingerprint }, .. } => {
                write!(f, "pluginEngine(adopt {fingerprint})")
            }
            Op::Call { session, plugin, args, .. } => {
                write!(f, "0x{:x}: call {plugin} ({} bytes)", session.unwrap_or(0), args.len())
            }
            Op::Write { session, write, .. } => {
                let session = session.unwrap_or(0);
                let what = match write {
                    Write::Create { req, .. } => format!("create {:?}", req.path),
                    Write::Delete { path, .. } => format!("delete {path:?}"),
                    Write::SetData { path, .. } => format!("setData {path:?}"),
                    Write::SetAcl { path, .. } => format!("setACL {path:?}"),
                    Write::Multi(ops) => format!("multi of {}", ops.len()),
                    Write::Sync { path } => format!("sync {path:?}"),
                    Write::DeleteContainer { path } => format!("deleteContainer {path:?}"),
                };
                write!(f, "0x{session:x}: {what}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterConfig;

    #[test]
    fn session_timeouts_are_negotiated_even_between_crossed_bounds() {
        let config = |min, max| ClusterConfig {
            min_session_timeout_ms: min,
            max_session_timeout_ms: max,
            max_data_bytes: 1,
            extended_types: false,
            superuser_digest: None,
        };
        assert_eq!(config(4000, 40000).negotiate(100), 4000);
        assert_eq!(config(4000, 40000).negotiate(1 << 30), 40000);
        assert_eq!(config(4000, 40000).negotiate(10000), 10000);
        // The fuzzer's entry: min -1, max -7747.
        assert_eq!(config(-1, -7747).negotiate(30000), -1);
        assert_eq!(config(-1, -7747).negotiate(-9000), -7747);
    }
}
