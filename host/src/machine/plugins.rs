//! Plugins as replicated state, and running them inside an entry's apply.
//!
//! - Deploys arrive as `PluginChunk` entries (the code, in pieces, kept in
//!   `plugin_uploads`) and one `PluginDeploy` entry that checks the size and
//!   SHA-256, stores the code in `plugin_blobs`, and makes it the active
//!   version of a [`PluginRecord`] in `plugins`. The last
//!   [`KEEP_VERSIONS`] versions are kept for rollback.
//! - A recipe `Call` runs the plugin against the entry's copy-on-write
//!   overlay ([`Staged`]); an error or a trap drops the overlay.
//! - Every client write, recipe or trigger write under a bound path runs
//!   the bound validators (any veto drops the entry's changes) and then the
//!   triggers (their writes join the entry; they do not run triggers again).
//!
//! Plugin records count calls, traps and fuel: they are replicated state,
//! in the digest, so members that ran a plugin differently diverge visibly.
//! A host fault, or an engine fingerprint that differs from the cluster's,
//! halts this node's apply ([`StoreError::Halt`]) instead of recording an
//! outcome.

use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::apply::{Apply, Fail, Staged};
use super::command::{Deploy, EngineAction, Identity};
use super::{Reply, WriteResult};
use crate::plugin::{
    Access, AccessError, CallError, ChangeKind, Context, Kind, Limits, Mode, PluginChange, Request, Runtime, hex,
};
use crate::proto::data::{Acl, Stat};
use crate::proto::error::ErrorCode;
use crate::proto::op;
use crate::proto::request::CreateRequest;
use crate::tree::{self, RecordKind, Scope, StoreError, path};

/// Versions of a plugin kept for rollback.
pub const KEEP_VERSIONS: usize = 5;
/// Largest plugin code.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// An upload not deployed within this long is dropped.
pub const UPLOAD_TTL_MS: i64 = 3_600_000;
/// Largest piece of code in one entry.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// What the node gives the machine to run plugins with. It decides no
/// outcome: its fingerprint is checked against the cluster's first.
pub struct PluginEnv {
    pub runtime: Arc<Runtime>,
}

/// One deployed version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    pub sha256: [u8; 32],
    pub size: u64,
    /// The entry that deployed it.
    pub index: u64,
    /// The interfaces it imports, as checked at deploy.
    pub imports: Vec<String>,
}

/// A plugin, as replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub kind: Kind,
    /// Oldest first; the last [`KEEP_VERSIONS`].
    pub versions: Vec<PluginVersion>,
    /// Index into `versions` of the version that runs.
    pub active: usize,
    /// Path prefixes (validators and triggers).
    pub bindings: Vec<String>,
    pub limits: Limits,
    /// Consecutive traps after which the plugin is disabled.
    pub breaker: u32,
    pub consecutive_traps: u32,
    /// Disabled by its breaker: recipes fail, validators veto, triggers
    /// fail the entry, until a deploy or rollback.
    pub disabled: bool,
    pub calls: u64,
    pub traps: u64,
    /// Fuel consumed by all calls: the same on every member.
    pub fuel: u64,
}

impl PluginRecord {
    pub fn active_version(&self) -> &PluginVersion {
        &self.versions[self.active]
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("plugin records encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<PluginRecord, StoreError> {
        postcard::from_bytes(bytes).map_err(|err| StoreError::Corrupt { what: "plugin", err })
    }

    /// Whether `p` is one of this plugin's paths or below one.
    fn binds(&self, p: &str) -> bool {
        self.bindings
            .iter()
            .any(|b| p == b || (p.starts_with(b.as_str()) && p.as_bytes().get(b.len()) == Some(&b'/')) || b == "/")
    }
}

/// Every plugin record, in name order.
pub fn all(table: &impl ReadableTable<&'static [u8], &'static [u8]>) -> Result<Vec<PluginRecord>, StoreError> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (_, v) = item?;
        out.push(PluginRecord::decode(v.value())?);
    }
    Ok(out)
}

pub fn get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    name: &str,
) -> Result<Option<PluginRecord>, StoreError> {
    table.get(name.as_bytes())?.map(|v| PluginRecord::decode(v.value())).transpose()
}

fn upload_key(upload: &str, offset: u64) -> Vec<u8> {
    let mut k = upload.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// A valid plugin name: what a path segment may be, and short.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whose change the hooks see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// A client's write or recipe: validators may veto it.
    Client,
    /// A session's end or a reaped node: it happens regardless.
    System,
}

/// Why a plugin vetoed or failed the entry: the client's error.
#[derive(Debug)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Apply<'_, '_> {
    fn put_plugin(&mut self, rec: &PluginRecord) -> Result<(), StoreError> {
        let key = rec.name.as_bytes();
        if let Some(old) = self.tables.plugins.get(key)? {
            self.meta.digest.remove(RecordKind::Plugin, key, old.value());
        }
        let bytes = rec.encode();
        self.meta.digest.add(RecordKind::Plugin, key, &bytes);
        self.tables.plugins.insert(key, bytes.as_slice())?;
        Ok(())
    }

    fn drop_plugin(&mut self, name: &str) -> Result<(), StoreError> {
        if let Some(old) = self.tables.plugins.remove(name.as_bytes())? {
            self.meta.digest.remove(RecordKind::Plugin, name.as_bytes(), old.value());
        }
        Ok(())
    }

    /// Removes blobs no plugin version refers to any more.
    fn collect_blobs(&mut self) -> Result<(), StoreError> {
        let used: std::collections::BTreeSet<[u8; 32]> =
            all(&self.tables.plugins)?.iter().flat_map(|r| r.versions.iter().map(|v| v.sha256)).collect();
        let mut dead = Vec::new();
        for item in self.tables.blobs.iter()? {
            let (k, v) = item?;
            if !used.iter().any(|h| h.as_slice() == k.value()) {
                dead.push((k.value().to_vec(), v.value().to_vec()));
            }
        }
        for (k, v) in dead {
            self.meta.digest.remove(RecordKind::Blob, &k, &v);
            self.tables.blobs.remove(k.as_slice())?;
        }
        Ok(())
    }

    /// The node's runtime, after checking that it computes what the
    /// cluster computes.
    fn runtime(&self) -> Result<Arc<Runtime>, StoreError> {
        debug_assert!(self.meta.plugins_paused_at.is_none(), "no plugin runs while plugins are paused");
        let Some(env) = self.plugins else {
            return Err(StoreError::Halt("a plugin entry, and this node has no plugin runtime".into()));
        };
        if let Some(cluster) = &self.meta.plugin_fingerprint
            && cluster != env.runtime.fingerprint()
        {
            return Err(StoreError::Halt(format!(
                "this node's wasm engine fingerprint {} differs from the cluster's {cluster}: \
                 it must not run plugins. Run the cluster's version here, or change the cluster's \
                 engine: `corral plugin engine pause` before upgrading any member, then \
                 `corral plugin engine adopt` once all run the new one (docs/plugins.md)",
                env.runtime.fingerprint()
            )));
        }
        Ok(env.runtime.clone())
    }

    /// Why no plugin may run now, if plugins are paused.
    fn paused(&self) -> Option<String> {
        self.meta.plugins_paused_at.map(|at| {
            format!(
                "plugins are paused for an engine upgrade (since zxid 0x{at:x}); \
                 `corral plugin engine adopt` resumes them"
            )
        })
    }

    /// Pauses plugins, or adopts the engine every member runs and resumes
    /// them. Adoption is checked here, at apply, against the builds the
    /// members published: the leader's view of them may be older.
    pub(super) fn plugin_engine(&mut self, action: &EngineAction, identity: &Identity) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        match action {
            EngineAction::Pause => {
                self.meta.plugins_paused_at.get_or_insert(self.index);
            }
            EngineAction::Adopt { fingerprint } => {
                let differ: Vec<String> = self
                    .meta
                    .members
                    .iter()
                    .filter(|(_, m)| m.engine.as_ref() != Some(fingerprint))
                    .map(|(id, m)| format!("{id} ({})", m.engine.as_deref().unwrap_or("not published")))
                    .collect();
                if !differ.is_empty() {
                    return Ok(Reply::Rejected {
                        code: ErrorCode::BadArguments,
                        message: format!(
                            "not every member runs engine {fingerprint}: members {} differ",
                            differ.join(", ")
                        ),
                    });
                }
                self.meta.plugin_fingerprint = Some(fingerprint.clone());
                self.meta.plugins_paused_at = None;
            }
        }
        Ok(Reply::Write(Ok(WriteResult::Checked)))
    }

    pub(super) fn plugin_chunk(
        &mut self,
        upload: &str,
        offset: u64,
        total: u64,
        data: &[u8],
        identity: &Identity,
    ) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        if !valid_name(upload)
            || data.len() > MAX_CHUNK_BYTES
            || total > MAX_PLUGIN_BYTES
            || offset.checked_add(data.len() as u64).is_none_or(|end| end > total)
        {
            return Ok(Reply::Write(Err(ErrorCode::BadArguments)));
        }
        if offset == 0 {
            self.forget_stale_uploads()?;
        }
        let key = upload_key(upload, offset);
        if let Some(old) = self.tables.uploads.get(key.as_slice())? {
            self.meta.digest.remove(RecordKind::Upload, &key, old.value());
        }
        self.meta.digest.add(RecordKind::Upload, &key, data);
        self.tables.uploads.insert(key.as_slice(), data)?;
        // The last piece: start compiling now, off the apply path, so that
        // the deploy finds it ready.
        if offset + data.len() as u64 == total
            && let Some(env) = self.plugins
            && let Ok(bytes) = self.assemble(upload)
            && let Some(kind) = sniff_kind(&bytes)
        {
            let hash: [u8; 32] = Sha256::digest(&bytes).into();
            env.runtime.prepare(hash, kind, bytes.into());
        }
        Ok(Reply::Write(Ok(WriteResult::Checked)))
    }

    /// The pieces of `upload`, in order.
    fn assemble(&self, upload: &str) -> Result<Vec<u8>, StoreError> {
        let start = upload_key(upload, 0);
        let mut end = upload.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::new();
        for item in self.tables.uploads.range(start.as_slice()..end.as_slice())? {
            let (k, v) = item?;
            // Keys are `upload ++ 0 ++ offset`; ids are checked names, so
            // another upload's key cannot fall in this range, but a record
            // of another shape is never taken for a piece.
            let Ok(offset) = <[u8; 8]>::try_from(&k.value()[upload.len() + 1..]) else { break };
            let offset = u64::from_be_bytes(offset);
            if offset != out.len() as u64 {
                break;
            }
            out.extend_from_slice(v.value());
        }
        Ok(out)
    }

    fn forget_upload(&mut self, upload: &str) -> Result<(), StoreError> {
        let start = upload_key(upload, 0);
        let mut end = upload.as_bytes().to_vec();
        end.push(1);
        let mut gone = Vec::new();
        for item in self.tables.uploads.range(start.as_slice()..end.as_slice())? {
            let (k, v) = item?;
            gone.push((k.value().to_vec(), v.value().to_vec()));
        }
        for (k, v) in gone {
            self.meta.digest.remove(RecordKind::Upload, &k, &v);
            self.tables.uploads.remove(k.as_slice())?;
        }
        Ok(())
    }

    /// Drops uploads that never got their deploy (the uploader went away).
    /// Upload ids start with their start time (16 hex digits of ms), so
    /// age is decided by the entries' time alone.
    fn forget_stale_uploads(&mut self) -> Result<(), StoreError> {
        let mut stale = std::collections::BTreeSet::new();
        for item in self.tables.uploads.iter()? {
            let (k, _) = item?;
            let id = k.value().split(|b| *b == 0).next().unwrap_or_default();
            let started = std::str::from_utf8(id.get(..16).unwrap_or_default())
                .ok()
                .and_then(|h| i64::from_str_radix(h, 16).ok());
            if started.is_none_or(|t| t < self.time - UPLOAD_TTL_MS) {
                stale.insert(String::from_utf8_lossy(id).into_owned());
            }
        }
        for id in stale {
            self.forget_upload(&id)?;
        }
        Ok(())
    }

    pub(super) fn plugin_deploy(&mut self, d: &Deploy) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(&d.identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        let reject = |message: String| Ok(Reply::Rejected { code: ErrorCode::BadArguments, message });
        if let Some(why) = self.paused() {
            self.forget_upload(&d.upload)?;
            return reject(why);
        }
        if !valid_name(&d.upload) {
            return reject(format!("upload id {:?} is malformed", d.upload));
        }
        let bytes = self.assemble(&d.upload)?;
        self.forget_upload(&d.upload)?;
        if !valid_name(&d.name) {
            return reject(format!("plugin name {:?}: use 1 to 64 letters, digits, - and _", d.name));
        }
        if !d.limits.within_max() || d.limits.fuel == 0 {
            return reject(format!("limits over the maximum {:?}", Limits::MAX));
        }
        if matches!(d.kind, Kind::Validator | Kind::Trigger) && d.bindings.iter().any(|b| path::validate(b).is_err()) {
            return reject("bindings must be valid absolute paths".into());
        }
        if matches!(d.kind, Kind::Validator | Kind::Trigger) == d.bindings.is_empty() {
            return reject("validators and triggers need bindings; recipes and queries take none".into());
        }
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if bytes.len() as u64 != d.size || hash != d.sha256 {
            return reject(format!(
                "the upload has {} bytes with SHA-256 {}, the deploy names {} bytes with {}",
                bytes.len(),
                hex(&hash),
                d.size,
                hex(&d.sha256)
            ));
        }
        // The first deploy fixes the cluster's engine fingerprint.
        if self.meta.plugin_fingerprint.is_none() {
            self.meta.plugin_fingerprint = Some(d.fingerprint.clone());
        }
        let runtime = self.runtime()?;
        // Activation waits for the local compile (usually done since the
        // last chunk); a node that cannot compile what the deploying node
        // compiled must not go on.
        let bytes: Arc<[u8]> = bytes.into();
        runtime.ensure(hash, d.kind, || bytes.clone()).map_err(|e| StoreError::Halt(e.to_string()))?;
        if self.tables.blobs.get(hash.as_slice())?.is_none() {
            self.meta.digest.add(RecordKind::Blob, &hash, &bytes);
            self.tables.blobs.insert(hash.as_slice(), &bytes[..])?;
        }
        let version = PluginVersion { sha256: hash, size: d.size, index: self.index, imports: d.imports.clone() };
        let rec = match get(&self.tables.plugins, &d.name)? {
            Some(old) if old.kind != d.kind => {
                return reject(format!("{} is a {:?}; remove it before deploying a {:?}", d.name, old.kind, d.kind));
            }
            Some(mut old) => {
                old.versions.push(version);
                if old.versions.len() > KEEP_VERSIONS {
                    old.versions.remove(0);
                }
                old.active = old.versions.len() - 1;
                PluginRecord {
                    bindings: d.bindings.clone(),
                    limits: d.limits,
                    breaker: d.breaker,
                    consecutive_traps: 0,
                    disabled: false,
                    ..old
                }
            }
            None => PluginRecord {
                name: d.name.clone(),
                kind: d.kind,
                versions: vec![version],
                active: 0,
                bindings: d.bindings.clone(),
                limits: d.limits,
                breaker: d.breaker,
                consecutive_traps: 0,
                disabled: false,
                calls: 0,
                traps: 0,
                fuel: 0,
            },
        };
        self.put_plugin(&rec)?;
        self.collect_blobs()?;
        self.count_bound()?;
        Ok(Reply::Write(Ok(WriteResult::Plugin { name: rec.name, sha256: hash })))
    }

    pub(super) fn plugin_rollback(&mut self, name: &str, identity: &Identity) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        if let Some(message) = self.paused() {
            return Ok(Reply::Rejected { code: ErrorCode::BadArguments, message });
        }
        let Some(mut rec) = get(&self.tables.plugins, name)? else {
            return Ok(Reply::Write(Err(ErrorCode::NoNode)));
        };
        if rec.active == 0 {
            return Ok(Reply::Rejected {
                code: ErrorCode::BadArguments,
                message: format!("{name} has no earlier version to roll back to"),
            });
        }
        rec.active -= 1;
        let version = rec.active_version().clone();
        let runtime = self.runtime()?;
        let blob = self.tables.blobs.get(version.sha256.as_slice())?.map(|v| v.value().to_vec());
        let blob: Arc<[u8]> =
            blob.ok_or(StoreError::Halt(format!("plugin {name}: a kept version's code is missing")))?.into();
        runtime.ensure(version.sha256, rec.kind, || blob.clone()).map_err(|e| StoreError::Halt(e.to_string()))?;
        rec.consecutive_traps = 0;
        rec.disabled = false;
        self.put_plugin(&rec)?;
        Ok(Reply::Write(Ok(WriteResult::Plugin { name: rec.name, sha256: version.sha256 })))
    }

    pub(super) fn plugin_enable(
        &mut self,
        name: &str,
        enabled: bool,
        identity: &Identity,
    ) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        let Some(mut rec) = get(&self.tables.plugins, name)? else {
            return Ok(Reply::Write(Err(ErrorCode::NoNode)));
        };
        rec.disabled = !enabled;
        rec.consecutive_traps = 0;
        self.put_plugin(&rec)?;
        let sha256 = rec.active_version().sha256;
        Ok(Reply::Write(Ok(WriteResult::Plugin { name: rec.name, sha256 })))
    }

    pub(super) fn plugin_remove(&mut self, name: &str, identity: &Identity) -> Result<Reply, StoreError> {
        if let Err(e) = self.check_token(identity, Scope::Plugin)? {
            return Ok(Reply::Write(Err(e)));
        }
        let Some(rec) = get(&self.tables.plugins, name)? else {
            return Ok(Reply::Write(Err(ErrorCode::NoNode)));
        };
        self.drop_plugin(name)?;
        self.collect_blobs()?;
        self.count_bound()?;
        let sha256 = rec.active_version().sha256;
        Ok(Reply::Write(Ok(WriteResult::Plugin { name: rec.name, sha256 })))
    }

    /// Keeps `meta.bound_plugins`, the number of validators and triggers:
    /// when it is zero, writes skip plugins without reading their table.
    fn count_bound(&mut self) -> Result<(), StoreError> {
        let n = all(&self.tables.plugins)?.iter().filter(|r| matches!(r.kind, Kind::Validator | Kind::Trigger)).count();
        self.meta.bound_plugins = n as u32;
        Ok(())
    }

    /// Runs one plugin call against `staged`, and records its outcome in
    /// the plugin's record (counts, fuel, breaker).
    fn run(
        &mut self,
        rec: &mut PluginRecord,
        staged: &mut Staged,
        session: Option<i64>,
        who: &Identity,
        request: &Request,
        call_no: u32,
    ) -> Result<Result<Vec<u8>, CallError>, StoreError> {
        if rec.disabled {
            // The breaker leaves its trap count behind; an operator's
            // disable clears it.
            let why = if rec.breaker > 0 && rec.consecutive_traps >= rec.breaker {
                format!("after {} consecutive traps", rec.breaker)
            } else {
                "by an operator".to_owned()
            };
            return Ok(Err(CallError::Trap(format!(
                "{} is disabled {why}; enable it, deploy or roll back to run it again",
                rec.name
            ))));
        }
        if let Some(why) = self.paused() {
            return Ok(Err(CallError::Trap(why)));
        }
        let runtime = self.runtime()?;
        let version = rec.active_version().clone();
        let compiled = runtime
            .ensure(version.sha256, rec.kind, || {
                // Not compiled yet on this node (after a restart): compile
                // from the stored code, here.
                self.tables
                    .blobs
                    .get(version.sha256.as_slice())
                    .ok()
                    .flatten()
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default()
                    .into()
            })
            .map_err(|e| StoreError::Halt(e.to_string()))?;
        let secret = self.meta.init.as_ref().map(|i| i.secret).unwrap_or_default();
        let seed: [u8; 32] = Sha256::new()
            .chain_update(secret)
            .chain_update(self.index.to_be_bytes())
            .chain_update(rec.name.as_bytes())
            .chain_update(call_no.to_be_bytes())
            .finalize()
            .into();
        let ctx = Context {
            index: self.index,
            time_ms: self.time,
            session,
            principal: who.ids.iter().map(|id| format!("{}:{}", id.scheme, id.id)).collect(),
            plugin: rec.name.clone(),
        };
        let limits = rec.limits;
        let mut access =
            Overlay { apply: self, staged, session, who, read_only: matches!(rec.kind, Kind::Validator | Kind::Query) };
        let outcome = runtime
            .call(&compiled, &ctx, request, &limits, seed, &mut access)
            .map_err(|e| StoreError::Halt(e.to_string()))?;
        rec.calls += 1;
        rec.fuel += outcome.fuel;
        match &outcome.result {
            Err(CallError::Trap(_)) => {
                rec.traps += 1;
                rec.consecutive_traps += 1;
                if rec.breaker > 0 && rec.consecutive_traps >= rec.breaker {
                    rec.disabled = true;
                }
            }
            _ => rec.consecutive_traps = 0,
        }
        self.put_plugin(rec)?;
        Ok(outcome.result)
    }

    /// A recipe call: the recipe's writes, then the validators and triggers
    /// of the paths it wrote, all or nothing.
    pub(super) fn plugin_call(
        &mut self,
        session: Option<i64>,
        who: &Identity,
        name: &str,
        args: &[u8],
    ) -> Result<Reply, StoreError> {
        let Some(mut rec) = get(&self.tables.plugins, name)? else {
            return Ok(Reply::Write(Err(ErrorCode::NoNode)));
        };
        if rec.kind != Kind::Recipe {
            return Ok(Reply::Rejected { code: ErrorCode::BadArguments, message: format!("{name} is not a recipe") });
        }
        let mut staged = Staged::default();
        let result = self.run(&mut rec, &mut staged, session, who, &Request::Call(args.to_vec()), 0)?;
        let output = match result {
            Ok(out) => out,
            Err(e) => {
                self.events.clear();
                return Ok(Reply::Write(Ok(WriteResult::Called(Err(e)))));
            }
        };
        match self.run_hooks(&mut staged, session, who, Hooks::Client)? {
            Ok(()) => {
                self.commit(staged)?;
                Ok(Reply::Write(Ok(WriteResult::Called(Ok(output)))))
            }
            Err(r) => {
                self.events.clear();
                Ok(Reply::Rejected { code: r.code, message: r.message })
            }
        }
    }

    /// The validators, then the triggers, bound to the paths `staged`
    /// changes. For a client's change (`Hooks::Client`), a veto, error or
    /// trap rejects the entry. For the system's (`Hooks::System`: session
    /// ends, reaping), nothing can refuse: validators are not asked, and a
    /// failing trigger only loses its own writes.
    pub(super) fn run_hooks(
        &mut self,
        staged: &mut Staged,
        session: Option<i64>,
        who: &Identity,
        hooks: Hooks,
    ) -> Result<Result<(), Rejection>, StoreError> {
        if self.meta.bound_plugins == 0 {
            return Ok(Ok(()));
        }
        let changes = self.changes(staged)?;
        if changes.is_empty() {
            return Ok(Ok(()));
        }
        let records = all(&self.tables.plugins)?;
        let mut call_no = 1;
        let kinds: &[Kind] = match hooks {
            Hooks::Client => &[Kind::Validator, Kind::Trigger],
            Hooks::System => &[Kind::Trigger],
        };
        for &kind in kinds {
            for mut rec in records.iter().filter(|r| r.kind == kind).cloned() {
                let mine: Vec<PluginChange> = changes.iter().filter(|c| rec.binds(&c.path)).cloned().collect();
                if mine.is_empty() {
                    continue;
                }
                let request = if kind == Kind::Validator { Request::Validate(mine) } else { Request::Trigger(mine) };
                let before = (hooks == Hooks::System).then(|| (staged.nodes.clone(), self.events.len()));
                let outcome = self.run(&mut rec, staged, session, who, &request, call_no)?;
                call_no += 1;
                if let (Err(e), Some((nodes, events))) = (&outcome, before) {
                    tracing::info!(plugin = rec.name, "a trigger failed on a session's end or a reaped node: {e}");
                    staged.nodes = nodes;
                    self.events.truncate(events);
                    continue;
                }
                if let Err(e) = outcome {
                    let what = if kind == Kind::Validator { "rejected by validator" } else { "failed in trigger" };
                    return Ok(Err(Rejection {
                        code: ErrorCode::BadArguments,
                        message: format!("{what} {}: {e}", rec.name),
                    }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// What `staged` changes, as plugins see it: creations, data changes
    /// and deletions (not ACL or child-list updates).
    fn changes(&self, staged: &Staged) -> Result<Vec<PluginChange>, StoreError> {
        let mut out = Vec::new();
        for (p, new) in &staged.nodes {
            let old = tree::get_node(&self.tables.nodes, p)?;
            let change = match (&old, new) {
                (None, Some(n)) => Some((ChangeKind::Created, n.data.clone())),
                (Some(_), None) => Some((ChangeKind::Deleted, None)),
                (Some(o), Some(n)) if o.mzxid != n.mzxid || o.version != n.version => {
                    Some((ChangeKind::DataChanged, n.data.clone()))
                }
                _ => None,
            };
            if let Some((kind, data)) = change {
                out.push(PluginChange { path: p.clone(), kind, data });
            }
        }
        Ok(out)
    }
}

/// Guesses the world of a component from its export names, to start
/// compiling before the deploy entry says what it is. A wrong guess only
/// costs a compile at the deploy.
pub fn sniff_kind(wasm: &[u8]) -> Option<Kind> {
    let has = |s: &str| wasm.windows(s.len()).any(|w| w == s.as_bytes());
    if has("corral:plugin/validator") {
        Some(Kind::Validator)
    } else if has("corral:plugin/trigger") {
        Some(Kind::Trigger)
    } else if has("corral:plugin/write") && has("corral:plugin/recipe") {
        Some(Kind::Recipe)
    } else if has("corral:plugin/recipe") {
        Some(Kind::Query)
    } else {
        None
    }
}

/// The tree a plugin call sees: the entry's overlay over the stored tree,
/// with ZooKeeper's rules for writes, as the caller.
struct Overlay<'x, 'a, 't> {
    apply: &'x mut Apply<'a, 't>,
    staged: &'x mut Staged,
    session: Option<i64>,
    who: &'x Identity,
    read_only: bool,
}

fn access_err(f: Fail) -> AccessError {
    match f {
        Fail::Code(c) => AccessError::Fault(c),
        Fail::Store(e) => AccessError::Store(e.to_string()),
    }
}

impl Access for Overlay<'_, '_, '_> {
    fn get(&mut self, p: &str) -> Result<Option<(Vec<u8>, Stat)>, AccessError> {
        if path::validate(p).is_err() {
            return Err(AccessError::Fault(ErrorCode::BadArguments));
        }
        let node = self.apply.get(self.staged, p).map_err(|e| AccessError::Store(e.to_string()))?;
        Ok(node.map(|n| (n.data.clone().unwrap_or_default(), n.stat())))
    }

    fn children(&mut self, p: &str) -> Result<Vec<String>, AccessError> {
        if path::validate(p).is_err() {
            return Err(AccessError::Fault(ErrorCode::BadArguments));
        }
        let store = |e: StoreError| AccessError::Store(e.to_string());
        if self.apply.get(self.staged, p).map_err(store)?.is_none() {
            return Err(AccessError::Fault(ErrorCode::NoNode));
        }
        let mut names: std::collections::BTreeSet<String> =
            tree::child_names(&self.apply.tables.nodes, p).map_err(store)?.into_iter().collect();
        for (staged_path, node) in &self.staged.nodes {
            if let Some((parent, name)) = path::split(staged_path)
                && parent == p
            {
                if node.is_some() {
                    names.insert(name.to_owned());
                } else {
                    names.remove(name);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn create(&mut self, p: &str, data: Vec<u8>, mode: Mode) -> Result<String, AccessError> {
        if self.read_only {
            return Err(AccessError::Fault(ErrorCode::NoAuth));
        }
        let flags = match mode {
            Mode::Persistent => 0,
            Mode::Ephemeral => 1,
            Mode::PersistentSequential => 2,
            Mode::EphemeralSequential => 3,
            Mode::Container => 4,
        };
        let req = CreateRequest { path: p.to_owned(), data: Some(data), acl: Acl::open(), flags, ttl: None };
        let opcode = if mode == Mode::Container { op::CREATE_CONTAINER } else { op::CREATE2 };
        match self.apply.create(self.staged, self.session, self.who, opcode, &req).map_err(access_err)? {
            WriteResult::Created { path, .. } => Ok(path),
            other => unreachable!("create returned {other:?}"),
        }
    }

    fn set(&mut self, p: &str, data: Vec<u8>, version: i32) -> Result<Stat, AccessError> {
        if self.read_only {
            return Err(AccessError::Fault(ErrorCode::NoAuth));
        }
        match self.apply.set_data(self.staged, self.who, p, &Some(data), version).map_err(access_err)? {
            WriteResult::SetData { stat } => Ok(stat),
            other => unreachable!("setData returned {other:?}"),
        }
    }

    fn delete(&mut self, p: &str, version: i32) -> Result<(), AccessError> {
        if self.read_only {
            return Err(AccessError::Fault(ErrorCode::NoAuth));
        }
        self.apply.delete(self.staged, self.who, p, version).map_err(access_err)?;
        Ok(())
    }
}

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no plugin named {0}")]
    NoPlugin(String),
    #[error("{0} is a {1:?}, not a query")]
    NotQuery(String, Kind),
    #[error("this node cannot run plugins: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a query plugin on this member's state as `view` shows it, outside
/// the log: it can read, not write, and nothing of it is recorded. The
/// context carries the view's zxid and replicated time.
pub fn query(
    view: &super::ReadView,
    env: Option<&PluginEnv>,
    session: Option<i64>,
    who: &Identity,
    name: &str,
    args: &[u8],
) -> Result<Result<Vec<u8>, CallError>, QueryError> {
    let table = view.txn_table(tree::PLUGINS).transpose()?;
    let rec = match &table {
        Some(t) => get(t, name)?,
        None => None,
    };
    let Some(rec) = rec else { return Err(QueryError::NoPlugin(name.to_owned())) };
    if rec.kind != Kind::Query {
        return Err(QueryError::NotQuery(rec.name, rec.kind));
    }
    if rec.disabled {
        return Ok(Err(CallError::Trap(format!("{name} is disabled"))));
    }
    let Some(env) = env else { return Err(QueryError::Unavailable("no plugin runtime".into())) };
    let meta = view.meta()?;
    if let Some(at) = meta.plugins_paused_at {
        return Err(QueryError::Unavailable(format!("plugins are paused for an engine upgrade (since zxid 0x{at:x})")));
    }
    if meta.plugin_fingerprint.as_deref().is_some_and(|f| f != env.runtime.fingerprint()) {
        return Err(QueryError::Unavailable("its engine fingerprint differs from the cluster's".into()));
    }
    let version = rec.active_version();
    let blobs = view.txn_table(tree::BLOBS).transpose()?;
    let compiled = env
        .runtime
        .ensure(version.sha256, rec.kind, || {
            blobs
                .as_ref()
                .and_then(|t| t.get(version.sha256.as_slice()).ok().flatten())
                .map(|v| v.value().to_vec())
                .unwrap_or_default()
                .into()
        })
        .map_err(|e| QueryError::Unavailable(e.to_string()))?;
    let secret = meta.init.as_ref().map(|i| i.secret).unwrap_or_default();
    let seed: [u8; 32] = Sha256::new()
        .chain_update(secret)
        .chain_update(meta.applied_index.to_be_bytes())
        .chain_update(name)
        .finalize()
        .into();
    let ctx = Context {
        index: meta.applied_index,
        time_ms: meta.last_time_ms,
        session,
        principal: who.ids.iter().map(|id| format!("{}:{}", id.scheme, id.id)).collect(),
        plugin: rec.name.clone(),
    };
    let mut access = ViewAccess { view };
    let outcome = env
        .runtime
        .call_query(&compiled, &ctx, &Request::Call(args.to_vec()), &rec.limits, seed, &mut access)
        .map_err(|e| QueryError::Unavailable(e.to_string()))?;
    Ok(outcome.result)
}

/// A read view as a query sees it: reads only.
struct ViewAccess<'v> {
    view: &'v super::ReadView,
}

impl Access for ViewAccess<'_> {
    fn get(&mut self, p: &str) -> Result<Option<(Vec<u8>, Stat)>, AccessError> {
        if path::validate(p).is_err() {
            return Err(AccessError::Fault(ErrorCode::BadArguments));
        }
        let node = self.view.node(p).map_err(|e| AccessError::Store(e.to_string()))?;
        Ok(node.map(|n| (n.data.clone().unwrap_or_default(), n.stat())))
    }

    fn children(&mut self, p: &str) -> Result<Vec<String>, AccessError> {
        if path::validate(p).is_err() {
            return Err(AccessError::Fault(ErrorCode::BadArguments));
        }
        let store = |e: StoreError| AccessError::Store(e.to_string());
        if self.view.node(p).map_err(store)?.is_none() {
            return Err(AccessError::Fault(ErrorCode::NoNode));
        }
        tree::child_names(&self.view.nodes, p).map_err(store)
    }

    fn create(&mut self, _: &str, _: Vec<u8>, _: Mode) -> Result<String, AccessError> {
        Err(AccessError::Fault(ErrorCode::NoAuth))
    }

    fn set(&mut self, _: &str, _: Vec<u8>, _: i32) -> Result<Stat, AccessError> {
        Err(AccessError::Fault(ErrorCode::NoAuth))
    }

    fn delete(&mut self, _: &str, _: i32) -> Result<(), AccessError> {
        Err(AccessError::Fault(ErrorCode::NoAuth))
    }
}
