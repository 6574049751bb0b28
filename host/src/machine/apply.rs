//! The state transition: one committed command in, the changed tables and an
//! [`Applied`] outcome out.
//!
//! Each check follows ZooKeeper's order (`PrepRequestProcessor`), so the same
//! failing request gets the same error code from both servers. A command's
//! node changes are staged in memory and reach the tables only when the whole
//! command succeeded: a failed `multi` leaves nothing behind.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, WriteTransaction};
use sha2::{Digest as _, Sha256};

use super::acl;
use super::command::{ClusterConfig, Command, Identity, Op, Origin, Write};
use super::plugins::{Hooks, PluginEnv};
use super::{Applied, Event, Member, Meta, Reply, SessionChange, WriteResult};
use crate::proto::data::{Acl, CreateMode, Id, perms};
use crate::proto::error::ErrorCode;
use crate::proto::op;
use crate::proto::request::{CreateRequest, MultiOp};
use crate::proto::response::EventType;
use crate::tree::{
    self, BLOBS, CONTAINER_OWNER, EPHEMERALS, NODES, Node, Owner, PLUGINS, REAPABLE, RecordKind, SESSIONS, Scope,
    Session, StoreError, TOKENS, TTL_OWNER_MASK, Token, UPLOADS, path,
};

/// Largest TTL ZooKeeper accepts: 2^40 - 1 ms.
pub const MAX_TTL_MS: i64 = (1 << 40) - 1;

/// Paths that may not be deleted (ZooKeeper's `isSpecialPath`).
const SPECIAL_PATHS: [&str; 4] = ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"];

/// The replicated tables, open inside one write transaction.
pub struct Tables<'t> {
    pub nodes: Table<'t, &'static [u8], &'static [u8]>,
    pub sessions: Table<'t, u64, &'static [u8]>,
    pub ephemerals: Table<'t, &'static [u8], ()>,
    pub reapable: Table<'t, &'static [u8], ()>,
    pub tokens: Table<'t, &'static str, &'static [u8]>,
    pub plugins: Table<'t, &'static [u8], &'static [u8]>,
    pub blobs: Table<'t, &'static [u8], &'static [u8]>,
    pub uploads: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            nodes: txn.open_table(NODES)?,
            sessions: txn.open_table(SESSIONS)?,
            ephemerals: txn.open_table(EPHEMERALS)?,
            reapable: txn.open_table(REAPABLE)?,
            tokens: txn.open_table(TOKENS)?,
            plugins: txn.open_table(PLUGINS)?,
            blobs: txn.open_table(BLOBS)?,
            uploads: txn.open_table(UPLOADS)?,
        })
    }

    /// Writes one token, or deletes it, keeping the digest in step.
    pub fn write_token(&mut self, meta: &mut Meta, id: &str, new: Option<&Token>) -> Result<(), StoreError> {
        if let Some(v) = self.tokens.get(id)? {
            meta.digest.remove(RecordKind::Token, id.as_bytes(), v.value());
        }
        match new {
            Some(t) => {
                let bytes = postcard::to_allocvec(t).expect("a token always encodes");
                meta.digest.add(RecordKind::Token, id.as_bytes(), &bytes);
                self.tokens.insert(id, bytes.as_slice())?;
            }
            None => {
                self.tokens.remove(id)?;
            }
        }
        Ok(())
    }

    /// Writes one node, or deletes it, keeping the ephemeral index and the
    /// digest in step.
    pub fn write_node(&mut self, meta: &mut Meta, p: &str, new: Option<&Node>) -> Result<(), StoreError> {
        let key = path::key(p);
        let old = match self.nodes.get(key.as_slice())? {
            Some(v) => {
                meta.digest.remove(RecordKind::Node, &key, v.value());
                Some(Node::decode(v.value()).map_err(|err| StoreError::Corrupt { what: "node", err })?)
            }
            None => None,
        };
        if let Some(old) = &old {
            meta.node_count -= 1;
            meta.data_bytes -= old.data.as_ref().map_or(0, |d| d.len() as u64);
            if let Some(session) = old.session_owner() {
                meta.ephemeral_count -= 1;
                self.ephemerals.remove(tree::ephemeral_key(session, p).as_slice())?;
            }
            if old.is_reapable() {
                self.reapable.remove(key.as_slice())?;
            }
        }
        match new {
            Some(node) => {
                let bytes = node.encode();
                meta.digest.add(RecordKind::Node, &key, &bytes);
                meta.node_count += 1;
                meta.data_bytes += node.data.as_ref().map_or(0, |d| d.len() as u64);
                self.nodes.insert(key.as_slice(), bytes.as_slice())?;
                if let Some(session) = node.session_owner() {
                    meta.ephemeral_count += 1;
                    self.ephemerals.insert(tree::ephemeral_key(session, p).as_slice(), ())?;
                }
                if node.is_reapable() {
                    self.reapable.insert(key.as_slice(), ())?;
                }
            }
            None => {
                self.nodes.remove(key.as_slice())?;
            }
        }
        Ok(())
    }

    /// Writes one session, or deletes it, keeping the digest in step.
    pub fn write_session(&mut self, meta: &mut Meta, id: i64, new: Option<&Session>) -> Result<(), StoreError> {
        let key = (id as u64).to_be_bytes();
        if let Some(v) = self.sessions.get(id as u64)? {
            meta.digest.remove(RecordKind::Session, &key, v.value());
        }
        match new {
            Some(s) => {
                let bytes = s.encode();
                meta.digest.add(RecordKind::Session, &key, &bytes);
                self.sessions.insert(id as u64, bytes.as_slice())?;
            }
            None => {
                self.sessions.remove(id as u64)?;
            }
        }
        Ok(())
    }
}

/// The nodes every tree starts with, all with zxid 0 and time 0. As in
/// ZooKeeper, their children were added without counting as creations, so
/// `/` shows cversion -1 and `/zookeeper` -2.
pub fn initial_nodes() -> Vec<(&'static str, Node)> {
    let node = |children: i32, acl| Node {
        czxid: 0,
        mzxid: 0,
        ctime: 0,
        mtime: 0,
        version: 0,
        child_creations: 0,
        aversion: 0,
        owner: 0,
        num_children: children,
        pzxid: 0,
        acl,
        data: Some(Vec::new()),
    };
    let read_only = vec![Acl { perms: perms::READ, id: Id::new("world", "anyone") }];
    // ZooKeeper creates /zookeeper/config with aversion -1.
    let config = Node { aversion: -1, ..node(0, read_only) };
    vec![
        ("/", node(1, Acl::open())),
        ("/zookeeper", node(2, Acl::open())),
        ("/zookeeper/config", config),
        ("/zookeeper/quota", node(0, Acl::open())),
    ]
}

/// Applies a membership entry: the members and their roles are now
/// `members` (id to Raft address and whether it votes), the addresses they
/// published are kept, and `/zookeeper/config` shows the new membership.
pub fn apply_membership(
    tables: &mut Tables<'_>,
    meta: &mut Meta,
    index: u64,
    members: &BTreeMap<u64, (String, bool)>,
) -> Result<Applied, StoreError> {
    let old = std::mem::take(&mut meta.members);
    for (id, (raft_addr, voter)) in members {
        let known = old.get(id).cloned().unwrap_or_default();
        meta.members.insert(*id, Member { raft_addr: raft_addr.clone(), voter: *voter, ..known });
    }
    meta.config_version = index;
    let events = write_config_node(tables, meta, index, meta.last_time_ms)?.into_iter().collect();
    Ok(Applied { index, origin: None, reply: Reply::None, events, session: None })
}

/// `/zookeeper/config` in ZooKeeper's dynamic-config format, one line per
/// member (`server.<id>=<host>:<port>:<port>:<role>;<client address>`; the
/// Raft address stands for both of ZooKeeper's quorum and election ports)
/// and then `version=<hex zxid of the membership>`.
///
/// A lone voter is a standalone server, and like a standalone ZooKeeper it
/// shows an empty config.
pub fn render_config(meta: &Meta) -> String {
    let mut out = String::new();
    if meta.members.len() == 1 && meta.members.values().all(|m| m.voter) {
        return out;
    }
    for (id, m) in &meta.members {
        let role = if m.voter { "participant" } else { "observer" };
        let (host, port) = m.raft_addr.rsplit_once(':').unwrap_or((&m.raft_addr, "0"));
        out.push_str(&format!("server.{id}={host}:{port}:{port}:{role}"));
        if let Some(c) = &m.client_addr {
            out.push_str(&format!(";{c}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("version={:x}", meta.config_version));
    out
}

/// Rewrites `/zookeeper/config` if its content changed; returns its event.
fn write_config_node(
    tables: &mut Tables<'_>,
    meta: &mut Meta,
    index: u64,
    time: i64,
) -> Result<Option<Event>, StoreError> {
    const PATH: &str = "/zookeeper/config";
    let mut node = tree::get_node(&tables.nodes, PATH)?.expect("every tree has /zookeeper/config");
    let data = render_config(meta).into_bytes();
    if node.data.as_deref().unwrap_or_default() == data.as_slice() {
        return Ok(None);
    }
    node.data = Some(data);
    node.version = node.version.wrapping_add(1);
    node.mzxid = index as i64;
    node.mtime = time;
    tables.write_node(meta, PATH, Some(&node))?;
    Ok(Some(Event { kind: EventType::NodeDataChanged, path: PATH.to_owned(), acl: node.acl }))
}

/// The 16-byte password of a session: derived from the cluster secret, so
/// every member computes the same one and none is stored.
pub fn session_password(secret: &[u8; 32], session: i64) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(session.to_be_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// The id of the session created by the entry at `index` from `node`: the
/// node id in the top byte, as ZooKeeper does, and the log index below it,
/// which no other entry shares.
pub fn session_id(node: u64, index: u64) -> i64 {
    ((node << 56) | (index & 0x00FF_FFFF_FFFF_FFFF)) as i64
}

/// Applies one entry's command. `meta` is updated in place.
pub fn apply_command(
    tables: &mut Tables<'_>,
    meta: &mut Meta,
    index: u64,
    cmd: &Command,
    plugins: Option<&PluginEnv>,
) -> Result<Applied, StoreError> {
    meta.last_time_ms = meta.last_time_ms.max(cmd.time_ms);
    let mut a = Apply { tables, meta, index, time: 0, events: Vec::new(), plugins };
    a.time = a.meta.last_time_ms;
    let (reply, session) = a.command(cmd)?;
    Ok(Applied { index, origin: cmd.origin, reply, events: a.events, session })
}

/// One command's apply: the tables, the machine record, and what the
/// command did so far.
pub(super) struct Apply<'a, 't> {
    pub(super) tables: &'a mut Tables<'t>,
    pub(super) meta: &'a mut Meta,
    pub(super) index: u64,
    pub(super) time: i64,
    pub(super) events: Vec<Event>,
    pub(super) plugins: Option<&'a PluginEnv>,
}

impl Apply<'_, '_> {
    fn zxid(&self) -> i64 {
        self.index as i64
    }

    fn config(&self) -> Option<&ClusterConfig> {
        self.meta.init.as_ref().map(|i| &i.config)
    }

    fn command(&mut self, cmd: &Command) -> Result<(Reply, Option<SessionChange>), StoreError> {
        let Some(init) = self.meta.init.clone() else {
            if let Op::Init { config, secret, admin_token } = &cmd.op {
                self.meta.init = Some(super::InitState { config: config.clone(), secret: *secret });
                let bytes = postcard::to_allocvec(config).expect("config encodes");
                self.meta.digest.add(RecordKind::Config, b"config", &bytes);
                let token = Token {
                    id: Token::id_of(admin_token),
                    hash: *admin_token,
                    name: "bootstrap-admin".into(),
                    scopes: vec![Scope::Admin],
                    created_ms: self.time,
                };
                self.tables.write_token(self.meta, &token.id.clone(), Some(&token))?;
            }
            // Nothing but `Init` can run before the cluster is initialized.
            return Ok((Reply::None, None));
        };
        match &cmd.op {
            Op::Init { .. } => Ok((Reply::None, None)),
            Op::CreateSession { timeout_ms, http } => {
                let Some(origin) = cmd.origin else {
                    return Ok((Reply::None, None));
                };
                let id = session_id(origin.node, self.index);
                let timeout_ms = init.config.negotiate(*timeout_ms);
                let owner = Owner { node: origin.node, conn: if *http { 0 } else { origin.conn } };
                let session = Session { timeout_ms, owner, http: *http };
                self.tables.write_session(self.meta, id, Some(&session))?;
                let password = session_password(&init.secret, id);
                Ok((
                    Reply::Connected { session: id, password, timeout_ms },
                    Some(SessionChange::Opened { id, timeout_ms, owner }),
                ))
            }
            Op::ResumeSession { session } => {
                let Some(origin) = cmd.origin else {
                    return Ok((Reply::None, None));
                };
                let Some(mut s) = tree::get_session(&self.tables.sessions, *session)? else {
                    return Ok((Reply::ConnectRefused, None));
                };
                let previous = s.owner;
                s.owner = Owner { node: origin.node, conn: origin.conn };
                self.tables.write_session(self.meta, *session, Some(&s))?;
                let password = session_password(&init.secret, *session);
                Ok((
                    Reply::Connected { session: *session, password, timeout_ms: s.timeout_ms },
                    Some(SessionChange::Resumed { id: *session, timeout_ms: s.timeout_ms, owner: s.owner, previous }),
                ))
            }
            Op::CloseSession { session } => {
                if let Err(e) = self.check_session(Some(*session), cmd.origin)? {
                    return Ok((Reply::Write(Err(e)), None));
                }
                let owner = self.end_session(*session)?;
                Ok((Reply::Closed, owner.map(|owner| SessionChange::Ended { id: *session, owner })))
            }
            Op::ExpireSession { session } => {
                let owner = self.end_session(*session)?;
                Ok((Reply::None, owner.map(|owner| SessionChange::Ended { id: *session, owner })))
            }
            Op::Write { session, identity, write } => {
                let checks = match self.check_token(identity, Scope::Write)? {
                    Ok(()) => self.check_session(*session, cmd.origin)?,
                    Err(e) => Err(e),
                };
                if let Err(e) = checks {
                    return Ok((Reply::Write(Err(e)), None));
                }
                Ok((self.write(*session, identity, write)?, None))
            }
            Op::Call { session, identity, plugin, args } => {
                let checks = match self.check_token(identity, Scope::Write)? {
                    Ok(()) => self.check_session(*session, cmd.origin)?,
                    Err(e) => Err(e),
                };
                if let Err(e) = checks {
                    return Ok((Reply::Write(Err(e)), None));
                }
                Ok((self.plugin_call(*session, identity, plugin, args)?, None))
            }
            Op::PluginChunk { upload, offset, total, data, identity } => {
                Ok((self.plugin_chunk(upload, *offset, *total, data, identity)?, None))
            }
            Op::PluginDeploy(d) => Ok((self.plugin_deploy(d)?, None)),
            Op::PluginRollback { name, identity } => Ok((self.plugin_rollback(name, identity)?, None)),
            Op::PluginRemove { name, identity } => Ok((self.plugin_remove(name, identity)?, None)),
            Op::PluginEnable { name, enabled, identity } => Ok((self.plugin_enable(name, *enabled, identity)?, None)),
            Op::PluginEngine { action, identity } => Ok((self.plugin_engine(action, identity)?, None)),
            Op::MemberBuild { node, version, engine } => {
                let Some(m) = self.meta.members.get_mut(node) else {
                    return Ok((Reply::Write(Err(ErrorCode::NoNode)), None));
                };
                m.version = Some(version.clone());
                m.engine = Some(engine.clone());
                Ok((Reply::Write(Ok(WriteResult::Checked)), None))
            }
            Op::Reap { path, never_used_ms } => {
                self.reap(path, *never_used_ms)?;
                Ok((Reply::None, None))
            }
            Op::CreateToken { hash, name, scopes, identity } => {
                let result = match self.check_admin(identity)? {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let id = Token::id_of(hash);
                        if tree::get_token(&self.tables.tokens, &id)?.is_some() {
                            Err(ErrorCode::NodeExists)
                        } else {
                            let token = Token {
                                id: id.clone(),
                                hash: *hash,
                                name: name.clone(),
                                scopes: scopes.clone(),
                                created_ms: self.time,
                            };
                            self.tables.write_token(self.meta, &id, Some(&token))?;
                            Ok(WriteResult::Token { id })
                        }
                    }
                };
                Ok((Reply::Write(result), None))
            }
            Op::MemberInfo { node, client_addr, http_addr } => {
                let Some(m) = self.meta.members.get_mut(node) else {
                    return Ok((Reply::Write(Err(ErrorCode::NoNode)), None));
                };
                m.client_addr = Some(client_addr.clone());
                m.http_addr = Some(http_addr.clone());
                self.events.extend(write_config_node(self.tables, self.meta, self.index, self.time)?);
                Ok((Reply::Write(Ok(WriteResult::Checked)), None))
            }
            Op::RevokeToken { id, identity } => {
                let result = match self.check_admin(identity)? {
                    Err(e) => Err(e),
                    Ok(()) if tree::get_token(&self.tables.tokens, id)?.is_none() => Err(ErrorCode::NoNode),
                    Ok(()) => {
                        self.tables.write_token(self.meta, id, None)?;
                        Ok(WriteResult::Token { id: id.clone() })
                    }
                };
                Ok((Reply::Write(result), None))
            }
        }
    }

    /// Deletes a container that is empty and has had children (or was never
    /// used for `never_used_ms`), or a TTL node that is empty and unchanged
    /// for its TTL, judged by this entry's time. Otherwise nothing.
    fn reap(&mut self, p: &str, never_used_ms: Option<i64>) -> Result<(), StoreError> {
        let Some(node) = tree::get_node(&self.tables.nodes, p)? else { return Ok(()) };
        let idle = self.time - node.mtime;
        let due = node.num_children == 0
            && match node.ttl_ms() {
                Some(ttl) => idle > ttl,
                None => node.is_container() && (node.child_creations != 0 || never_used_ms.is_some_and(|n| idle > n)),
            };
        if due {
            let mut staged = Staged::default();
            self.remove_node(&mut staged, p)?;
            self.run_hooks(&mut staged, None, &Identity::system(), Hooks::System)?
                .expect("system changes are not refused");
            self.commit(staged)?;
        }
        Ok(())
    }

    /// For admin API requests: `NoAuth` unless the request's token still
    /// exists and grants `needed`.
    pub(super) fn check_token(&self, identity: &Identity, needed: Scope) -> Result<Result<(), ErrorCode>, StoreError> {
        let Some(id) = &identity.token else { return Ok(Ok(())) };
        Ok(match tree::get_token(&self.tables.tokens, id)? {
            Some(t) if t.allows(needed) => Ok(()),
            _ => Err(ErrorCode::NoAuth),
        })
    }

    /// Token management needs a live admin token.
    fn check_admin(&self, identity: &Identity) -> Result<Result<(), ErrorCode>, StoreError> {
        if identity.token.is_none() {
            return Ok(Err(ErrorCode::NoAuth));
        }
        self.check_token(identity, Scope::Admin)
    }

    /// `SessionExpired` unless the session is live at this index;
    /// `SessionMoved` if the command came from a connection that no longer
    /// owns it (admin API sessions have no owning connection). No session at
    /// all is fine: admin API writes may run outside one.
    fn check_session(&self, session: Option<i64>, origin: Option<Origin>) -> Result<Result<(), ErrorCode>, StoreError> {
        let Some(session) = session else { return Ok(Ok(())) };
        let Some(s) = tree::get_session(&self.tables.sessions, session)? else {
            return Ok(Err(ErrorCode::SessionExpired));
        };
        if let Some(o) = origin
            && !s.http
            && (Owner { node: o.node, conn: o.conn }) != s.owner
        {
            return Ok(Err(ErrorCode::SessionMoved));
        }
        Ok(Ok(()))
    }

    /// Deletes a session and its ephemerals, firing their watches. Returns
    /// its last owner, or `None` if it was already gone.
    fn end_session(&mut self, session: i64) -> Result<Option<Owner>, StoreError> {
        let Some(s) = tree::get_session(&self.tables.sessions, session)? else {
            return Ok(None);
        };
        let paths = tree::session_ephemerals(&self.tables.ephemerals, session)?;
        let mut staged = Staged::default();
        for p in &paths {
            // An ephemeral has no children, so deleting it cannot fail.
            let node = self.get(&staged, p)?.expect("indexed ephemeral exists");
            assert_eq!(node.session_owner(), Some(session), "ephemeral index out of step at {p}");
            self.remove_node(&mut staged, p)?;
        }
        self.run_hooks(&mut staged, None, &Identity::system(), Hooks::System)?.expect("system changes are not refused");
        self.commit(staged)?;
        self.tables.write_session(self.meta, session, None)?;
        Ok(Some(s.owner))
    }

    fn write(&mut self, session: Option<i64>, who: &Identity, write: &Write) -> Result<Reply, StoreError> {
        let mut staged = Staged::default();
        let result = match write {
            Write::Create { opcode, req } => self.create(&mut staged, session, who, *opcode, req),
            Write::Delete { path, version } => self.delete(&mut staged, who, path, *version),
            Write::SetData { path, data, version } => self.set_data(&mut staged, who, path, data, *version),
            Write::SetAcl { path, acl, version } => self.set_acl(&mut staged, who, path, acl, *version),
            Write::Sync { path } => Ok(WriteResult::Synced { path: path.clone() }),
            Write::DeleteContainer { path } => self.delete_container(&mut staged, who, path),
            Write::Multi(ops) => self.multi(&mut staged, session, who, ops),
        };
        match result {
            // A failed multi is a successful reply of errors: nothing staged.
            Ok(r) => match self.run_hooks(&mut staged, session, who, Hooks::Client)? {
                Ok(()) => {
                    self.commit(staged)?;
                    Ok(Reply::Write(Ok(r)))
                }
                Err(rejection) => {
                    self.events.clear();
                    Ok(Reply::Rejected { code: rejection.code, message: rejection.message })
                }
            },
            Err(Fail::Code(e)) => {
                // The staged changes and their events are dropped.
                self.events.clear();
                Ok(Reply::Write(Err(e)))
            }
            Err(Fail::Store(e)) => Err(e),
        }
    }

    /// All ops or none. A failed multi is still a successful reply whose
    /// results are all errors: OK before the failing op, its code, then
    /// RuntimeInconsistency after it.
    fn multi(
        &mut self,
        staged: &mut Staged,
        session: Option<i64>,
        who: &Identity,
        ops: &[MultiOp],
    ) -> Result<WriteResult, Fail> {
        let mut results = Vec::with_capacity(ops.len());
        for (at, op) in ops.iter().enumerate() {
            let r = match op {
                MultiOp::Create { opcode, req } => self.create(staged, session, who, *opcode, req),
                MultiOp::Delete { path, version } => self.delete(staged, who, path, *version),
                MultiOp::SetData { path, data, version } => self.set_data(staged, who, path, data, *version),
                MultiOp::Check { path, version } => self.check(staged, who, path, *version),
            };
            match r {
                Ok(r) => results.push(r),
                Err(Fail::Code(err)) => {
                    let codes = (0..ops.len())
                        .map(|i| match i.cmp(&at) {
                            std::cmp::Ordering::Less => 0,
                            std::cmp::Ordering::Equal => err.code(),
                            std::cmp::Ordering::Greater => ErrorCode::RuntimeInconsistency.code(),
                        })
                        .collect();
                    staged.nodes.clear();
                    self.events.clear();
                    return Ok(WriteResult::Multi(Err(codes)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(WriteResult::Multi(Ok(results)))
    }

    pub(super) fn get(&self, staged: &Staged, p: &str) -> Result<Option<Node>, StoreError> {
        match staged.nodes.get(p) {
            Some(n) => Ok(n.clone()),
            None => tree::get_node(&self.tables.nodes, p),
        }
    }

    pub(super) fn commit(&mut self, staged: Staged) -> Result<(), StoreError> {
        for (p, node) in staged.nodes {
            self.tables.write_node(self.meta, &p, node.as_ref())?;
        }
        Ok(())
    }

    fn check_data_size(&self, data: &Option<Vec<u8>>) -> Result<(), Fail> {
        let max = self.config().map_or(u32::MAX, |c| c.max_data_bytes) as usize;
        match data {
            Some(d) if d.len() > max => Err(ErrorCode::BadArguments.into()),
            _ => Ok(()),
        }
    }

    pub(super) fn create(
        &mut self,
        staged: &mut Staged,
        session: Option<i64>,
        who: &Identity,
        opcode: i32,
        req: &CreateRequest,
    ) -> Result<WriteResult, Fail> {
        let mode = CreateMode::from_flags(req.flags).ok_or(ErrorCode::BadArguments)?;
        // ZooKeeper's validateCreateRequest: TTL modes need extended types
        // and a TTL in range; a TTL with any other mode is refused. Only
        // createTTL carries a TTL; the others count as -1.
        if mode.is_ttl() || opcode == op::CREATE_TTL {
            if !self.config().is_some_and(|c| c.extended_types) {
                return Err(ErrorCode::Unimplemented.into());
            }
            let ttl = if opcode == op::CREATE_TTL { req.ttl.unwrap_or(0) } else { -1 };
            if mode.is_ttl() != (1..=MAX_TTL_MS).contains(&ttl) || (!mode.is_ttl() && ttl >= 0) {
                return Err(ErrorCode::BadArguments.into());
            }
        }
        if req.path.contains('\0') {
            return Err(ErrorCode::BadArguments.into());
        }
        let (parent_path, _) = path::split(&req.path).ok_or(ErrorCode::BadArguments)?;
        let acl = acl::fixup(&req.acl, who)?;
        let mut parent = self.get(staged, parent_path)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&parent.acl, who, perms::CREATE)?;
        let mut p = req.path.clone();
        if mode.is_sequential() {
            p.push_str(&format!("{:010}", parent.child_creations));
        }
        path::validate(&p).map_err(|_| ErrorCode::BadArguments)?;
        if self.get(staged, &p)?.is_some() {
            return Err(ErrorCode::NodeExists.into());
        }
        if parent.session_owner().is_some() {
            return Err(ErrorCode::NoChildrenForEphemerals.into());
        }
        self.check_data_size(&req.data)?;
        let owner = match mode {
            // An ephemeral needs a session to belong to.
            m if m.is_ephemeral() => session.ok_or(ErrorCode::BadArguments)?,
            CreateMode::Container => CONTAINER_OWNER,
            m if m.is_ttl() => TTL_OWNER_MASK | req.ttl.unwrap_or(0),
            _ => 0,
        };
        let zxid = self.zxid();
        let node = Node {
            czxid: zxid,
            mzxid: zxid,
            ctime: self.time,
            mtime: self.time,
            version: 0,
            child_creations: 0,
            aversion: 0,
            owner,
            num_children: 0,
            pzxid: zxid,
            acl,
            data: req.data.clone(),
        };
        let stat = node.stat();
        let parent_path = parent_path.to_owned();
        parent.child_creations = parent.child_creations.wrapping_add(1);
        parent.num_children += 1;
        parent.pzxid = zxid;
        self.events.push(Event { kind: EventType::NodeCreated, path: p.clone(), acl: node.acl.clone() });
        self.events.push(Event {
            kind: EventType::NodeChildrenChanged,
            path: parent_path.clone(),
            acl: parent.acl.clone(),
        });
        staged.nodes.insert(parent_path, Some(parent));
        staged.nodes.insert(p.clone(), Some(node));
        Ok(WriteResult::Created { path: p, stat })
    }

    pub(super) fn delete(
        &mut self,
        staged: &mut Staged,
        who: &Identity,
        p: &str,
        version: i32,
    ) -> Result<WriteResult, Fail> {
        path::validate(p).map_err(|_| ErrorCode::BadArguments)?;
        if SPECIAL_PATHS.contains(&p) {
            return Err(ErrorCode::BadArguments.into());
        }
        let (parent_path, _) = path::split(p).expect("valid non-root path has a parent");
        let parent = self.get(staged, parent_path)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&parent.acl, who, perms::DELETE)?;
        let node = self.get(staged, p)?.ok_or(ErrorCode::NoNode)?;
        if version != -1 && version != node.version {
            return Err(ErrorCode::BadVersion.into());
        }
        if node.num_children > 0 {
            return Err(ErrorCode::NotEmpty.into());
        }
        self.remove_node(staged, p)?;
        Ok(WriteResult::Deleted)
    }

    /// `deleteContainer`: an empty container only.
    fn delete_container(&mut self, staged: &mut Staged, who: &Identity, p: &str) -> Result<WriteResult, Fail> {
        path::validate(p).map_err(|_| ErrorCode::BadArguments)?;
        let (parent_path, _) = path::split(p).ok_or(ErrorCode::BadArguments)?;
        let parent = self.get(staged, parent_path)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&parent.acl, who, perms::DELETE)?;
        let node = self.get(staged, p)?.ok_or(ErrorCode::NoNode)?;
        if !node.is_container() {
            return Err(ErrorCode::BadArguments.into());
        }
        if node.num_children > 0 {
            return Err(ErrorCode::NotEmpty.into());
        }
        self.remove_node(staged, p)?;
        Ok(WriteResult::Deleted)
    }

    /// Removes a node known to exist and to have no children.
    fn remove_node(&mut self, staged: &mut Staged, p: &str) -> Result<(), StoreError> {
        let (parent_path, _) = path::split(p).expect("valid non-root path has a parent");
        let mut parent = self.get(staged, parent_path)?.expect("a node's parent exists");
        let node = self.get(staged, p)?.expect("a removed node exists");
        parent.num_children -= 1;
        parent.pzxid = self.zxid();
        assert!(parent.num_children >= 0, "negative child count under {parent_path}");
        self.events.push(Event { kind: EventType::NodeDeleted, path: p.to_owned(), acl: node.acl });
        self.events.push(Event {
            kind: EventType::NodeChildrenChanged,
            path: parent_path.to_owned(),
            acl: parent.acl.clone(),
        });
        staged.nodes.insert(parent_path.to_owned(), Some(parent));
        staged.nodes.insert(p.to_owned(), None);
        Ok(())
    }

    pub(super) fn set_data(
        &mut self,
        staged: &mut Staged,
        who: &Identity,
        p: &str,
        data: &Option<Vec<u8>>,
        version: i32,
    ) -> Result<WriteResult, Fail> {
        path::validate(p).map_err(|_| ErrorCode::BadArguments)?;
        let mut node = self.get(staged, p)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&node.acl, who, perms::WRITE)?;
        self.check_data_size(data)?;
        if version != -1 && version != node.version {
            return Err(ErrorCode::BadVersion.into());
        }
        node.data = data.clone();
        node.version = node.version.wrapping_add(1);
        node.mzxid = self.zxid();
        node.mtime = self.time;
        let stat = node.stat();
        self.events.push(Event { kind: EventType::NodeDataChanged, path: p.to_owned(), acl: node.acl.clone() });
        staged.nodes.insert(p.to_owned(), Some(node));
        Ok(WriteResult::SetData { stat })
    }

    fn set_acl(
        &mut self,
        staged: &mut Staged,
        who: &Identity,
        p: &str,
        acl: &[Acl],
        version: i32,
    ) -> Result<WriteResult, Fail> {
        path::validate(p).map_err(|_| ErrorCode::BadArguments)?;
        let mut node = self.get(staged, p)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&node.acl, who, perms::ADMIN)?;
        let acl = acl::fixup(acl, who)?;
        if version != -1 && version != node.aversion {
            return Err(ErrorCode::BadVersion.into());
        }
        node.acl = acl;
        node.aversion = node.aversion.wrapping_add(1);
        let stat = node.stat();
        staged.nodes.insert(p.to_owned(), Some(node));
        Ok(WriteResult::SetAcl { stat })
    }

    fn check(&self, staged: &Staged, who: &Identity, p: &str, version: i32) -> Result<WriteResult, Fail> {
        path::validate(p).map_err(|_| ErrorCode::BadArguments)?;
        let node = self.get(staged, p)?.ok_or(ErrorCode::NoNode)?;
        acl::check(&node.acl, who, perms::READ)?;
        if version != -1 && version != node.version {
            return Err(ErrorCode::BadVersion.into());
        }
        Ok(WriteResult::Checked)
    }
}

/// Why one op of a command failed: a client error, which is the command's
/// replicated outcome, or a storage error, which stops this node's apply.
pub(super) enum Fail {
    Code(ErrorCode),
    Store(StoreError),
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Self {
        Fail::Code(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Node changes of one command, by path; `None` is a deletion.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) nodes: BTreeMap<String, Option<Node>>,
}
