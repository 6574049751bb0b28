//! The snapshot format: the whole replicated state as one canonical byte
//! stream.
//!
//! ```text
//! "CORRAL-SNAPSHOT" 0x01            16-byte magic and format version
//! record*                           u32 LE length, then a postcard Record
//! ```
//!
//! Records come in a fixed order: one `Header` (the Raft layer's snapshot
//! meta, opaque here, and the machine [`Meta`]), every node in key order,
//! every session in id order, every admin API token in id order, the
//! plugin tables (records, code, pending uploads) each in key order, then `End`
//! with the counts and an xxh3 checksum of all bytes before it. Tables are iterated in key order, so
//! equal states give equal bytes. Watches and connections are not state and
//! are not in it; the ephemeral index is rebuilt from the nodes.

use std::io::{Read, Write};

use redb::{Database, Durability, ReadableTable};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::{Meta, ReadView};
use crate::tree::{
    self, Digest, EPHEMERALS, EVENTS, META, NODES, Node, REAPABLE, RecordKind, SESSIONS, StoreError, TOKENS,
};

const MAGIC: &[u8; 16] = b"CORRAL-SNAPSHOT\x02";
/// No record is larger than a node with 1 GiB of data.
const MAX_RECORD_BYTES: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot storage: {0}")]
    Store(#[from] StoreError),
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

impl From<redb::Error> for SnapshotError {
    fn from(e: redb::Error) -> Self {
        SnapshotError::Store(e.into())
    }
}

fn corrupt(msg: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt(msg.into())
}

#[derive(Serialize, Deserialize)]
enum Record {
    Header {
        raft_meta: Vec<u8>,
        meta: Meta,
    },
    Node {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Session {
        id: u64,
        value: Vec<u8>,
    },
    Token {
        id: String,
        value: Vec<u8>,
    },
    /// A record of `tree::PLUGIN_TABLES[table]`.
    Plugin {
        table: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    End {
        nodes: u64,
        sessions: u64,
        checksum: u64,
    },
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    hash: Xxh3,
}

impl<W: Write> Writer<'_, W> {
    fn put(&mut self, r: &Record) -> Result<(), SnapshotError> {
        let body = postcard::to_allocvec(r).expect("records encode");
        let len = (body.len() as u32).to_le_bytes();
        self.hash.update(&len);
        self.hash.update(&body);
        self.out.write_all(&len)?;
        self.out.write_all(&body)?;
        Ok(())
    }
}

/// Writes the state seen by `view`. Returns the machine meta it holds.
pub fn write(view: &ReadView, raft_meta: Vec<u8>, out: &mut impl Write) -> Result<Meta, SnapshotError> {
    let meta = view.meta()?;
    out.write_all(MAGIC)?;
    let mut w = Writer { out, hash: Xxh3::new() };
    w.hash.update(MAGIC);
    w.put(&Record::Header { raft_meta, meta: meta.clone() })?;
    let mut nodes = 0;
    for item in view.nodes.iter().map_err(StoreError::from)? {
        let (k, v) = item.map_err(StoreError::from)?;
        w.put(&Record::Node { key: k.value().to_vec(), value: v.value().to_vec() })?;
        nodes += 1;
    }
    let mut sessions = 0;
    for item in view.sessions()?.iter().map_err(StoreError::from)? {
        let (k, v) = item.map_err(StoreError::from)?;
        w.put(&Record::Session { id: k.value(), value: v.value().to_vec() })?;
        sessions += 1;
    }
    for item in view.tokens()?.iter().map_err(StoreError::from)? {
        let (k, v) = item.map_err(StoreError::from)?;
        w.put(&Record::Token { id: k.value().to_owned(), value: v.value().to_vec() })?;
    }
    for (i, (_, def)) in tree::PLUGIN_TABLES.into_iter().enumerate() {
        let Some(table) = view.txn_table(def) else { continue };
        for item in table?.iter().map_err(StoreError::from)? {
            let (k, v) = item.map_err(StoreError::from)?;
            w.put(&Record::Plugin { table: i as u8, key: k.value().to_vec(), value: v.value().to_vec() })?;
        }
    }
    let checksum = w.hash.digest();
    w.put(&Record::End { nodes, sessions, checksum })?;
    Ok(meta)
}

struct Reader<'a> {
    src: &'a mut dyn Read,
    hash: Xxh3,
}

impl Reader<'_> {
    fn start(src: &mut dyn Read) -> Result<Reader<'_>, SnapshotError> {
        let mut magic = [0u8; 16];
        src.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt("not a Corral snapshot (bad magic or version)"));
        }
        let mut hash = Xxh3::new();
        hash.update(&magic);
        Ok(Reader { src, hash })
    }

    /// The next record, and the checksum of everything before it.
    fn next(&mut self) -> Result<(Record, u64), SnapshotError> {
        let before = self.hash.digest();
        let mut len = [0u8; 4];
        self.src.read_exact(&mut len)?;
        let n = u32::from_le_bytes(len);
        if n > MAX_RECORD_BYTES {
            return Err(corrupt(format!("record of {n} bytes")));
        }
        let mut body = vec![0u8; n as usize];
        self.src.read_exact(&mut body)?;
        self.hash.update(&len);
        self.hash.update(&body);
        let r = postcard::from_bytes(&body).map_err(|e| corrupt(format!("record: {e}")))?;
        Ok((r, before))
    }
}

/// Reads only the header: the Raft layer's meta and the machine's.
pub fn read_header(src: &mut dyn Read) -> Result<(Vec<u8>, Meta), SnapshotError> {
    match Reader::start(src)?.next()?.0 {
        Record::Header { raft_meta, meta } => Ok((raft_meta, meta)),
        _ => Err(corrupt("first record is not the header")),
    }
}

/// Replaces every table with the snapshot's content, in one durable
/// transaction, after checking the order, the counts, the checksum and the
/// digest. A snapshot that fails a check changes nothing.
pub fn install(db: &Database, src: &mut dyn Read) -> Result<Meta, SnapshotError> {
    let mut r = Reader::start(src)?;
    let Record::Header { meta, .. } = r.next()?.0 else {
        return Err(corrupt("first record is not the header"));
    };
    let mut txn = db.begin_write().map_err(StoreError::from)?;
    txn.set_durability(Durability::Immediate).map_err(StoreError::from)?;
    txn.delete_table(NODES).map_err(StoreError::from)?;
    txn.delete_table(EPHEMERALS).map_err(StoreError::from)?;
    txn.delete_table(REAPABLE).map_err(StoreError::from)?;
    txn.delete_table(SESSIONS).map_err(StoreError::from)?;
    txn.delete_table(TOKENS).map_err(StoreError::from)?;
    for (_, def) in tree::PLUGIN_TABLES {
        txn.delete_table(def).map_err(StoreError::from)?;
    }
    // The event history describes the replaced state's past: drop it.
    txn.delete_table(EVENTS).map_err(StoreError::from)?;
    let mut digest = Digest::default();
    let (mut nodes, mut sessions) = (0u64, 0u64);
    {
        let mut node_table = txn.open_table(NODES).map_err(StoreError::from)?;
        let mut session_table = txn.open_table(SESSIONS).map_err(StoreError::from)?;
        let mut ephemerals = txn.open_table(EPHEMERALS).map_err(StoreError::from)?;
        let mut reapable = txn.open_table(REAPABLE).map_err(StoreError::from)?;
        let mut token_table = txn.open_table(TOKENS).map_err(StoreError::from)?;
        let mut last_key: Option<Vec<u8>> = None;
        let mut last_session: Option<u64> = None;
        let mut last_token: Option<String> = None;
        let mut plugin_tables = Vec::new();
        for (_, def) in tree::PLUGIN_TABLES {
            plugin_tables.push(txn.open_table(def).map_err(StoreError::from)?);
        }
        let mut last_plugin: Option<(u8, Vec<u8>)> = None;
        loop {
            match r.next()? {
                (Record::Node { key, value }, _) => {
                    if sessions > 0
                        || last_token.is_some()
                        || last_plugin.is_some()
                        || last_key.as_ref().is_some_and(|k| *k >= key)
                    {
                        return Err(corrupt("nodes out of order"));
                    }
                    let node = Node::decode(&value).map_err(|e| corrupt(format!("node: {e}")))?;
                    if let Some(s) = node.session_owner() {
                        let p = tree::path::from_key(&key);
                        ephemerals.insert(tree::ephemeral_key(s, &p).as_slice(), ()).map_err(StoreError::from)?;
                    }
                    if node.is_reapable() {
                        reapable.insert(key.as_slice(), ()).map_err(StoreError::from)?;
                    }
                    digest.add(RecordKind::Node, &key, &value);
                    node_table.insert(key.as_slice(), value.as_slice()).map_err(StoreError::from)?;
                    last_key = Some(key);
                    nodes += 1;
                }
                (Record::Session { id, value }, _) => {
                    if last_token.is_some() || last_plugin.is_some() || last_session.is_some_and(|s| s >= id) {
                        return Err(corrupt("sessions out of order"));
                    }
                    digest.add(RecordKind::Session, &id.to_be_bytes(), &value);
                    session_table.insert(id, value.as_slice()).map_err(StoreError::from)?;
                    last_session = Some(id);
                    sessions += 1;
                }
                (Record::Token { id, value }, _) => {
                    if last_plugin.is_some() || last_token.as_ref().is_some_and(|t| *t >= id) {
                        return Err(corrupt("tokens out of order"));
                    }
                    digest.add(RecordKind::Token, id.as_bytes(), &value);
                    token_table.insert(id.as_str(), value.as_slice()).map_err(StoreError::from)?;
                    last_token = Some(id);
                }
                (Record::Plugin { table, key, value }, _) => {
                    let Some((kind, _)) = tree::PLUGIN_TABLES.get(table as usize) else {
                        return Err(corrupt(format!("plugin table {table}")));
                    };
                    let at = (table, key);
                    if last_plugin.as_ref().is_some_and(|last| *last >= at) {
                        return Err(corrupt("plugin records out of order"));
                    }
                    digest.add(*kind, &at.1, &value);
                    plugin_tables[table as usize]
                        .insert(at.1.as_slice(), value.as_slice())
                        .map_err(StoreError::from)?;
                    last_plugin = Some(at);
                }
                (Record::End { nodes: n, sessions: s, checksum }, before) => {
                    if (n, s) != (nodes, sessions) {
                        return Err(corrupt(format!("end record counts {n}/{s}, read {nodes}/{sessions}")));
                    }
                    if checksum != before {
                        return Err(corrupt("checksum mismatch"));
                    }
                    break;
                }
                (Record::Header { .. }, _) => return Err(corrupt("second header")),
            }
        }
    }
    if let Some(init) = &meta.init {
        let bytes = postcard::to_allocvec(&init.config).expect("config encodes");
        digest.add(RecordKind::Config, b"config", &bytes);
    }
    if digest != meta.digest {
        return Err(corrupt(format!("digest {:x} of the records, {:x} in the header", digest.0, meta.digest.0)));
    }
    txn.open_table(META)
        .map_err(StoreError::from)?
        .insert("meta", postcard::to_allocvec(&meta).expect("meta encodes").as_slice())
        .map_err(StoreError::from)?;
    txn.commit().map_err(StoreError::from)?;
    Ok(meta)
}
