//! Corral: a coordination server that speaks ZooKeeper's protocol, keeps its
//! state in one Raft log (openraft) applied to redb, and will run
//! deterministic Wasm plugins inside that state machine.
//!
//! # Layout
//!
//! The path of a write, top to bottom:
//!
//! - [`server`]: client connections, the request pipeline, sessions,
//!   watches, and the dispatcher that routes applied outcomes back;
//! - [`raft`]: openraft, its redb log store, and the state machine adapter;
//! - [`machine`]: the deterministic state machine: commands, apply, reads,
//!   snapshots;
//! - [`tree`]: the stored form of the znode tree: records, tables, digest;
//! - [`proto`]: the ZooKeeper wire format, pure bytes-to-types code.
//!
//! Beside them: [`config`] (one `Config`, validated once), [`http`]
//! (the admin API, the console, health and metrics), [`audit`] (the audit
//! log), and [`client`], the ZooKeeper client that `corral
//! bench` and the CLI use. `docs/ARCHITECTURE.md` follows one request through
//! all of them.
//!
//! Dependencies point down only: `machine`, `tree` and `proto` know nothing
//! of tokio, sockets, clocks or Raft.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod devcluster;
pub mod http;
pub mod machine;
pub mod plugin;
pub mod proto;
pub mod raft;
pub mod server;
pub mod tls;
pub mod tree;
