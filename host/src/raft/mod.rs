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

/// Steps member `me` down if it leads but does not vote in the membership
/// the cluster is heading to, and says why it then takes no membership
/// change: a voter is elected, and asking again there succeeds.
///
/// openraft lets a member that stopped voting lead on: for a while after
/// it removed itself, and for good after it demoted itself to a learner.
/// Asked for another change then, openraft 0.10.0-alpha.37 appends it and
/// its core panics on its own leader-only assertion (a release build goes
/// on with a non-voter changing the membership). "Votes" means the newest
/// config of a joint membership: a leader whose own removal stopped
/// halfway (joint `[{1,2,3}, {1,3}]`, the second step never appended)
/// still counts among the joint voters, and a change asked of it then
/// starts from `{1,3}` and leaves it out of both halves. Both were found
/// by the deterministic simulation (`host/tests/sim.rs`, whose
/// `bug_seeds_pass` keeps a seed for each), which asks through this too.
pub async fn step_down_unless_voter(raft: &Raft, me: u64) -> Option<String> {
    use openraft::rt::WatchReceiver;
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let Some(heading_to) = membership.get_joint_config().last() else {
        return Some("this member has no membership yet".into());
    };
    if heading_to.contains(&me) {
        return None;
    }
    // Named as the successor: the voter furthest along. The transport
    // carries no transfer request, so the leader only stops leading and
    // the voters elect one of them after an election timeout.
    let matched = |id: &u64| metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten());
    let Some(&to) = heading_to.iter().max_by_key(|id| (matched(id), std::cmp::Reverse(**id))) else {
        return Some("this member is not a voter, and no member votes".into());
    };
    if let Err(e) = raft.trigger().transfer_leader(to).await {
        tracing::warn!("stepping down for member {to}: {e}");
    }
    Some("this member no longer votes and steps down; ask the next leader".into())
}
