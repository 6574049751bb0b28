//! The plugin runtime: wasmtime, configured so that a plugin call is a
//! deterministic function of the plugin, its arguments and the tree.
//!
//! The machine ([`crate::machine`]) runs plugins inside the apply of a log
//! entry; this module knows nothing of logs or Raft. It provides:
//! - [`Runtime`]: the engine, one linker per world, and the compiled
//!   plugins (compiled off the apply path, cached on disk by content hash);
//! - [`Runtime::call`]: one call in a fresh instance, against an [`Access`]
//!   to the tree that the caller provides (the machine's copy-on-write
//!   overlay), with fuel, memory and per-call quotas;
//! - the [`fingerprint`](Runtime::fingerprint) of everything that decides
//!   outcomes: members must agree on it before they apply plugin entries.
//!
//! Outcomes come in two classes. [`CallOutcome`] is deterministic (the
//! result, a domain error, or a trap) and becomes part of replicated state.
//! [`HostFault`] is not (the epoch watchdog, a storage error, an engine
//! error): the caller must stop applying instead of recording it.

mod host;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OperatorCost, PoolingAllocationConfig, Store};

use self::host::HostState;
pub use self::host::{Access, AccessError, ChangeKind, Context, Mode, PluginChange};

/// The WIT package every plugin targets.
pub const ABI: &str = "corral:plugin@0.1.0";

/// What a plugin is, which is the world it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Vetoes writes under its paths; reads only.
    Validator,
    /// Reacts to writes under its paths by writing in the same entry.
    Trigger,
    /// A server-side operation, called by name, run in the log.
    Recipe,
    /// A read-only operation, run by any member outside the log.
    Query,
}

impl Kind {
    pub fn world(self) -> &'static str {
        match self {
            Kind::Validator => "validator-plugin",
            Kind::Trigger => "trigger-plugin",
            Kind::Recipe => "recipe-plugin",
            Kind::Query => "query-plugin",
        }
    }
}

/// Per-call limits. They decide outcomes, so they are replicated (set at
/// deploy) and never read from a node's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel: roughly, wasm operators executed.
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Host calls (reads, writes, log lines).
    pub host_calls: u32,
    /// Bytes of node data and names read.
    pub read_bytes: u64,
    /// Bytes of node data written.
    pub write_bytes: u64,
    /// Bytes of the result and of log lines.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            host_calls: 10_000,
            read_bytes: 8 << 20,
            write_bytes: 4 << 20,
            output_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// The hard ceilings a deploy may ask for.
    pub const MAX: Limits = Limits {
        fuel: 1_000_000_000,
        memory_bytes: 256 << 20,
        host_calls: 1_000_000,
        read_bytes: 256 << 20,
        write_bytes: 64 << 20,
        output_bytes: 16 << 20,
    };

    pub fn within_max(&self) -> bool {
        let m = Limits::MAX;
        self.fuel <= m.fuel
            && self.memory_bytes <= m.memory_bytes
            && self.host_calls <= m.host_calls
            && self.read_bytes <= m.read_bytes
            && self.write_bytes <= m.write_bytes
            && self.output_bytes <= m.output_bytes
    }
}

/// What a call asks of the plugin.
#[derive(Debug, Clone)]
pub enum Request {
    Validate(Vec<PluginChange>),
    Trigger(Vec<PluginChange>),
    Call(Vec<u8>),
}

/// The deterministic outcome of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub result: Result<Vec<u8>, CallError>,
    /// Fuel the call consumed.
    pub fuel: u64,
}

/// A call that did not succeed, deterministically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CallError {
    /// The plugin said no (`err(..)`): a veto, or a recipe's domain error.
    #[error("{0}")]
    Domain(String),
    /// The plugin trapped: out of fuel, over a limit or quota, a panic.
    #[error("plugin trapped: {0}")]
    Trap(String),
}

/// Something that is not the plugin's doing and may differ between
/// members: the caller must not record any outcome for this entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostFault(pub String);

/// Node-local settings of the runtime. `max_wasm_stack` decides outcomes
/// (where a deep recursion traps) and is in the fingerprint.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub max_wasm_stack: usize,
    /// Where compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// A call still running after this long stops the node (fail-stop):
    /// fuel should always end a call long before.
    pub watchdog: Duration,
}

/// A compiled plugin, ready to instantiate.
pub struct Compiled {
    kind: Kind,
    pre: host::Pre,
}

/// Compilation state of one content hash.
enum Slot {
    Compiling,
    Ready(Arc<Compiled>),
    Failed(String),
}

pub struct Runtime {
    engine: Engine,
    linkers: HashMap<Kind, Linker<HostState>>,
    fingerprint: String,
    options: RuntimeOptions,
    slots: Mutex<HashMap<([u8; 32], Kind), Slot>>,
    compiled: Condvar,
    stop: Arc<AtomicBool>,
    /// Queries running now.
    queries: AtomicUsize,
}

/// Instances alive at once: one for the apply (applies run one at a time),
/// the rest for queries, which never take the last [`APPLY_SLOTS`].
const POOL_INSTANCES: u32 = 32;
/// Slots kept for the apply, so that queries cannot exhaust the pool under
/// it (an apply that could not instantiate would have to stop the node).
const APPLY_SLOTS: usize = 2;
/// Table elements an instance may have (the limiter refuses more, alike on
/// every member).
pub const MAX_TABLE_ELEMENTS: usize = 10_000;

/// Bytes of a slot's memory reset in place after a call rather than given
/// back to the kernel: the default memory limit.
const KEEP_RESIDENT: usize = 16 << 20;

fn pool() -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::new();
    // A component is a few core instances (the module and the canonical
    // ABI shims). A Rust guest has one linear memory; a JavaScript guest
    // (QuickJS) has three.
    p.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 8)
        .total_memories(POOL_INSTANCES * 4)
        .total_tables(POOL_INSTANCES * 8)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(Limits::MAX.memory_bytes as usize)
        .table_elements(MAX_TABLE_ELEMENTS)
        // After a call, reset only the pages it dirtied, in place (Linux
        // 6.7+ PAGEMAP_SCAN), instead of madvise: no page faults on the
        // next call and no TLB shootdowns across cores.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(1 << 16)
        .decommit_batch_size(16);
    p
}

/// The cost table: wasmtime's defaults, written out so that a change of
/// defaults in a later wasmtime cannot change outcomes silently (it would
/// change the fingerprint instead).
fn operator_cost() -> OperatorCost {
    let mut cost = OperatorCost::new();
    // `memory.grow` has no dynamic charge by default; charge per page, so
    // that growing memory is not free.
    cost.variable.memory_grow_per_page = 64;
    cost
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Runtime, HostFault> {
        let mut config = Config::new();
        let fault = |e: wasmtime::Error| HostFault(format!("wasm engine: {e}"));
        // Pin the target: no CPU feature detection, so that every member
        // compiles the same code.
        let target = format!("{}-unknown-{}-gnu", std::env::consts::ARCH, std::env::consts::OS);
        config.target(&target).map_err(fault)?;
        config
            .consume_fuel(true)
            .operator_cost(operator_cost())
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            // (Threads are not compiled in: wasmtime's `threads` feature
            // is off.)
            .wasm_relaxed_simd(false)
            .max_wasm_stack(options.max_wasm_stack)
            // Instances come from a pool of pre-reserved slots: a call's
            // instantiation is a few microseconds, not an mmap. Growth
            // within a slot never fails for host reasons.
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool()));
        let engine = Engine::new(&config).map_err(fault)?;
        let mut linkers = HashMap::new();
        for kind in [Kind::Validator, Kind::Trigger, Kind::Recipe, Kind::Query] {
            linkers.insert(kind, host::linker(&engine, kind).map_err(fault)?);
        }
        let fingerprint = fingerprint(&engine, &options);
        std::fs::create_dir_all(&options.cache_dir)
            .map_err(|e| HostFault(format!("{}: {e}", options.cache_dir.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        // The watchdog's clock: one epoch every 10 ms.
        {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("wasm-watchdog".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| HostFault(format!("watchdog thread: {e}")))?;
        }
        Ok(Runtime {
            engine,
            linkers,
            fingerprint,
            options,
            slots: Mutex::new(HashMap::new()),
            compiled: Condvar::new(),
            stop,
            queries: AtomicUsize::new(0),
        })
    }

    /// Everything that decides outcomes, hashed: members with different
    /// fingerprints must not apply plugin entries side by side.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Compiles `wasm` and checks it against `kind`'s world: that it
    /// imports nothing else and exports what the world needs. Returns the
    /// interfaces it imports. Used at deploy, on the node that takes the
    /// upload, before anything is proposed.
    pub fn check(&self, kind: Kind, wasm: &[u8]) -> Result<Vec<String>, String> {
        let component = Component::new(&self.engine, wasm).map_err(|e| format!("not a valid component: {e}"))?;
        let pre = host::pre(&self.linkers[&kind], &component, kind)
            .map_err(|e| format!("does not fit the {} world of {ABI}: {e:#}", kind.world()))?;
        // Instantiate it once: a component that cannot fit an instance slot
        // (too many tables, a memory larger than the largest limit) is
        // refused here rather than failing every call.
        let mut store = Store::new(&self.engine, HostState::new(&Limits::MAX, [0; 32]));
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(Limits::MAX.fuel).map_err(|e| e.to_string())?;
        store.set_epoch_deadline((self.options.watchdog.as_millis() / 10).max(1) as u64);
        host::with_access(&mut store, &mut host::NoAccess, |store| host::instantiate(store, &pre))
            .map_err(|e| format!("cannot be instantiated: {e:#}"))?;
        Ok(component.component_type().imports(&self.engine).map(|(name, _)| name.to_owned()).collect())
    }

    /// Starts compiling `wasm` (content hash `hash`) in the background, if
    /// it is not compiled or compiling already.
    pub fn prepare(self: &Arc<Self>, hash: [u8; 32], kind: Kind, wasm: Arc<[u8]>) {
        {
            let mut slots = self.slots.lock();
            if slots.contains_key(&(hash, kind)) {
                return;
            }
            slots.insert((hash, kind), Slot::Compiling);
        }
        let me = self.clone();
        std::thread::spawn(move || {
            let slot = match me.compile(hash, kind, &wasm) {
                Ok(c) => Slot::Ready(Arc::new(c)),
                Err(e) => Slot::Failed(e),
            };
            me.slots.lock().insert((hash, kind), slot);
            me.compiled.notify_all();
        });
    }

    /// The compiled plugin, waiting for a background compile if one runs,
    /// compiling here otherwise (`wasm` gives the code then).
    pub fn ensure(
        &self,
        hash: [u8; 32],
        kind: Kind,
        wasm: impl FnOnce() -> Arc<[u8]>,
    ) -> Result<Arc<Compiled>, HostFault> {
        let mut wasm = Some(wasm);
        let mut slots = self.slots.lock();
        loop {
            match slots.get(&(hash, kind)) {
                Some(Slot::Ready(c)) => return Ok(c.clone()),
                Some(Slot::Failed(e)) => return Err(HostFault(format!("compiling plugin {}: {e}", hex(&hash)))),
                Some(Slot::Compiling) => self.compiled.wait(&mut slots),
                None => {
                    slots.insert((hash, kind), Slot::Compiling);
                    drop(slots);
                    let code = wasm.take().expect("compiled at most once here")();
                    let slot = match self.compile(hash, kind, &code) {
                        Ok(c) => Slot::Ready(Arc::new(c)),
                        Err(e) => Slot::Failed(e),
                    };
                    slots = self.slots.lock();
                    slots.insert((hash, kind), slot);
                    self.compiled.notify_all();
                }
            }
        }
    }

    /// Compiles, or loads the artifact cached by an earlier compile.
    fn compile(&self, hash: [u8; 32], kind: Kind, wasm: &[u8]) -> Result<Compiled, String> {
        let cached = self.options.cache_dir.join(format!("{}-{}.cwasm", hex(&hash), &self.fingerprint[..16]));
        // SAFETY: the file is one this runtime wrote (below), for this
        // engine's fingerprint, in the node's own data directory.
        let cached_component = std::fs::metadata(&cached)
            .ok()
            .and_then(|_| unsafe { Component::deserialize_file(&self.engine, &cached) }.ok());
        let component = match cached_component {
            Some(c) => c,
            None => {
                let bytes = self.engine.precompile_component(wasm).map_err(|e| format!("{e:#}"))?;
                // The cache only saves a compile after a restart: failing to
                // write it (a full disk) must not fail the compile, and an
                // unreadable one is compiled again.
                // Written whole and synced before the rename: after a crash
                // the file is complete or absent, never torn.
                let tmp = cached.with_extension("tmp");
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::File::create(&tmp)?;
                    std::io::Write::write_all(&mut f, &bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &cached)
                };
                if let Err(e) = write() {
                    tracing::warn!(path = %cached.display(), "not caching a compiled plugin: {e}");
                }
                // SAFETY: just produced by this engine.
                unsafe { Component::deserialize(&self.engine, &bytes) }.map_err(|e| e.to_string())?
            }
        };
        let pre = host::pre(&self.linkers[&kind], &component, kind).map_err(|e| format!("{e:#}"))?;
        tracing::info!(plugin = hex(&hash), ?kind, "plugin compiled");
        Ok(Compiled { kind, pre })
    }

    /// [`Runtime::call`] for a query, outside the log: fails at once when
    /// every instance slot but the apply's is taken.
    pub fn call_query(
        &self,
        compiled: &Compiled,
        ctx: &Context,
        request: &Request,
        limits: &Limits,
        seed: [u8; 32],
        access: &mut dyn Access,
    ) -> Result<CallOutcome, HostFault> {
        let max = POOL_INSTANCES as usize - APPLY_SLOTS;
        if self.queries.fetch_add(1, Ordering::AcqRel) >= max {
            self.queries.fetch_sub(1, Ordering::AcqRel);
            return Err(HostFault(format!("{max} queries are running: try again")));
        }
        let outcome = self.call(compiled, ctx, request, limits, seed, access);
        self.queries.fetch_sub(1, Ordering::AcqRel);
        outcome
    }

    /// Runs one call in a fresh instance. `access` is the tree as the call
    /// may see and change it; `seed` feeds `env.random`.
    pub fn call(
        &self,
        compiled: &Compiled,
        ctx: &Context,
        request: &Request,
        limits: &Limits,
        seed: [u8; 32],
        access: &mut dyn Access,
    ) -> Result<CallOutcome, HostFault> {
        let state = HostState::new(limits, seed);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).map_err(|e| HostFault(e.to_string()))?;
        let ticks = (self.options.watchdog.as_millis() / 10).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let outcome = host::with_access(&mut store, access, |store| {
            host::invoke(store, compiled.kind, &compiled.pre, ctx, request)
        });
        let fuel = limits.fuel - store.get_fuel().unwrap_or(0);
        if let Some(fault) = store.data_mut().fault.take() {
            return Err(HostFault(fault));
        }
        let result = match outcome {
            Ok(Ok(out)) => {
                if out.len() as u64 > limits.output_bytes {
                    Err(CallError::Trap(format!("result of {} bytes is over the output quota", out.len())))
                } else {
                    Ok(out)
                }
            }
            Ok(Err(message)) => Err(CallError::Domain(message)),
            Err(e) => Err(match classify(e)? {
                CallError::Trap(t) if store.data().limiter.memory_refused => {
                    CallError::Trap(format!("over the memory limit of {} bytes ({t})", limits.memory_bytes))
                }
                other => other,
            }),
        };
        Ok(CallOutcome { result, fuel })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Turns a wasmtime error into a deterministic trap, or a host fault.
fn classify(e: wasmtime::Error) -> Result<CallError, HostFault> {
    if let Some(quota) = e.downcast_ref::<host::QuotaExceeded>() {
        return Ok(CallError::Trap(quota.to_string()));
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            Err(HostFault("the wasm watchdog stopped a call (it outran its fuel in wall time)".into()))
        }
        Some(wasmtime::Trap::OutOfFuel) => Ok(CallError::Trap("out of fuel".into())),
        Some(wasmtime::Trap::StackOverflow) => Ok(CallError::Trap("stack overflow".into())),
        Some(wasmtime::Trap::UnreachableCodeReached) => Ok(CallError::Trap("unreachable (a guest panic)".into())),
        Some(trap) => Ok(CallError::Trap(trap.to_string())),
        None => Err(HostFault(format!("plugin call failed in the host: {e:#}"))),
    }
}

fn fingerprint(engine: &Engine, options: &RuntimeOptions) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    "wasmtime 48.0.8".hash(&mut h);
    ABI.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    operator_cost().hash(&mut h);
    options.max_wasm_stack.hash(&mut h);
    Limits::MAX.fuel.hash(&mut h);
    let a = h.finish();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{a:016x}{:016x}", h.finish())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
