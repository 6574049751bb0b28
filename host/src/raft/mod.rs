//! Consensus: openraft wired to redb storage.
//!
//! - [`log_store`]: the Raft log in `raft-log.redb`, with group commit.
//! - [`state_machine`]: openraft's adapter over the machine's `StateDb`,
//!   and snapshot files.
//! - [`network`]: the transport between members.
//! - [`runtime`]: the async runtime openraft runs on: tokio, made
//!   deterministic on one thread for the simulation.
//!
//! A single node is a one-member cluster and runs exactly this code.

pub mod log_store;
pub mod network;
pub mod runtime;
pub mod state_machine;

pub use runtime::{Runtime, seed_thread_rng};

use serde::{Deserialize, Serialize};

use crate::machine::command::Command;

/// What the membership records about a member: where its Raft traffic
/// goes. (Its client and HTTP addresses are replicated state the member
/// publishes itself: see `Op::MemberInfo`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
}

openraft::declare_raft_types!(
    /// Corral's Raft types: log entries carry a [`Command`]; node ids are
    /// `u64`; a member is described by [`NodeInfo`].
    pub TypeConfig:
        D = Command,
        R = (),
        Node = NodeInfo,
        AsyncRuntime = Runtime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
