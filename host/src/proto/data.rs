//! The data model records that clients see: `Stat`, `ACL` and `Id`
//! (ZooKeeper's `org.apache.zookeeper.data` module), plus the create modes
//! and permission bits.
//!
//! These types are also part of Corral's replicated log and state, so they
//! derive serde; their jute encoding is written here by hand.

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::jute::{DecodeError, JuteWrite, Reader};

/// Permission bits (`ZooDefs.Perms`).
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// The metadata of a znode as clients see it (68 bytes on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last data change.
    pub mzxid: i64,
    /// Creation time, ms since the epoch (stamped by the leader).
    pub ctime: i64,
    /// Last data change time, ms since the epoch.
    pub mtime: i64,
    /// Data changes since creation.
    pub version: i32,
    /// Child creations plus deletions.
    pub cversion: i32,
    /// ACL changes since creation.
    pub aversion: i32,
    /// Owning session of an ephemeral, else 0.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    /// zxid of the last child creation or deletion.
    pub pzxid: i64,
}

impl Stat {
    pub fn encode(&self, b: &mut BytesMut) {
        b.write_i64(self.czxid);
        b.write_i64(self.mzxid);
        b.write_i64(self.ctime);
        b.write_i64(self.mtime);
        b.write_i32(self.version);
        b.write_i32(self.cversion);
        b.write_i32(self.aversion);
        b.write_i64(self.ephemeral_owner);
        b.write_i32(self.data_length);
        b.write_i32(self.num_children);
        b.write_i64(self.pzxid);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Stat, DecodeError> {
        Ok(Stat {
            czxid: r.i64()?,
            mzxid: r.i64()?,
            ctime: r.i64()?,
            mtime: r.i64()?,
            version: r.i32()?,
            cversion: r.i32()?,
            aversion: r.i32()?,
            ephemeral_owner: r.i64()?,
            data_length: r.i32()?,
            num_children: r.i32()?,
            pzxid: r.i64()?,
        })
    }
}

/// An identity in an ACL scheme, e.g. `world:anyone` or `digest:user:hash`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id { scheme: scheme.to_owned(), id: id.to_owned() }
    }
}

/// One ACL entry: the permission bits granted to an identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    /// `world:anyone:cdrwa`, ZooKeeper's `OPEN_ACL_UNSAFE`.
    pub fn open() -> Vec<Acl> {
        vec![Acl { perms: perms::ALL, id: Id::new("world", "anyone") }]
    }

    pub fn encode(&self, b: &mut BytesMut) {
        b.write_i32(self.perms);
        b.write_string(&self.id.scheme);
        b.write_string(&self.id.id);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Acl, DecodeError> {
        Ok(Acl { perms: r.i32()?, id: Id { scheme: r.string()?, id: r.string()? } })
    }

    pub fn decode_list(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
        r.vector(12, Acl::decode)
    }

    pub fn encode_list(acl: &[Acl], b: &mut BytesMut) {
        b.write_i32(acl.len() as i32);
        for a in acl {
            a.encode(b);
        }
    }
}

/// How a znode is created (`CreateMode`), from the request's `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
    PersistentWithTtl,
    PersistentSequentialWithTtl,
}

impl CreateMode {
    pub fn from_flags(flags: i32) -> Option<CreateMode> {
        Some(match flags {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            5 => CreateMode::PersistentWithTtl,
            6 => CreateMode::PersistentSequentialWithTtl,
            _ => return None,
        })
    }

    pub fn is_ephemeral(self) -> bool {
        matches!(self, CreateMode::Ephemeral | CreateMode::EphemeralSequential)
    }

    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    pub fn is_ttl(self) -> bool {
        matches!(self, CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl)
    }
}
