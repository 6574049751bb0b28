//! ZooKeeper's error codes (`KeeperException.Code`), as sent in
//! `ReplyHeader.err` and in multi results.
//!
//! The state machine returns these codes as its domain errors: they are part
//! of the replicated outcome of an entry, so every replica computes the same
//! one. An error reply is the 16-byte reply header alone, with no body.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[repr(i32)]
pub enum ErrorCode {
    #[error("system error")]
    SystemError = -1,
    #[error("runtime inconsistency (an earlier op of the multi failed)")]
    RuntimeInconsistency = -2,
    #[error("data inconsistency")]
    DataInconsistency = -3,
    #[error("connection loss")]
    ConnectionLoss = -4,
    #[error("marshalling error: the request body could not be decoded")]
    MarshallingError = -5,
    #[error("unimplemented")]
    Unimplemented = -6,
    #[error("operation timeout")]
    OperationTimeout = -7,
    #[error("bad arguments")]
    BadArguments = -8,
    #[error("unknown session")]
    UnknownSession = -12,
    #[error("new config has no quorum")]
    NewConfigNoQuorum = -13,
    #[error("reconfig in progress")]
    ReconfigInProgress = -14,
    #[error("no node")]
    NoNode = -101,
    #[error("not authorized")]
    NoAuth = -102,
    #[error("bad version")]
    BadVersion = -103,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals = -108,
    #[error("node exists")]
    NodeExists = -110,
    #[error("node has children")]
    NotEmpty = -111,
    #[error("session expired")]
    SessionExpired = -112,
    #[error("invalid ACL")]
    InvalidAcl = -114,
    #[error("authentication failed")]
    AuthFailed = -115,
    #[error("session moved to another connection")]
    SessionMoved = -118,
    #[error("not a read-only operation")]
    NotReadOnly = -119,
    #[error("ephemeral on a local session")]
    EphemeralOnLocalSession = -120,
    #[error("no such watcher")]
    NoWatcher = -121,
    #[error("reconfig disabled")]
    ReconfigDisabled = -123,
    #[error("quota exceeded")]
    QuotaExceeded = -125,
    #[error("throttled")]
    Throttled = -127,
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}
