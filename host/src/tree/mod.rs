//! The znode tree as it is stored: records, redb tables, and the digest.
//!
//! The whole replicated state lives in one redb file (`state.redb`):
//!
//! | table        | key                         | value                               |
//! |--------------|-----------------------------|-------------------------------------|
//! | `nodes`      | [`path::key`] of the path   | [`Node`] (stat, ACL, data)          |
//! | `sessions`   | session id                  | [`Session`] (timeout, owner)        |
//! | `ephemerals` | session id ++ path          | `()`: an index over `nodes`         |
//! | `reapable`   | [`path::key`] of the path   | `()`: the container and TTL nodes   |
//! | `tokens`     | token id                    | the admin API token (hash, scopes)  |
//! | `meta`       | `"meta"`                    | the machine's `Meta` record         |
//!
//! One more table is local history, not replicated state: `events` maps a
//! zxid to the watch events of its entry, so that the admin API's event
//! stream can start from a past zxid. It is pruned to the newest entries,
//! and is neither in snapshots nor in the digest.
//!
//! Nothing of the tree is kept in memory: reads open a redb read transaction
//! (MVCC, never blocked by the writer) and decode the record they need. That
//! keeps the resident set small whatever the data size, and makes a restart
//! instant: there is no tree to load. docs/ARCHITECTURE.md records why.
//!
//! Records are postcard-encoded. The encoding is canonical (one byte string
//! per value), so equal states have equal tables, equal snapshots and an
//! equal [`Digest`].

pub mod path;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::proto::data::{Acl, Stat};

pub const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
pub const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
pub const EPHEMERALS: TableDefinition<&[u8], ()> = TableDefinition::new("ephemerals");
pub const REAPABLE: TableDefinition<&[u8], ()> = TableDefinition::new("reapable");
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Plugin records, by name (`machine::plugins::PluginRecord`).
pub const PLUGINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plugins");
/// Plugin code, by SHA-256.
pub const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plugin_blobs");
/// Chunks of uploads not deployed yet, by upload id ++ 0 ++ offset (BE).
pub const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("plugin_uploads");

/// The plugin tables, with the digest kind of their records: snapshots and
/// the digest cover them alike.
pub const PLUGIN_TABLES: [(RecordKind, TableDefinition<&[u8], &[u8]>); 3] =
    [(RecordKind::Plugin, PLUGINS), (RecordKind::Blob, BLOBS), (RecordKind::Upload, UPLOADS)];

/// `ephemeralOwner` of a container node (ZooKeeper's `EphemeralType`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// Top byte of the `ephemeralOwner` of a TTL node; the low bits hold the TTL.
pub const TTL_OWNER_MASK: i64 = 0xFF00_0000_0000_0000_u64 as i64;

/// One znode as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// Children ever created under this node (wrapping). The sequence suffix
    /// of a sequential child is this counter before the create; the
    /// client-visible `cversion` is derived from it.
    pub child_creations: i32,
    pub aversion: i32,
    /// The raw owner: a session id, [`CONTAINER_OWNER`], a TTL marker, or 0.
    pub owner: i64,
    pub num_children: i32,
    pub pzxid: i64,
    pub acl: Vec<Acl>,
    /// `None` is null data, distinct from empty data.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

impl Node {
    /// The owning session, if this is an ephemeral.
    pub fn session_owner(&self) -> Option<i64> {
        (self.owner != 0 && !self.is_container() && !self.is_ttl()).then_some(self.owner)
    }

    pub fn is_container(&self) -> bool {
        self.owner == CONTAINER_OWNER
    }

    pub fn is_ttl(&self) -> bool {
        self.owner != CONTAINER_OWNER && self.owner & TTL_OWNER_MASK == TTL_OWNER_MASK
    }

    /// Containers and TTL nodes: the server deletes them when they are
    /// empty (and, for TTL nodes, untouched for their TTL).
    pub fn is_reapable(&self) -> bool {
        self.is_container() || self.is_ttl()
    }

    /// The TTL in ms of a TTL node.
    pub fn ttl_ms(&self) -> Option<i64> {
        self.is_ttl().then_some(self.owner & !TTL_OWNER_MASK)
    }

    /// The stat clients see. `cversion` counts child creations plus
    /// deletions, which is `2 * creations - children` (ZooKeeper's
    /// `DataNode.copyStat`), and containers and TTL nodes show owner 0.
    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.child_creations.wrapping_mul(2).wrapping_sub(self.num_children),
            aversion: self.aversion,
            ephemeral_owner: self.session_owner().unwrap_or(0),
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children: self.num_children,
            pzxid: self.pzxid,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a node always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Node, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Where a session's connection lives: a node and a connection id. A
/// reconnect elsewhere replaces it, through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: u64,
    pub conn: u64,
}

/// One live session as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub timeout_ms: i32,
    pub owner: Owner,
    /// An admin API session: used by HTTP requests, not by one connection,
    /// so writes in it are not checked against the owner.
    pub http: bool,
}

impl Session {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a session always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Session, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the tree, sessions, cluster state and metrics.
    Read,
    /// Read, and write the tree and sessions.
    Write,
    /// Read, and deploy plugins.
    Plugin,
    /// Everything: tokens, membership, and every znode whatever its ACL.
    Admin,
}

impl Scope {
    /// Does holding `self` allow what needs `needed`?
    pub fn grants(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin || needed == Scope::Read
    }
}

/// An admin API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The first 12 hex digits of the hash: public, names the token.
    pub id: String,
    pub hash: [u8; 32],
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_ms: i64,
}

impl Token {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(needed))
    }

    /// The id of the token whose hash is `hash`.
    pub fn id_of(hash: &[u8; 32]) -> String {
        hash[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The key of one entry of the `ephemerals` index.
pub fn ephemeral_key(session: i64, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + path.len());
    k.extend_from_slice(&(session as u64).to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    k
}

/// A storage error, with the operation that met it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("corrupt {what} record: {err}")]
    Corrupt { what: &'static str, err: postcard::Error },
    /// Applying cannot go on here without risking an outcome other members
    /// do not share (a plugin host fault, a fingerprint mismatch): the node
    /// stops applying.
    #[error("halted: {0}")]
    Halt(String),
    /// The node is shutting down: [`crate::machine::StateDb::close`] ran.
    #[error("the state is closed: this node is shutting down")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// Reads one node from any readable `nodes` table.
pub fn get_node(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &str,
) -> Result<Option<Node>, StoreError> {
    if path::validate(path).is_err() {
        return Ok(None);
    }
    match table.get(path::key(path).as_slice())? {
        None => Ok(None),
        Some(v) => Node::decode(v.value()).map(Some).map_err(|err| StoreError::Corrupt { what: "node", err }),
    }
}

/// The names of `path`'s children, in byte order.
pub fn child_names(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &str,
) -> Result<Vec<String>, StoreError> {
    let prefix = path::children_prefix(path);
    let mut end = prefix.clone();
    *end.last_mut().expect("prefix ends with NUL") = 1;
    let mut names = Vec::new();
    for item in table.range(prefix.as_slice()..end.as_slice())? {
        let (k, _) = item?;
        let name = &k.value()[prefix.len()..];
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

pub fn get_token(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Token>, StoreError> {
    match table.get(id)? {
        None => Ok(None),
        Some(v) => postcard::from_bytes(v.value()).map(Some).map_err(|err| StoreError::Corrupt { what: "token", err }),
    }
}

pub fn get_session(table: &impl ReadableTable<u64, &'static [u8]>, id: i64) -> Result<Option<Session>, StoreError> {
    match table.get(id as u64)? {
        None => Ok(None),
        Some(v) => Session::decode(v.value()).map(Some).map_err(|err| StoreError::Corrupt { what: "session", err }),
    }
}

/// The paths of a session's ephemerals, in byte order.
pub fn session_ephemerals(
    table: &impl ReadableTable<&'static [u8], ()>,
    session: i64,
) -> Result<Vec<String>, StoreError> {
    let start = (session as u64).to_be_bytes();
    let mut paths = Vec::new();
    for item in table.range(start.as_slice()..)? {
        let (k, _) = item?;
        let k = k.value();
        if k[..8] != start {
            break;
        }
        paths.push(String::from_utf8_lossy(&k[8..]).into_owned());
    }
    Ok(paths)
}

/// A running digest of the replicated state, as ZooKeeper 3.6+ keeps one.
///
/// It is the wrapping sum of a 64-bit hash of every stored record, so one
/// entry updates it in O(records changed): subtract the hash of each old
/// record, add the hash of each new one. Replicas that applied the same log
/// have the same digest; a difference means they diverged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest(pub u64);

/// Which table a hashed record belongs to, so that equal bytes in two
/// tables hash apart.
#[derive(Clone, Copy)]
pub enum RecordKind {
    Node = 1,
    Session = 2,
    Config = 3,
    Token = 4,
    Plugin = 5,
    Blob = 6,
    Upload = 7,
}

impl Digest {
    pub fn hash(kind: RecordKind, key: &[u8], value: &[u8]) -> u64 {
        let mut h = Xxh3::new();
        h.update(&[kind as u8]);
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(value);
        h.digest()
    }

    pub fn add(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) {
        self.0 = self.0.wrapping_add(Self::hash(kind, key, value));
    }

    pub fn remove(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) {
        self.0 = self.0.wrapping_sub(Self::hash(kind, key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owner: i64, creations: i32, children: i32) -> Node {
        Node {
            czxid: 1,
            mzxid: 1,
            ctime: 0,
            mtime: 0,
            version: 0,
            child_creations: creations,
            aversion: 0,
            owner,
            num_children: children,
            pzxid: 1,
            acl: Acl::open(),
            data: None,
        }
    }

    #[test]
    fn cversion_counts_creations_and_deletions() {
        // 5 creates and 2 deletes leave 3 children: cversion 7.
        assert_eq!(node(0, 5, 3).stat().cversion, 7);
    }

    #[test]
    fn owner_encodings() {
        assert_eq!(node(CONTAINER_OWNER, 0, 0).stat().ephemeral_owner, 0);
        assert!(node(CONTAINER_OWNER, 0, 0).is_container());
        let ttl = node(TTL_OWNER_MASK | 1500, 0, 0);
        assert!(ttl.is_ttl());
        assert_eq!(ttl.ttl_ms(), Some(1500));
        assert_eq!(ttl.stat().ephemeral_owner, 0);
        let eph = node(0x0100_0000_0000_0005, 0, 0);
        assert_eq!(eph.session_owner(), Some(0x0100_0000_0000_0005));
    }

    #[test]
    fn digest_is_order_independent_and_reversible() {
        let mut a = Digest::default();
        a.add(RecordKind::Node, b"x", b"1");
        a.add(RecordKind::Node, b"y", b"2");
        let mut b = Digest::default();
        b.add(RecordKind::Node, b"y", b"2");
        b.add(RecordKind::Node, b"x", b"1");
        assert_eq!(a, b);
        b.remove(RecordKind::Node, b"y", b"2");
        assert_ne!(a, b);
        let mut c = Digest::default();
        c.add(RecordKind::Session, b"x", b"1");
        assert_ne!(b, c);
    }
}
