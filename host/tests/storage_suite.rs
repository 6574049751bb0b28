//! openraft's storage conformance Suite (45 checks) against Corral's redb
//! log store and state machine: no holes, ordered writes, the purge pointer
//! surviving, membership recovery, snapshot build and install.

use std::sync::Arc;
use std::time::Duration;

use corral::machine::{Applied, ApplySink, StateDb, StateOptions};
use corral::raft::TypeConfig;
use corral::raft::log_store::LogStore;
use corral::raft::state_machine::StateMachine;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

/// The Suite applies only blank and membership entries: nothing to route
/// but the `/zookeeper/config` change of a membership, which has no origin.
struct Discard;

impl ApplySink for Discard {
    fn publish(&self, _applied_index: u64, outcomes: Vec<Applied>) {
        assert!(outcomes.iter().all(|a| a.origin.is_none()), "the Suite applies no client commands");
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20).expect("log store opens");
        let state = StateDb::open(
            &dir.path().join("state.redb"),
            StateOptions { cache_bytes: 1 << 20, sync_interval: Duration::from_millis(100), event_history: 1000 },
            None,
        )
        .expect("state opens");
        let sm = StateMachine::new(Arc::new(state), Arc::new(Discard), dir.path().join("snapshots")).expect("sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    TypeConfig::run(async {
        Suite::test_all(Builder).await.expect("openraft storage suite");
    });
}
