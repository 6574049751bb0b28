//! [`MemTree`]: an in-memory tree with ZooKeeper's write rules, to test
//! plugins natively (`cargo test`) without a server.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::types::{CreateMode, Fault, Stat, parent};
use crate::{Read, Write};

/// An in-memory znode tree. Each write advances its zxid, as if each were
/// an entry of its own. Ephemerals belong to session 1.
#[derive(Debug, Clone)]
pub struct MemTree {
    nodes: BTreeMap<String, (Vec<u8>, Stat)>,
    zxid: i64,
}

impl Default for MemTree {
    fn default() -> Self {
        MemTree::new()
    }
}

fn check_path(path: &str) -> Result<(), Fault> {
    let ok =
        path == "/" || (path.starts_with('/') && !path.ends_with('/') && !path.contains("//") && !path.contains('\0'));
    if ok { Ok(()) } else { Err(Fault::BadArguments(format!("invalid path {path:?}"))) }
}

impl MemTree {
    /// A tree with only `/`.
    pub fn new() -> MemTree {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::from("/"), (Vec::new(), Stat::default()));
        MemTree { nodes, zxid: 0 }
    }

    /// Creates `path` and any missing parents, persistent, with `data`.
    pub fn put(&mut self, path: &str, data: &[u8]) -> &mut MemTree {
        let mut at = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            at.push('/');
            at.push_str(part);
            let last = i + 1 == parts.len();
            if !self.nodes.contains_key(&at) {
                self.create(&at, if last { data } else { b"" }, CreateMode::Persistent).expect("put creates");
            } else if last {
                self.set(&at, data, -1).expect("put sets");
            }
        }
        self
    }

    /// The data of `path`, if it exists.
    pub fn data(&self, path: &str) -> Option<&[u8]> {
        self.nodes.get(path).map(|(d, _)| d.as_slice())
    }

    fn next_zxid(&mut self) -> i64 {
        self.zxid += 1;
        self.zxid
    }
}

impl Read for MemTree {
    fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, Fault> {
        check_path(path)?;
        Ok(self.nodes.get(path).cloned())
    }

    fn exists(&self, path: &str) -> Result<Option<Stat>, Fault> {
        check_path(path)?;
        Ok(self.nodes.get(path).map(|(_, s)| *s))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, Fault> {
        check_path(path)?;
        if !self.nodes.contains_key(path) {
            return Err(Fault::NoNode);
        }
        let prefix = if path == "/" { String::from("/") } else { format!("{path}/") };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect())
    }
}

impl Write for MemTree {
    fn create(&mut self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Fault> {
        check_path(path)?;
        if path == "/" {
            return Err(Fault::NodeExists);
        }
        let parent_path = parent(path).to_string();
        let zxid = self.zxid + 1;
        let (_, pstat) = self.nodes.get(&parent_path).ok_or(Fault::NoNode)?;
        if pstat.ephemeral_owner != 0 {
            return Err(Fault::NoChildrenForEphemerals);
        }
        let path = match mode {
            CreateMode::PersistentSequential | CreateMode::EphemeralSequential => {
                format!("{path}{:010}", pstat.cversion)
            }
            _ => path.to_string(),
        };
        if self.nodes.contains_key(&path) {
            return Err(Fault::NodeExists);
        }
        self.next_zxid();
        let owner = if matches!(mode, CreateMode::Ephemeral | CreateMode::EphemeralSequential) { 1 } else { 0 };
        let stat = Stat {
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            data_length: data.len() as i32,
            ephemeral_owner: owner,
            ..Stat::default()
        };
        self.nodes.insert(path.clone(), (data.to_vec(), stat));
        let (_, p) = self.nodes.get_mut(&parent_path).expect("parent exists");
        p.cversion += 1;
        p.num_children += 1;
        p.pzxid = zxid;
        Ok(path)
    }

    fn set(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, Fault> {
        check_path(path)?;
        let zxid = self.zxid + 1;
        let (d, s) = self.nodes.get_mut(path).ok_or(Fault::NoNode)?;
        if version != -1 && version != s.version {
            return Err(Fault::BadVersion);
        }
        *d = data.to_vec();
        s.version += 1;
        s.mzxid = zxid;
        s.data_length = data.len() as i32;
        let stat = *s;
        self.next_zxid();
        Ok(stat)
    }

    fn delete(&mut self, path: &str, version: i32) -> Result<(), Fault> {
        check_path(path)?;
        if path == "/" {
            return Err(Fault::BadArguments("cannot delete /".into()));
        }
        let (_, s) = self.nodes.get(path).ok_or(Fault::NoNode)?;
        if version != -1 && version != s.version {
            return Err(Fault::BadVersion);
        }
        if s.num_children > 0 {
            return Err(Fault::NotEmpty);
        }
        let zxid = self.next_zxid();
        self.nodes.remove(path);
        let (_, p) = self.nodes.get_mut(parent(path)).expect("parent exists");
        p.cversion += 1;
        p.num_children -= 1;
        p.pzxid = zxid;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zookeeper_rules() {
        let mut t = MemTree::new();
        assert_eq!(t.create("/a/b", b"", CreateMode::Persistent), Err(Fault::NoNode));
        t.put("/a/b", b"x");
        assert_eq!(t.children("/a").unwrap(), ["b"]);
        assert_eq!(t.set("/a/b", b"y", 5), Err(Fault::BadVersion));
        assert_eq!(t.set("/a/b", b"y", 0).unwrap().version, 1);
        assert_eq!(t.delete("/a", -1), Err(Fault::NotEmpty));
        let s1 = t.create("/a/s-", b"", CreateMode::PersistentSequential).unwrap();
        let s2 = t.create("/a/s-", b"", CreateMode::PersistentSequential).unwrap();
        assert_eq!((s1.as_str(), s2.as_str()), ("/a/s-0000000001", "/a/s-0000000002"));
        t.create("/e", b"", CreateMode::Ephemeral).unwrap();
        assert_eq!(t.create("/e/x", b"", CreateMode::Persistent), Err(Fault::NoChildrenForEphemerals));
        t.delete("/a/b", 1).unwrap();
        assert_eq!(t.exists("/a/b").unwrap(), None);
        assert_eq!(t.children("/").unwrap(), ["a", "e"]);
    }
}
