//! The dispatcher: from applied entries to connections.
//!
//! The state machine hands it each batch's outcomes in log order
//! ([`ApplySink::publish`]), while the visibility gate is held. For each
//! entry it queues, in this order:
//! 1. the entry's watch events, on every watching connection of this node;
//! 2. the reply, on the origin connection, if that connection is here;
//! 3. a close, when the entry ended the session of a connection here.
//!
//! Queuing never blocks: each connection has a bounded inbox, and a
//! connection too slow to drain it is dropped rather than allowed to stall
//! the apply path for everyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::sessions::Liveness;
use super::watches::{ConnId, Watches};
use crate::machine::acl;
use crate::machine::command::Identity;
use crate::machine::{Applied, ApplySink, Reply, SessionChange};
use crate::proto::data::{Acl, perms};
use crate::proto::response::{EventType, put_notification};

/// What the dispatcher sends a connection.
#[derive(Debug)]
pub enum ConnMsg {
    /// An encoded watch notification, and the zxid of its change.
    Event(i64, Bytes),
    /// The outcome of an entry this connection proposed.
    Reply { xid: i32, zxid: i64, reply: Reply },
    /// Close once what is queued before it is sent.
    Close(&'static str),
}

/// What the dispatcher and the four-letter words know of one connection.
#[derive(Default)]
pub struct ConnStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub session: AtomicI64,
    /// Its identity: events go only to watchers allowed to READ the node.
    pub identity: Mutex<Identity>,
}

/// The dispatcher's handle on one connection.
pub struct ConnHandle {
    tx: mpsc::Sender<ConnMsg>,
    kill: CancellationToken,
    pub peer: SocketAddr,
    pub stats: Arc<ConnStats>,
}

/// One watch event as the admin API's stream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub zxid: u64,
    pub kind: EventType,
    pub path: String,
    /// The node's ACL when the change applied: who may hear of it.
    pub acl: Vec<Acl>,
}

/// Lock order, where more than one is held: `conns`, then `watches`, then
/// `waiters` (as [`ApplySink::publish`] takes them). Anything else takes
/// one at a time.
pub struct Dispatcher {
    node: u64,
    conns: Mutex<HashMap<ConnId, ConnHandle>>,
    /// Admin API requests waiting for the outcome of their entry.
    waiters: Mutex<HashMap<ConnId, oneshot::Sender<(i64, Reply)>>>,
    pub watches: Mutex<Watches>,
    pub liveness: Arc<Liveness>,
    /// Every batch's watch events, for the admin API's event streams.
    changes: broadcast::Sender<Arc<[Change]>>,
    /// The applied index as of the last published batch.
    applied: AtomicU64,
}

impl Dispatcher {
    pub fn new(node: u64, liveness: Arc<Liveness>, applied: u64) -> Dispatcher {
        Dispatcher {
            node,
            conns: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            watches: Mutex::new(Watches::default()),
            liveness,
            changes: broadcast::channel(4096).0,
            applied: AtomicU64::new(applied),
        }
    }

    /// Registers an admin API request: the receiver gets its entry's zxid
    /// and reply when the entry is applied on this node.
    pub fn wait_for(&self, id: ConnId) -> oneshot::Receiver<(i64, Reply)> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(id, tx);
        rx
    }

    /// Forgets a waiter whose request gave up.
    pub fn forget(&self, id: ConnId) {
        self.waiters.lock().remove(&id);
    }

    /// Live watch events, batch by batch, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Change]>> {
        self.changes.subscribe()
    }

    /// Watches held on this node, by session.
    pub fn watches_by_session(&self) -> HashMap<i64, usize> {
        let conns = self.conns.lock();
        let watches = self.watches.lock();
        let mut out = HashMap::new();
        for (id, c) in conns.iter() {
            let n = watches.count_for(*id);
            if n > 0 {
                *out.entry(c.stats.session.load(Ordering::Relaxed)).or_default() += n;
            }
        }
        out
    }

    /// Registers a connection; the returned receiver is its inbox.
    pub fn register(
        &self,
        id: ConnId,
        peer: SocketAddr,
        inbox_capacity: usize,
        kill: CancellationToken,
    ) -> (mpsc::Receiver<ConnMsg>, Arc<ConnStats>) {
        let (tx, rx) = mpsc::channel(inbox_capacity.max(1));
        let stats = Arc::new(ConnStats::default());
        self.conns.lock().insert(id, ConnHandle { tx, kill, peer, stats: stats.clone() });
        (rx, stats)
    }

    /// Forgets a closed connection and its watches.
    pub fn unregister(&self, id: ConnId) {
        self.conns.lock().remove(&id);
        self.watches.lock().remove_conn(id);
    }

    /// The zxid of the last batch made visible.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Connections by peer address: the per-IP limit counts these.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.conns.lock().values().filter(|c| c.peer.ip() == ip).count()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().len()
    }

    /// Runs `f` over every connection.
    pub fn for_each_conn(&self, mut f: impl FnMut(ConnId, &ConnHandle)) {
        for (id, c) in self.conns.lock().iter() {
            f(*id, c);
        }
    }

    fn send(conns: &HashMap<ConnId, ConnHandle>, id: ConnId, msg: ConnMsg) {
        let Some(c) = conns.get(&id) else { return };
        if c.kill.is_cancelled() {
            return;
        }
        if let Err(e) = c.tx.try_send(msg) {
            if let mpsc::error::TrySendError::Full(_) = e {
                tracing::warn!(conn = id, peer = %c.peer, "connection is not reading its replies; dropping it");
                metrics::counter!("corral_connections_dropped_slow_total").increment(1);
            }
            c.kill.cancel();
        }
    }
}

impl ApplySink for Dispatcher {
    fn publish(&self, applied_index: u64, outcomes: Vec<Applied>) {
        let now = Instant::now();
        let conns = self.conns.lock();
        let mut watches = self.watches.lock();
        let mut waiters = self.waiters.lock();
        let mut changes = Vec::new();
        for a in outcomes {
            changes.extend(a.events.iter().map(|e| Change {
                zxid: a.index,
                kind: e.kind,
                path: e.path.clone(),
                acl: e.acl.clone(),
            }));
            for e in &a.events {
                let targets = watches.trigger(e.kind, &e.path);
                if targets.is_empty() {
                    continue;
                }
                let mut frame = BytesMut::new();
                put_notification(&mut frame, a.index as i64, e.kind, &e.path);
                let frame = frame.freeze();
                for c in targets {
                    // Only watchers that may read the node hear of it.
                    let allowed =
                        conns.get(&c).is_some_and(|h| acl::allowed(&e.acl, &h.stats.identity.lock(), perms::READ));
                    if allowed {
                        Self::send(&conns, c, ConnMsg::Event(a.index as i64, frame.clone()));
                    }
                }
            }
            let mut close = None;
            match a.session {
                Some(SessionChange::Opened { id, timeout_ms, .. }) => self.liveness.add(id, timeout_ms, now),
                Some(SessionChange::Resumed { id, timeout_ms, owner, previous }) => {
                    self.liveness.add(id, timeout_ms, now);
                    if previous.node == self.node && previous != owner {
                        Self::send(&conns, previous.conn, ConnMsg::Close("session moved to another connection"));
                    }
                }
                Some(SessionChange::Ended { id, owner }) => {
                    self.liveness.remove(id);
                    if owner.node == self.node {
                        close = Some(owner.conn);
                    }
                }
                None => {}
            }
            if let Some(o) = a.origin
                && o.node == self.node
            {
                if let Some(waiter) = waiters.remove(&o.conn) {
                    let _ = waiter.send((a.index as i64, a.reply));
                } else {
                    Self::send(&conns, o.conn, ConnMsg::Reply { xid: o.xid, zxid: a.index as i64, reply: a.reply });
                }
            }
            if let Some(c) = close {
                Self::send(&conns, c, ConnMsg::Close("session closed"));
            }
        }
        self.applied.store(applied_index, Ordering::Release);
        if !changes.is_empty() {
            // No subscriber is not an error.
            let _ = self.changes.send(changes.into());
        }
    }

    /// This member caught up from a snapshot: the changes it covers fired
    /// no watch here, and the replies of the requests they answered were
    /// never published. Like a ZooKeeper follower that resynchronizes,
    /// the member drops its clients: they reconnect (here or elsewhere),
    /// their requests in flight fail with ConnectionLoss, and they replay
    /// their watches with `setWatches`, which fires what changed since
    /// their last zxid. The sessions in the snapshot are this member's to
    /// time now, each with a full timeout.
    fn installed(&self, applied_index: u64, sessions: Vec<(i64, i32)>) {
        self.liveness.replace(sessions, Instant::now());
        let conns = self.conns.lock();
        // In id order: the same order every run (the simulation replays).
        let mut ids: Vec<ConnId> = conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            Self::send(&conns, id, ConnMsg::Close("this member caught up from a snapshot"));
        }
        // Admin API calls waiting for an entry the snapshot covers fail.
        self.waiters.lock().clear();
        self.applied.store(applied_index, Ordering::Release);
        tracing::info!(applied_index, "caught up from a snapshot: client connections dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::watches::WatchKind;
    use std::time::Duration;

    #[test]
    fn a_snapshot_install_drops_the_clients_and_times_the_snapshots_sessions() {
        let liveness = Arc::new(Liveness::default());
        let d = Dispatcher::new(1, liveness.clone(), 10);
        // Session 7 ended inside the snapshot; session 8 began there.
        liveness.add(7, 1000, Instant::now());
        let (mut inbox, _) = d.register(42, "127.0.0.1:1".parse().unwrap(), 8, CancellationToken::new());
        d.watches.lock().add(WatchKind::Data, "/a", 42);
        let mut waiter = d.wait_for(99);

        d.installed(50, vec![(8, 2000)]);
        assert!(matches!(inbox.try_recv(), Ok(ConnMsg::Close(_))), "the client is dropped, to resync");
        assert!(waiter.try_recv().is_err(), "an admin call waiting for a covered entry fails");
        assert_eq!(d.applied(), 50);
        assert_eq!(liveness.len(), 1);
        let now = Instant::now();
        assert!(liveness.take_expired(now + Duration::from_millis(1500)).is_empty(), "a full timeout from now");
        assert_eq!(liveness.take_expired(now + Duration::from_millis(2500)), vec![8]);
    }
}
