//! What each fuzz target does with its input, shared by the libFuzzer
//! binaries (`fuzz_targets/`, run with `cargo fuzz run <target>`) and the
//! replay of the committed corpora (`tests/replay.rs`, in the test command).
//!
//! Every target states the property it checks: untrusted bytes at one of
//! Corral's boundaries give a value or a typed error, never a panic, a hang
//! or a host fault.
//!
//! | target | boundary |
//! |---|---|
//! | `connection` | a client's byte stream: frames, the handshake, every request body |
//! | `log_entry` | a Raft log entry as stored, and applying its command |
//! | `snapshot` | a snapshot stream installed over a live state |
//! | `admin_body` | admin API request bodies, through their validation |
//! | `config` | a configuration file |
//! | `plugin_input` | arguments and documents handed to Wasm plugins |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use corral::machine::command::Command;
use corral::machine::{Applied, ApplySink, EntryRef, Payload, StateDb, StateOptions};
use corral::plugin::{Access, AccessError, ChangeKind, Compiled, Context, Kind, Limits, Mode, PluginChange, Request};
use corral::proto::data::Stat;

/// A client connection's bytes: split into frames as the server does; the
/// first is the `ConnectRequest`, the rest requests.
pub fn connection(data: &[u8]) {
    use corral::proto::{ConnectRequest, request::decode_request, split_frame};
    let mut buf = bytes::BytesMut::from(data);
    let mut first = true;
    // Frames up to 64 KiB here: the limit is a parameter, not the property.
    while let Ok(Some(frame)) = split_frame(&mut buf, 64 << 10) {
        if std::mem::take(&mut first) {
            let _ = ConnectRequest::decode(&frame);
        } else {
            let _ = decode_request(&frame);
        }
    }
}

/// A fresh state for each process, re-opened when a command halted it.
fn state() -> &'static Mutex<(tempfile::TempDir, StateDb)> {
    static STATE: OnceLock<Mutex<(tempfile::TempDir, StateDb)>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(open_state()))
}

fn open_state() -> (tempfile::TempDir, StateDb) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = StateOptions {
        cache_bytes: 1 << 20,
        sync_interval: Duration::from_secs(3600),
        event_history: 100,
        allow_gaps: false,
    };
    let db = StateDb::open(&dir.path().join("state.redb"), options, None).expect("state opens");
    (dir, db)
}

struct Discard;

impl ApplySink for Discard {
    fn publish(&self, _: u64, _: Vec<Applied>) {}
    fn installed(&self, _: u64, _: Vec<(i64, i32)>) {}
}

/// A stored log entry's bytes: decoding fails cleanly or yields an entry;
/// a command that decodes applies to a state without panicking (a
/// malformed command gets an error outcome, or halts the state, which is
/// then opened afresh).
pub fn log_entry(data: &[u8]) {
    let _ = postcard::from_bytes::<corral::raft::log_store::Entry>(data);
    let Ok(command) = postcard::from_bytes::<Command>(data) else { return };
    let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
    let index = guard.1.applied_index() + 1;
    let entry = EntryRef { index, log_id: index.to_le_bytes().to_vec(), payload: Payload::Command(&command) };
    if guard.1.apply(&[entry], &Discard).is_err() {
        *guard = open_state();
    }
}

/// A snapshot stream: installing it fails with a typed error or succeeds,
/// and the state stays usable either way.
pub fn snapshot(data: &[u8]) {
    let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
    let _ = guard.1.install(&mut &data[..], &Discard);
    if guard.1.recompute_digest().is_err() {
        *guard = open_state();
    }
}

/// An admin API body: the first byte picks the route, the rest is its
/// JSON body, validated as the handler does before anything is proposed.
pub fn admin_body(data: &[u8]) {
    use corral::http::{admin, plugins, sessions, subtree, tree};
    let Some((&route, body)) = data.split_first() else { return };
    match route % 8 {
        0 => {
            if let Ok(b) = serde_json::from_slice::<tree::CreateBody>(body) {
                let _ = b.write();
            }
        }
        1 => {
            if let Ok(b) = serde_json::from_slice::<subtree::ImportBody>(body) {
                for n in &b.nodes {
                    let _ = subtree::create_op(&b.path, n);
                }
            }
        }
        2 => drop(serde_json::from_slice::<tree::SetBody>(body)),
        3 => drop(serde_json::from_slice::<tree::AclBody>(body)),
        4 => drop(serde_json::from_slice::<admin::NewToken>(body)),
        5 => drop(serde_json::from_slice::<admin::AddMember>(body)),
        6 => drop(serde_json::from_slice::<sessions::OpenBody>(body)),
        _ => drop(serde_json::from_slice::<plugins::Enable>(body)),
    }
}

/// A configuration file's text: it loads, or is refused with a message.
pub fn config(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("corral.toml");
    std::fs::write(&file, data).expect("writes");
    let _ = corral::config::Config::load(Some(&file), ());
}

/// A flat in-memory tree for plugins to read and write.
#[derive(Default)]
struct Tree(BTreeMap<String, Vec<u8>>);

impl Access for Tree {
    fn get(&mut self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, AccessError> {
        Ok(self.0.get(path).map(|d| (d.clone(), Stat { data_length: d.len() as i32, ..Stat::default() })))
    }
    fn children(&mut self, _: &str) -> Result<Vec<String>, AccessError> {
        Ok(Vec::new())
    }
    fn create(&mut self, path: &str, data: Vec<u8>, _: Mode) -> Result<String, AccessError> {
        self.0.insert(path.to_owned(), data);
        Ok(path.to_owned())
    }
    fn set(&mut self, path: &str, data: Vec<u8>, _: i32) -> Result<Stat, AccessError> {
        self.0.insert(path.to_owned(), data);
        Ok(Stat::default())
    }
    fn delete(&mut self, path: &str, _: i32) -> Result<(), AccessError> {
        self.0.remove(path);
        Ok(())
    }
}

struct Plugins {
    _dir: tempfile::TempDir,
    runtime: corral::plugin::Runtime,
    schema: Arc<Compiled>,
    counter: Arc<Compiled>,
}

fn plugins() -> &'static Plugins {
    static PLUGINS: OnceLock<Plugins> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = corral::plugin::Runtime::new(corral::plugin::RuntimeOptions {
            max_wasm_stack: 512 << 10,
            cache_dir: dir.path().to_path_buf(),
            watchdog: Duration::from_secs(30),
        })
        .expect("the plugin runtime");
        let load = |name: &str, kind: Kind| {
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../plugins/target/components/current/{name}.wasm"));
            let code: Arc<[u8]> =
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display())).into();
            let hash = <sha2::Sha256 as sha2::Digest>::digest(&code).into();
            runtime.ensure(hash, kind, || code.clone()).expect("compiles")
        };
        let schema = load("json_schema", Kind::Validator);
        let counter = load("counter", Kind::Recipe);
        Plugins { _dir: dir, runtime, schema, counter }
    })
}

/// Bytes handed to plugins: a recipe's arguments (first byte even), or a
/// JSON schema and a document for the schema validator, split at the first
/// NUL. Whatever the guest makes of them, the host answers with an outcome:
/// never a host fault.
pub fn plugin_input(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let p = plugins();
    let ctx = Context { index: 1, time_ms: 0, session: None, principal: vec![], plugin: "fuzz".into() };
    let limits = Limits { fuel: 20_000_000, ..Limits::default() };
    let mut tree = Tree::default();
    let outcome = if pick % 2 == 0 {
        p.runtime.call(&p.counter, &ctx, &Request::Call(rest.to_vec()), &limits, [0; 32], &mut tree)
    } else {
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        tree.0.insert("/cfg/.schema".into(), rest[..cut].to_vec());
        let doc = rest.get(cut + 1..).unwrap_or_default().to_vec();
        let change = PluginChange { path: "/cfg/k".into(), kind: ChangeKind::DataChanged, data: Some(doc) };
        p.runtime.call(&p.schema, &ctx, &Request::Validate(vec![change]), &limits, [0; 32], &mut tree)
    };
    if let Err(fault) = outcome {
        panic!("a host fault on guest input: {}", fault.0);
    }
}
