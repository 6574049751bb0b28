//! The watch registry of this node: which connection watches which path.
//!
//! Watches are not replicated: they live on the node the client is
//! connected to, as in ZooKeeper, and a client re-sends them with
//! `setWatches` after a reconnect. Lookups go by path, so firing an event
//! costs O(watchers of that path), never a scan over all watches.
//!
//! Standard watches are one-shot. A connection registered several ways on
//! one path (data and child, say) gets one event per change.

use std::collections::{HashMap, HashSet};

use crate::proto::response::EventType;

pub type ConnId = u64;

/// How a watch was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// `getData` or `exists` with watch: fires on create, delete, data change.
    Data,
    /// `getChildren` with watch: fires on delete and child changes.
    Child,
}

#[derive(Default)]
pub struct Watches {
    data: HashMap<String, HashSet<ConnId>>,
    child: HashMap<String, HashSet<ConnId>>,
    by_conn: HashMap<ConnId, HashSet<(WatchKind, String)>>,
}

impl Watches {
    fn table(&mut self, kind: WatchKind) -> &mut HashMap<String, HashSet<ConnId>> {
        match kind {
            WatchKind::Data => &mut self.data,
            WatchKind::Child => &mut self.child,
        }
    }

    pub fn add(&mut self, kind: WatchKind, path: &str, conn: ConnId) {
        self.table(kind).entry(path.to_owned()).or_default().insert(conn);
        self.by_conn.entry(conn).or_default().insert((kind, path.to_owned()));
    }

    fn take(&mut self, kind: WatchKind, path: &str, out: &mut Vec<ConnId>) {
        if let Some(conns) = self.table(kind).remove(path) {
            for c in conns {
                if let Some(set) = self.by_conn.get_mut(&c) {
                    set.remove(&(kind, path.to_owned()));
                }
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }

    /// The connections to notify of an event, with their one-shot watches
    /// removed. Each connection appears once.
    pub fn trigger(&mut self, event: EventType, path: &str) -> Vec<ConnId> {
        let mut out = Vec::new();
        match event {
            EventType::NodeCreated | EventType::NodeDataChanged => self.take(WatchKind::Data, path, &mut out),
            EventType::NodeDeleted => {
                self.take(WatchKind::Data, path, &mut out);
                self.take(WatchKind::Child, path, &mut out);
            }
            EventType::NodeChildrenChanged => self.take(WatchKind::Child, path, &mut out),
        }
        out
    }

    /// Forgets every watch of a closed connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        for (kind, path) in self.by_conn.remove(&conn).unwrap_or_default() {
            let table = self.table(kind);
            if let Some(set) = table.get_mut(&path) {
                set.remove(&conn);
                if set.is_empty() {
                    table.remove(&path);
                }
            }
        }
    }

    /// Number of (connection, path, kind) watches.
    pub fn count(&self) -> usize {
        self.by_conn.values().map(HashSet::len).sum()
    }

    /// Distinct watched paths.
    pub fn paths(&self) -> usize {
        self.data.keys().chain(self.child.keys()).collect::<HashSet<_>>().len()
    }

    /// Connections with at least one watch.
    pub fn connections(&self) -> usize {
        self.by_conn.values().filter(|s| !s.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<ConnId>) -> Vec<ConnId> {
        v.sort();
        v
    }

    #[test]
    fn one_event_per_connection_and_one_shot() {
        let mut w = Watches::default();
        w.add(WatchKind::Data, "/a", 1);
        w.add(WatchKind::Child, "/a", 1);
        w.add(WatchKind::Data, "/a", 2);
        assert_eq!(w.count(), 3);
        assert_eq!(sorted(w.trigger(EventType::NodeDeleted, "/a")), vec![1, 2]);
        assert_eq!(w.trigger(EventType::NodeDeleted, "/a"), Vec::<ConnId>::new());
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn events_pick_their_kinds() {
        let mut w = Watches::default();
        w.add(WatchKind::Data, "/a", 1);
        w.add(WatchKind::Child, "/a", 2);
        assert_eq!(w.trigger(EventType::NodeChildrenChanged, "/a"), vec![2]);
        assert_eq!(w.trigger(EventType::NodeDataChanged, "/a"), vec![1]);
        w.add(WatchKind::Data, "/b", 3);
        w.remove_conn(3);
        assert_eq!(w.trigger(EventType::NodeCreated, "/b"), Vec::<ConnId>::new());
        assert_eq!(w.paths(), 0);
    }
}
