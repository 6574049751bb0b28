//! What a plugin imports: the host side of `wit/plugin.wit`, and the store
//! state one call runs with.
//!
//! Every host call is counted against the call's quotas; a quota exceeded
//! traps the guest (deterministically: the counts depend only on what the
//! guest did). A storage error in the tree behind [`Access`] is a host
//! fault: the guest is stopped and the call reports the fault instead of an
//! outcome.

use std::ptr::NonNull;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Engine, ResourceLimiter};

use super::{Kind, Limits, Request};
use crate::proto::data::Stat;
use crate::proto::error::ErrorCode;

/// Bindings generated from `wit/plugin.wit`, one module per world. The
/// recipe world has every import; the others reuse its interfaces.
pub mod bindings {
    pub mod recipe {
        wasmtime::component::bindgen!({
            world: "recipe-plugin",
            path: "../wit",
            imports: { default: trappable },
        });
    }
    pub mod validator {
        wasmtime::component::bindgen!({
            world: "validator-plugin",
            path: "../wit",
            imports: { default: trappable },
            with: {
                "corral:plugin/types": super::recipe::corral::plugin::types,
                "corral:plugin/read": super::recipe::corral::plugin::read,
                "corral:plugin/env": super::recipe::corral::plugin::env,
            },
        });
    }
    pub mod trigger {
        wasmtime::component::bindgen!({
            world: "trigger-plugin",
            path: "../wit",
            imports: { default: trappable },
            with: {
                "corral:plugin/types": super::recipe::corral::plugin::types,
                "corral:plugin/read": super::recipe::corral::plugin::read,
                "corral:plugin/write": super::recipe::corral::plugin::write,
                "corral:plugin/env": super::recipe::corral::plugin::env,
            },
        });
    }
    pub mod query {
        wasmtime::component::bindgen!({
            world: "query-plugin",
            path: "../wit",
            imports: { default: trappable },
            with: {
                "corral:plugin/types": super::recipe::corral::plugin::types,
                "corral:plugin/read": super::recipe::corral::plugin::read,
                "corral:plugin/env": super::recipe::corral::plugin::env,
            },
        });
    }
}

use bindings::recipe::corral::plugin::{env, read, types, write};
use types::{Fault, Stat as WitStat};

/// How a plugin's node is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
}

/// Why a tree operation failed.
#[derive(Debug)]
pub enum AccessError {
    /// ZooKeeper's answer: the plugin sees it as a `fault`.
    Fault(ErrorCode),
    /// The storage failed: not the plugin's doing, and not deterministic.
    Store(String),
}

/// The tree as one call sees it: the machine implements it over the entry's
/// copy-on-write overlay, so a call's writes are kept or dropped as a whole.
pub trait Access {
    fn get(&mut self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, AccessError>;
    fn children(&mut self, path: &str) -> Result<Vec<String>, AccessError>;
    fn create(&mut self, path: &str, data: Vec<u8>, mode: Mode) -> Result<String, AccessError>;
    fn set(&mut self, path: &str, data: Vec<u8>, version: i32) -> Result<Stat, AccessError>;
    fn delete(&mut self, path: &str, version: i32) -> Result<(), AccessError>;
}

/// One change a validator or trigger is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginChange {
    pub path: String,
    pub kind: ChangeKind,
    pub data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    DataChanged,
    Deleted,
}

/// The context of a call, from the log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub index: u64,
    pub time_ms: i64,
    pub session: Option<i64>,
    pub principal: Vec<String>,
    pub plugin: String,
}

/// A quota the guest went over: a deterministic trap.
#[derive(Debug, thiserror::Error)]
#[error("over the {0} quota")]
pub struct QuotaExceeded(pub &'static str);

/// The state of one call's store.
pub struct HostState {
    /// The tree, for the duration of [`with_access`] only.
    access: Option<NonNull<dyn Access>>,
    limits: Limits,
    pub limiter: Limiter,
    host_calls: u32,
    read_bytes: u64,
    written_bytes: u64,
    output_bytes: u64,
    seed: [u8; 32],
    random_blocks: u64,
    /// Set when the host failed under the guest: the call's outcome is void.
    pub fault: Option<String>,
}

impl HostState {
    pub fn new(limits: &Limits, seed: [u8; 32]) -> HostState {
        HostState {
            access: None,
            limits: *limits,
            limiter: Limiter { memory_bytes: limits.memory_bytes, memory_refused: false },
            host_calls: 0,
            read_bytes: 0,
            written_bytes: 0,
            output_bytes: 0,
            seed,
            random_blocks: 0,
            fault: None,
        }
    }

    /// Counts a host call.
    fn call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.limits.host_calls {
            return Err(wasmtime::Error::new(QuotaExceeded("host calls")));
        }
        Ok(())
    }

    fn count(counter: &mut u64, limit: u64, n: usize, what: &'static str) -> wasmtime::Result<()> {
        *counter += n as u64;
        if *counter > limit {
            return Err(wasmtime::Error::new(QuotaExceeded(what)));
        }
        Ok(())
    }

    fn access(&mut self) -> &mut dyn Access {
        let mut ptr = self.access.expect("host calls happen only inside with_access");
        // SAFETY: `with_access` set this from a `&mut dyn Access` that it
        // holds borrowed for as long as the guest runs, and clears it before
        // returning; the store is used on one thread.
        unsafe { ptr.as_mut() }
    }

    /// Maps a tree error: faults go to the guest, storage errors stop it.
    fn outcome<T>(&mut self, r: Result<T, AccessError>) -> wasmtime::Result<Result<T, Fault>> {
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(AccessError::Fault(code)) => Ok(Err(fault(code))),
            Err(AccessError::Store(e)) => {
                self.fault = Some(format!("storage failed under a plugin call: {e}"));
                Err(wasmtime::Error::msg("host fault"))
            }
        }
    }
}

/// Memory and tables may grow up to the call's limits: a refused growth is
/// `-1` to the guest (deterministic, since the limits are replicated).
pub struct Limiter {
    memory_bytes: u64,
    /// The memory limit refused a `memory.grow`: the trap that follows (a
    /// guest's allocation failure aborts) is reported as the limit.
    pub memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= super::MAX_TABLE_ELEMENTS)
    }
}

fn fault(code: ErrorCode) -> Fault {
    match code {
        ErrorCode::NoNode => Fault::NoNode,
        ErrorCode::NodeExists => Fault::NodeExists,
        ErrorCode::BadVersion => Fault::BadVersion,
        ErrorCode::NotEmpty => Fault::NotEmpty,
        ErrorCode::NoChildrenForEphemerals => Fault::NoChildrenForEphemerals,
        ErrorCode::NoAuth => Fault::NoAuth,
        other => Fault::BadArguments(other.to_string()),
    }
}

fn wit_stat(s: Stat) -> WitStat {
    WitStat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
        pzxid: s.pzxid,
    }
}

impl types::Host for HostState {}

impl read::Host for HostState {
    fn get(&mut self, path: String) -> wasmtime::Result<Result<Option<(Vec<u8>, WitStat)>, Fault>> {
        self.call()?;
        let r = self.access().get(&path);
        if let Ok(Some((data, _))) = &r {
            let (limit, n) = (self.limits.read_bytes, data.len() + path.len());
            Self::count(&mut self.read_bytes, limit, n, "read bytes")?;
        }
        self.outcome(r.map(|o| o.map(|(d, s)| (d, wit_stat(s)))))
    }

    fn exists(&mut self, path: String) -> wasmtime::Result<Result<Option<WitStat>, Fault>> {
        self.call()?;
        let r = self.access().get(&path);
        self.outcome(r.map(|o| o.map(|(_, s)| wit_stat(s))))
    }

    fn children(&mut self, path: String) -> wasmtime::Result<Result<Vec<String>, Fault>> {
        self.call()?;
        let r = self.access().children(&path);
        if let Ok(names) = &r {
            let (limit, n) = (self.limits.read_bytes, names.iter().map(String::len).sum::<usize>());
            Self::count(&mut self.read_bytes, limit, n, "read bytes")?;
        }
        self.outcome(r)
    }
}

impl write::Host for HostState {
    fn create(
        &mut self,
        path: String,
        data: Vec<u8>,
        mode: types::CreateMode,
    ) -> wasmtime::Result<Result<String, Fault>> {
        self.call()?;
        let (limit, n) = (self.limits.write_bytes, data.len() + path.len());
        Self::count(&mut self.written_bytes, limit, n, "write bytes")?;
        let mode = match mode {
            types::CreateMode::Persistent => Mode::Persistent,
            types::CreateMode::Ephemeral => Mode::Ephemeral,
            types::CreateMode::PersistentSequential => Mode::PersistentSequential,
            types::CreateMode::EphemeralSequential => Mode::EphemeralSequential,
            types::CreateMode::Container => Mode::Container,
        };
        let r = self.access().create(&path, data, mode);
        self.outcome(r)
    }

    fn set(&mut self, path: String, data: Vec<u8>, version: i32) -> wasmtime::Result<Result<WitStat, Fault>> {
        self.call()?;
        let (limit, n) = (self.limits.write_bytes, data.len() + path.len());
        Self::count(&mut self.written_bytes, limit, n, "write bytes")?;
        let r = self.access().set(&path, data, version);
        self.outcome(r.map(wit_stat))
    }

    fn delete(&mut self, path: String, version: i32) -> wasmtime::Result<Result<(), Fault>> {
        self.call()?;
        let r = self.access().delete(&path, version);
        self.outcome(r)
    }
}

impl env::Host for HostState {
    fn random(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        self.call()?;
        let (limit, n) = (self.limits.output_bytes, len as usize);
        Self::count(&mut self.output_bytes, limit, n, "output bytes")?;
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            let block = Sha256::new().chain_update(self.seed).chain_update(self.random_blocks.to_be_bytes()).finalize();
            self.random_blocks += 1;
            out.extend_from_slice(&block[..block.len().min(len as usize - out.len())]);
        }
        Ok(out)
    }

    fn log(&mut self, message: String) -> wasmtime::Result<()> {
        self.call()?;
        let (limit, n) = (self.limits.output_bytes, message.len());
        Self::count(&mut self.output_bytes, limit, n, "output bytes")?;
        tracing::debug!(target: "corral::plugin::guest", "{message}");
        Ok(())
    }
}

/// A linker with exactly the imports of `kind`'s world.
pub fn linker(engine: &Engine, kind: Kind) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    match kind {
        Kind::Validator => bindings::validator::ValidatorPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
        Kind::Trigger => bindings::trigger::TriggerPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
        Kind::Recipe => bindings::recipe::RecipePlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
        Kind::Query => bindings::query::QueryPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?,
    }
    Ok(linker)
}

/// A component linked and checked against its world, ready to instantiate.
pub enum Pre {
    Validator(bindings::validator::ValidatorPluginPre<HostState>),
    Trigger(bindings::trigger::TriggerPluginPre<HostState>),
    Recipe(bindings::recipe::RecipePluginPre<HostState>),
    Query(bindings::query::QueryPluginPre<HostState>),
}

/// Links `component` for `kind`: fails if it imports anything the world
/// does not offer, or lacks the world's export.
pub fn pre(
    linker: &Linker<HostState>,
    component: &wasmtime::component::Component,
    kind: Kind,
) -> wasmtime::Result<Pre> {
    let instance_pre: InstancePre<HostState> = linker.instantiate_pre(component)?;
    Ok(match kind {
        Kind::Validator => Pre::Validator(bindings::validator::ValidatorPluginPre::new(instance_pre)?),
        Kind::Trigger => Pre::Trigger(bindings::trigger::TriggerPluginPre::new(instance_pre)?),
        Kind::Recipe => Pre::Recipe(bindings::recipe::RecipePluginPre::new(instance_pre)?),
        Kind::Query => Pre::Query(bindings::query::QueryPluginPre::new(instance_pre)?),
    })
}

/// Instantiates without calling anything (the deploy check).
pub fn instantiate(store: &mut wasmtime::Store<HostState>, pre: &Pre) -> wasmtime::Result<()> {
    match pre {
        Pre::Validator(p) => p.instantiate(store).map(drop),
        Pre::Trigger(p) => p.instantiate(store).map(drop),
        Pre::Recipe(p) => p.instantiate(store).map(drop),
        Pre::Query(p) => p.instantiate(store).map(drop),
    }
}

/// A tree that refuses everything: for instantiating outside any call.
pub struct NoAccess;

impl Access for NoAccess {
    fn get(&mut self, _: &str) -> Result<Option<(Vec<u8>, Stat)>, AccessError> {
        Err(AccessError::Fault(ErrorCode::NoAuth))
    }
    fn children(&mut self, _: &str) -> Result<Vec<String>, AccessError> {
        Err(AccessError::Fault(ErrorCode::NoAuth))
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

/// Runs `f` with `access` reachable from the store's host calls.
pub fn with_access<R>(
    store: &mut wasmtime::Store<HostState>,
    access: &mut dyn Access,
    f: impl FnOnce(&mut wasmtime::Store<HostState>) -> R,
) -> R {
    // SAFETY: the lifetime is erased only for the duration of `f`, while
    // `access` stays mutably borrowed here; the pointer is cleared before
    // this returns, even if `f` unwinds.
    let ptr: NonNull<dyn Access + '_> = NonNull::from(access);
    let ptr: NonNull<dyn Access> = unsafe { std::mem::transmute(ptr) };
    struct Clear<'a>(&'a mut wasmtime::Store<HostState>);
    impl Drop for Clear<'_> {
        fn drop(&mut self) {
            self.0.data_mut().access = None;
        }
    }
    store.data_mut().access = Some(ptr);
    let guard = Clear(store);
    f(guard.0)
}

fn wit_context(c: &super::Context) -> types::Context {
    types::Context {
        index: c.index,
        time_ms: c.time_ms,
        session: c.session,
        principal: c.principal.clone(),
        plugin: c.plugin.clone(),
    }
}

fn wit_changes(changes: &[PluginChange]) -> Vec<types::Change> {
    changes
        .iter()
        .map(|c| types::Change {
            path: c.path.clone(),
            kind: match c.kind {
                ChangeKind::Created => types::ChangeKind::Created,
                ChangeKind::DataChanged => types::ChangeKind::DataChanged,
                ChangeKind::Deleted => types::ChangeKind::Deleted,
            },
            data: c.data.clone(),
        })
        .collect()
}

/// Instantiates and makes the call `request` asks for.
pub fn invoke(
    store: &mut wasmtime::Store<HostState>,
    kind: Kind,
    pre: &Pre,
    ctx: &Context,
    request: &Request,
) -> wasmtime::Result<Result<Vec<u8>, String>> {
    let c = wit_context(ctx);
    match (pre, request) {
        (Pre::Validator(p), Request::Validate(changes)) => {
            let i = p.instantiate(&mut *store)?;
            let r = i.corral_plugin_validator().call_validate(&mut *store, &c, &wit_changes(changes))?;
            Ok(r.map(|()| Vec::new()))
        }
        (Pre::Trigger(p), Request::Trigger(changes)) => {
            let i = p.instantiate(&mut *store)?;
            let r = i.corral_plugin_trigger().call_on_change(&mut *store, &c, &wit_changes(changes))?;
            Ok(r.map(|()| Vec::new()))
        }
        (Pre::Recipe(p), Request::Call(args)) => {
            let i = p.instantiate(&mut *store)?;
            i.corral_plugin_recipe().call_call(&mut *store, &c, args)
        }
        (Pre::Query(p), Request::Call(args)) => {
            let i = p.instantiate(&mut *store)?;
            i.corral_plugin_recipe().call_call(&mut *store, &c, args)
        }
        _ => Ok(Err(format!("a {kind:?} plugin cannot answer {request:?}"))),
    }
}
