//! The watch registry of this node: which connection watches which path.
//!
//! Watches are not replicated: they live on the node the client is
//! connected to, as in ZooKeeper, and a client re-sends them with
//! `setWatches` after a reconnect. Lookups go by path (and, for recursive
//! watches, by each ancestor of the changed path), so firing an event costs
//! O(watchers of those paths), never a scan over all watches.
//!
//! | kind | set by | fires on | removed when it fires |
//! |---|---|---|---|
//! | `Data` | getData, exists | created, deleted, data changed | yes |
//! | `Child` | getChildren | deleted, children changed | yes |
//! | `Persistent` | addWatch mode 0 | all of the above, on that path | no |
//! | `PersistentRecursive` | addWatch mode 1 | created, deleted, data changed, on that path or below; never children changed | no |
//!
//! A connection registered several ways on one path gets one event per
//! change.

use std::collections::{HashMap, HashSet};

use crate::proto::response::EventType;
use crate::tree::path;

pub type ConnId = u64;

/// How a watch was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    PersistentRecursive,
}

impl WatchKind {
    const ALL: [WatchKind; 4] =
        [WatchKind::Data, WatchKind::Child, WatchKind::Persistent, WatchKind::PersistentRecursive];

    fn index(self) -> usize {
        self as usize
    }

    /// The kinds a `checkWatches`/`removeWatches` watcher type names: 1
    /// children, 2 data, 3 any, 4 persistent, 5 persistent recursive.
    pub fn of_watcher_type(t: i32) -> Option<&'static [WatchKind]> {
        Some(match t {
            1 => &[WatchKind::Child],
            2 => &[WatchKind::Data],
            3 => &Self::ALL,
            4 => &[WatchKind::Persistent],
            5 => &[WatchKind::PersistentRecursive],
            _ => return None,
        })
    }
}

#[derive(Default)]
pub struct Watches {
    tables: [HashMap<String, HashSet<ConnId>>; 4],
    by_conn: HashMap<ConnId, HashSet<(WatchKind, String)>>,
}

impl Watches {
    fn table(&mut self, kind: WatchKind) -> &mut HashMap<String, HashSet<ConnId>> {
        &mut self.tables[kind.index()]
    }

    pub fn add(&mut self, kind: WatchKind, path: &str, conn: ConnId) {
        self.table(kind).entry(path.to_owned()).or_default().insert(conn);
        self.by_conn.entry(conn).or_default().insert((kind, path.to_owned()));
    }

    /// One-shot watches of `kind` on `path`, removed.
    fn take(&mut self, kind: WatchKind, path: &str, out: &mut Vec<ConnId>) {
        if let Some(conns) = self.table(kind).remove(path) {
            for c in conns {
                if let Some(set) = self.by_conn.get_mut(&c) {
                    set.remove(&(kind, path.to_owned()));
                }
                out.push(c);
            }
        }
    }

    /// Persistent watches of `kind` on `path`, kept.
    fn peek(&self, kind: WatchKind, path: &str, out: &mut Vec<ConnId>) {
        if let Some(conns) = self.tables[kind.index()].get(path) {
            out.extend(conns);
        }
    }

    /// The connections to notify of an event, with their one-shot watches
    /// removed. Each connection appears once, in id order (the same order
    /// every run: the simulation replays).
    pub fn trigger(&mut self, event: EventType, p: &str) -> Vec<ConnId> {
        let mut out = Vec::new();
        match event {
            EventType::NodeCreated | EventType::NodeDataChanged => self.take(WatchKind::Data, p, &mut out),
            EventType::NodeDeleted => {
                self.take(WatchKind::Data, p, &mut out);
                self.take(WatchKind::Child, p, &mut out);
            }
            EventType::NodeChildrenChanged => self.take(WatchKind::Child, p, &mut out),
        }
        self.peek(WatchKind::Persistent, p, &mut out);
        if event != EventType::NodeChildrenChanged && !self.tables[WatchKind::PersistentRecursive.index()].is_empty() {
            let mut at = p;
            loop {
                self.peek(WatchKind::PersistentRecursive, at, &mut out);
                match path::split(at) {
                    Some((parent, name)) if !name.is_empty() => at = parent,
                    _ => break,
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Does `conn` hold a watch of one of `kinds` on `path`?
    pub fn has(&self, conn: ConnId, path: &str, kinds: &[WatchKind]) -> bool {
        self.by_conn.get(&conn).is_some_and(|set| kinds.iter().any(|k| set.contains(&(*k, path.to_owned()))))
    }

    /// Removes `conn`'s watches of `kinds` on `path`; false if it had none.
    pub fn remove(&mut self, conn: ConnId, path: &str, kinds: &[WatchKind]) -> bool {
        let mut removed = false;
        for kind in kinds {
            let Some(set) = self.by_conn.get_mut(&conn) else { return false };
            if set.remove(&(*kind, path.to_owned())) {
                removed = true;
                let table = self.table(*kind);
                if let Some(conns) = table.get_mut(path) {
                    conns.remove(&conn);
                    if conns.is_empty() {
                        table.remove(path);
                    }
                }
            }
        }
        removed
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

    /// Watches one connection holds.
    pub fn count_for(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
    }

    /// Distinct watched paths.
    pub fn paths(&self) -> usize {
        self.tables.iter().flat_map(|t| t.keys()).collect::<HashSet<_>>().len()
    }

    /// Connections with at least one watch.
    pub fn connections(&self) -> usize {
        self.by_conn.values().filter(|s| !s.is_empty()).count()
    }

    /// Watched paths of each connection (for `wchc`), sorted.
    pub fn by_connection(&self) -> Vec<(ConnId, Vec<String>)> {
        let mut out: Vec<_> = self
            .by_conn
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(c, s)| {
                let mut paths: Vec<String> = s.iter().map(|(_, p)| p.clone()).collect();
                paths.sort();
                paths.dedup();
                (*c, paths)
            })
            .collect();
        out.sort();
        out
    }

    /// Watching connections of each path (for `wchp`), sorted.
    pub fn by_path(&self) -> Vec<(String, Vec<ConnId>)> {
        let mut map: HashMap<&str, HashSet<ConnId>> = HashMap::new();
        for t in &self.tables {
            for (p, conns) in t {
                map.entry(p).or_default().extend(conns);
            }
        }
        let mut out: Vec<_> = map
            .into_iter()
            .map(|(p, c)| {
                let mut c: Vec<_> = c.into_iter().collect();
                c.sort();
                (p.to_owned(), c)
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_connection_and_one_shot() {
        let mut w = Watches::default();
        w.add(WatchKind::Data, "/a", 1);
        w.add(WatchKind::Child, "/a", 1);
        w.add(WatchKind::Data, "/a", 2);
        assert_eq!(w.count(), 3);
        w.add(WatchKind::Data, "/a", 0);
        assert_eq!(w.trigger(EventType::NodeDeleted, "/a"), vec![0, 1, 2], "once each, in id order");
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

    #[test]
    fn persistent_watches_stay_and_recursive_ones_skip_child_events() {
        let mut w = Watches::default();
        w.add(WatchKind::Persistent, "/p", 1);
        w.add(WatchKind::PersistentRecursive, "/r", 2);
        w.add(WatchKind::PersistentRecursive, "/", 3);
        for _ in 0..2 {
            assert_eq!(w.trigger(EventType::NodeDataChanged, "/p"), vec![1, 3]);
            assert_eq!(w.trigger(EventType::NodeChildrenChanged, "/p"), vec![1]);
        }
        assert_eq!(w.trigger(EventType::NodeCreated, "/r/x/y"), vec![2, 3]);
        assert_eq!(w.trigger(EventType::NodeChildrenChanged, "/r/x"), Vec::<ConnId>::new());
        assert_eq!(w.trigger(EventType::NodeDeleted, "/rr"), vec![3], "/rr is not under /r");
        assert!(w.has(2, "/r", &[WatchKind::PersistentRecursive]));
        assert!(!w.remove(2, "/r", &[WatchKind::Data]));
        assert!(w.remove(2, "/r", WatchKind::of_watcher_type(3).unwrap()));
        assert_eq!(w.trigger(EventType::NodeCreated, "/r/z"), vec![3]);
    }
}
