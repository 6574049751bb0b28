//! The data a plugin sees: plain Rust types, the same in a component and in
//! native tests.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Where, when and as whom a call runs. All of it comes from the log entry,
/// never from the call's arguments: every replica sees the same context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The entry's log index: the zxid of every change the call makes.
    pub index: u64,
    /// The entry's replicated time, in ms since the Unix epoch. Use it
    /// instead of a clock (there is none).
    pub time_ms: i64,
    /// The ZooKeeper session the call runs as, if any.
    pub session: Option<i64>,
    /// The caller's authenticated ids, as `scheme:id`.
    pub principal: Vec<String>,
    /// The plugin's own name.
    pub plugin: String,
}

impl Context {
    /// A context for tests: index 1, time 0, no session.
    pub fn test() -> Context {
        Context { index: 1, time_ms: 0, session: None, principal: Vec::new(), plugin: String::from("test") }
    }
}

/// A znode's metadata, as ZooKeeper's Stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
}

/// A ZooKeeper error from a tree operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    NoNode,
    NodeExists,
    BadVersion,
    NotEmpty,
    NoChildrenForEphemerals,
    NoAuth,
    BadArguments(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NoNode => f.write_str("no node"),
            Fault::NodeExists => f.write_str("node exists"),
            Fault::BadVersion => f.write_str("bad version"),
            Fault::NotEmpty => f.write_str("not empty"),
            Fault::NoChildrenForEphemerals => f.write_str("ephemerals cannot have children"),
            Fault::NoAuth => f.write_str("not authorized"),
            Fault::BadArguments(m) => write!(f, "bad arguments: {m}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    DataChanged,
    Deleted,
}

/// One change of the entry, as validators and triggers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    /// The new data; `None` for a deletion.
    pub data: Option<Vec<u8>>,
}

/// The parent of an absolute path (`/` for a top-level node).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}
