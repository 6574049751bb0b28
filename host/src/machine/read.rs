//! Reads, served locally from a [`ReadView`] with ZooKeeper's checks.
//!
//! A read never goes through the log. Its freshness comes from where the
//! server runs it: after the session's own pending writes (FIFO per
//! session), and after a `sync` when the client asked for one.

use super::ReadView;
use super::acl;
use super::command::Identity;
use crate::proto::data::{Acl, Stat, perms};
use crate::proto::error::ErrorCode;
use redb::ReadableTable;

use crate::tree::{self, Node, Session, StoreError, path};

/// A read's outcome: a client error, or a storage failure.
pub type ReadResult<T> = Result<Result<T, ErrorCode>, StoreError>;

impl ReadView {
    pub fn node(&self, p: &str) -> Result<Option<Node>, StoreError> {
        tree::get_node(&self.nodes, p)
    }

    /// `exists`: needs no permission.
    pub fn exists(&self, p: &str) -> ReadResult<Stat> {
        Ok(self.node(p)?.map(|n| n.stat()).ok_or(ErrorCode::NoNode))
    }

    /// `getData`: needs READ.
    pub fn get_data(&self, p: &str, who: &Identity) -> ReadResult<(Option<Vec<u8>>, Stat)> {
        let Some(node) = self.node(p)? else {
            return Ok(Err(ErrorCode::NoNode));
        };
        if let Err(e) = acl::check(&node.acl, who, perms::READ) {
            return Ok(Err(e));
        }
        let stat = node.stat();
        Ok(Ok((node.data, stat)))
    }

    /// `getChildren`/`getChildren2`: needs READ.
    pub fn get_children(&self, p: &str, who: &Identity) -> ReadResult<(Vec<String>, Stat)> {
        let Some(node) = self.node(p)? else {
            return Ok(Err(ErrorCode::NoNode));
        };
        if let Err(e) = acl::check(&node.acl, who, perms::READ) {
            return Ok(Err(e));
        }
        let children = tree::child_names(&self.nodes, p)?;
        debug_assert_eq!(children.len(), node.num_children as usize, "child count of {p}");
        Ok(Ok((children, node.stat())))
    }

    /// `getACL`: needs READ or ADMIN; digest ids are masked without ADMIN.
    pub fn get_acl(&self, p: &str, who: &Identity) -> ReadResult<(Vec<Acl>, Stat)> {
        let Some(node) = self.node(p)? else {
            return Ok(Err(ErrorCode::NoNode));
        };
        let admin = acl::allowed(&node.acl, who, perms::ADMIN);
        if !admin && !acl::allowed(&node.acl, who, perms::READ) {
            return Ok(Err(ErrorCode::NoAuth));
        }
        let list = if admin { node.acl.clone() } else { acl::masked(&node.acl) };
        Ok(Ok((list, node.stat())))
    }

    /// `getEphemerals`: the session's ephemerals whose path starts with
    /// `prefix` as a string ("/" or "" means all).
    pub fn ephemerals_of(&self, session: i64, prefix: &str) -> Result<Vec<String>, StoreError> {
        let all = tree::session_ephemerals(&self.ephemerals()?, session)?;
        let prefix = if prefix == "/" { "" } else { prefix };
        Ok(all.into_iter().filter(|p| p.starts_with(prefix)).collect())
    }

    /// `getAllChildrenNumber`: every descendant, not only direct children.
    /// Needs READ on the node.
    pub fn all_children_number(&self, p: &str, who: &Identity) -> ReadResult<i32> {
        let Some(node) = self.node(p)? else {
            return Ok(Err(ErrorCode::NoNode));
        };
        if let Err(e) = acl::check(&node.acl, who, perms::READ) {
            return Ok(Err(e));
        }
        let mut count = 0i64;
        let mut stack = vec![p.to_owned()];
        while let Some(q) = stack.pop() {
            for name in tree::child_names(&self.nodes, &q)? {
                count += 1;
                stack.push(path::join(&q, &name));
            }
        }
        Ok(Ok(count.min(i32::MAX as i64) as i32))
    }

    /// Every live session, by id.
    pub fn all_sessions(&self) -> Result<Vec<(i64, Session)>, StoreError> {
        let mut out = Vec::new();
        for item in self.sessions()?.iter()? {
            let (k, v) = item?;
            let s = Session::decode(v.value()).map_err(|err| StoreError::Corrupt { what: "session", err })?;
            out.push((k.value() as i64, s));
        }
        Ok(out)
    }

    /// One page of `p`'s children, in name order, starting after `after`:
    /// the node's child count, (name, stat) pairs, and whether more follow.
    /// Needs READ on `p`.
    pub fn children_page(
        &self,
        p: &str,
        who: &Identity,
        after: Option<&str>,
        limit: usize,
    ) -> ReadResult<(i32, Vec<(String, Stat)>, bool)> {
        let Some(node) = self.node(p)? else { return Ok(Err(ErrorCode::NoNode)) };
        if let Err(e) = acl::check(&node.acl, who, perms::READ) {
            return Ok(Err(e));
        }
        let prefix = path::children_prefix(p);
        let mut start = prefix.clone();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            start.push(0);
        }
        let mut end = prefix.clone();
        *end.last_mut().expect("prefix ends with NUL") = 1;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for item in self.nodes.range(start.as_slice()..end.as_slice())? {
            let (k, v) = item?;
            if out.len() == limit {
                more = true;
                break;
            }
            let name = String::from_utf8_lossy(&k.value()[prefix.len()..]).into_owned();
            let child = Node::decode(v.value()).map_err(|err| StoreError::Corrupt { what: "node", err })?;
            out.push((name, child.stat()));
        }
        Ok(Ok((node.num_children, out, more)))
    }

    /// Calls `f` with each child of `p` whose name starts with
    /// `name_prefix`, in name order, until it returns false.
    fn each_child(&self, p: &str, name_prefix: &str, mut f: impl FnMut(&str, Node) -> bool) -> Result<(), StoreError> {
        let mut start = path::children_prefix(p);
        let names_at = start.len();
        start.extend_from_slice(name_prefix.as_bytes());
        for item in self.nodes.range(start.as_slice()..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(&start) {
                break;
            }
            let name = String::from_utf8_lossy(&key[names_at..]);
            let child = Node::decode(v.value()).map_err(|err| StoreError::Corrupt { what: "node", err })?;
            if !f(&name, child) {
                break;
            }
        }
        Ok(())
    }

    /// The nodes of the subtree at `root` whose path starts with `prefix`,
    /// in pre-order (a parent before its children, siblings by name), at
    /// most `limit` of them, reading at most `budget` nodes. Branches that
    /// cannot match are never read: `/a/b` under `/` reads `/a` and `/a/b`
    /// directly, and `/a/b` then only the children of `/a` named `b…`.
    /// Nodes whose parent denies READ are skipped, as a ZooKeeper client
    /// could not list them either. Returns the matches and whether the walk
    /// stopped early.
    pub fn search(
        &self,
        root: &str,
        prefix: &str,
        who: &Identity,
        limit: usize,
        budget: usize,
    ) -> ReadResult<(Vec<(String, Stat)>, bool)> {
        let Some(top) = self.node(root)? else { return Ok(Err(ErrorCode::NoNode)) };
        let mut found = Vec::new();
        let mut read = 1usize;
        let mut truncated = false;
        // Only what the walk needs of each node: not its data.
        let mut stack = vec![(root.to_owned(), top.stat(), top.acl)];
        while let Some((p, stat, node_acl)) = stack.pop() {
            if p.starts_with(prefix) {
                if found.len() == limit {
                    return Ok(Ok((found, true)));
                }
                found.push((p.clone(), stat));
            }
            if stat.num_children == 0 || truncated || !acl::allowed(&node_acl, who, perms::READ) {
                continue;
            }
            // The part of `prefix` that names this node's children.
            let below = if p == "/" { p.clone() } else { format!("{p}/") };
            let name_prefix = match prefix.strip_prefix(below.as_str()) {
                Some(rest) => rest.split('/').next().unwrap_or_default(),
                None if below.starts_with(prefix) || p.starts_with(prefix) => "",
                None => continue,
            };
            let mut children = Vec::new();
            if prefix.len() > below.len() + name_prefix.len() {
                // `prefix` goes deeper: only the child of that exact name.
                let child_path = path::join(&p, name_prefix);
                if let Some(child) = self.node(&child_path)? {
                    read += 1;
                    children.push((child_path, child.stat(), child.acl));
                }
            } else {
                self.each_child(&p, name_prefix, |name, child| {
                    if read >= budget {
                        truncated = true;
                        return false;
                    }
                    read += 1;
                    children.push((path::join(&p, name), child.stat(), child.acl));
                    true
                })?;
            }
            stack.extend(children.into_iter().rev());
        }
        Ok(Ok((found, truncated)))
    }

    /// The whole subtree at `root` in pre-order, with each node's record,
    /// for an export. Fails with `NoAuth` on the first node the caller may
    /// not read (an export is complete or refused, never silently partial),
    /// and returns `None` when the subtree has more than `max_nodes` nodes
    /// or more than `max_bytes` of data.
    pub fn subtree(
        &self,
        root: &str,
        who: &Identity,
        max_nodes: usize,
        max_bytes: usize,
    ) -> ReadResult<Option<Vec<(String, Node)>>> {
        let Some(top) = self.node(root)? else { return Ok(Err(ErrorCode::NoNode)) };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut stack = vec![(root.to_owned(), top)];
        while let Some((p, node)) = stack.pop() {
            if let Err(e) = acl::check(&node.acl, who, perms::READ) {
                return Ok(Err(e));
            }
            bytes += node.data.as_ref().map_or(0, Vec::len);
            if out.len() + stack.len() + node.num_children as usize > max_nodes || bytes > max_bytes {
                return Ok(Ok(None));
            }
            let mut children = Vec::with_capacity(node.num_children as usize);
            self.each_child(&p, "", |name, child| {
                children.push((path::join(&p, name), child));
                true
            })?;
            stack.extend(children.into_iter().rev());
            out.push((p, node));
        }
        Ok(Ok(Some(out)))
    }

    /// Up to `limit` paths of the subtree at `root`, children before their
    /// parents (a deletion order). Needs READ on every node listed.
    pub fn subtree_post_order(&self, root: &str, who: &Identity, limit: usize) -> ReadResult<Vec<String>> {
        let mut out = Vec::new();
        // (path, children listed yet?)
        let mut stack = vec![(root.to_owned(), false)];
        while let Some((p, expanded)) = stack.pop() {
            if expanded {
                out.push(p);
                if out.len() >= limit {
                    break;
                }
                continue;
            }
            match self.get_children(&p, who)? {
                Ok((children, _)) => {
                    stack.push((p.clone(), true));
                    stack.extend(children.into_iter().map(|c| (path::join(&p, &c), false)));
                }
                Err(ErrorCode::NoNode) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }

    /// Containers and TTL nodes that look due for deletion at `now_ms`, at
    /// most `limit`. The leader proposes a reap for each; apply decides.
    pub fn reap_candidates(
        &self,
        now_ms: i64,
        never_used_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let table = match self.txn_table(tree::REAPABLE) {
            Some(t) => t?,
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for item in table.iter()? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            let Some(v) = self.nodes.get(k.value())? else { continue };
            let node = Node::decode(v.value()).map_err(|err| StoreError::Corrupt { what: "node", err })?;
            let idle = now_ms - node.mtime;
            let due = node.num_children == 0
                && match node.ttl_ms() {
                    Some(ttl) => idle > ttl,
                    None => node.child_creations != 0 || never_used_ms.is_some_and(|n| idle > n),
                };
            if due {
                out.push(path::from_key(k.value()));
            }
        }
        Ok(out)
    }
}
