//! What a plugin costs per call: a fresh instance from the cached
//! `InstancePre`, the call, and its host calls, against an in-memory tree.
//! And what compiling one costs (the deploy path, off the apply path).
//!
//! Needs the components: `plugins/build.sh`, then
//! `cargo bench -p corral --bench plugins`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral::plugin::{
    Access, AccessError, Context, Kind, Limits, Mode, PluginChange, Request, Runtime, RuntimeOptions,
};
use corral::proto::data::Stat;
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// A flat in-memory tree: enough for the plugins benchmarked here.
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

fn component(name: &str) -> Arc<[u8]> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/components/current/{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display())).into()
}

fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeOptions {
        max_wasm_stack: 512 << 10,
        cache_dir: dir.to_path_buf(),
        watchdog: Duration::from_secs(30),
    })
    .expect("runtime")
}

/// A change outside any schema's directory: the validator only looks.
fn no_schema_request(doc: &[u8]) -> Request {
    Request::Validate(vec![PluginChange {
        path: "/other/k1".into(),
        kind: corral::plugin::ChangeKind::DataChanged,
        data: Some(doc.to_vec()),
    }])
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ctx = Context { index: 7, time_ms: 0, session: None, principal: vec![], plugin: "bench".into() };
    let limits = Limits::default();

    let schema = component("json_schema");
    let validator = rt.ensure(Sha256::digest(&schema).into(), Kind::Validator, || schema.clone()).unwrap();
    let mut tree = Tree::default();
    tree.0.insert(
        "/cfg/.schema".into(),
        br#"{"type":"object","required":["v"],"properties":{"v":{"type":"string","maxLength":100000}}}"#.to_vec(),
    );
    let mut doc = br#"{"v":""#.to_vec();
    doc.resize(254, b'x');
    doc.extend_from_slice(br#""}"#);
    let change = |data: &[u8]| {
        Request::Validate(vec![PluginChange {
            path: "/cfg/k1".into(),
            kind: corral::plugin::ChangeKind::DataChanged,
            data: Some(data.to_vec()),
        }])
    };
    let request = change(&doc);
    for (what, r) in [("document", &request), ("no schema", &no_schema_request(&doc))] {
        let out = rt.call(&validator, &ctx, r, &limits, [0; 32], &mut tree).unwrap();
        eprintln!("json-schema validator, {what}: {} fuel", out.fuel);
    }
    let mut g = c.benchmark_group("plugin call");
    g.bench_function("json-schema validator, 256-byte document", |b| {
        b.iter(|| {
            let out = rt.call(&validator, &ctx, &request, &limits, [0; 32], &mut tree).unwrap();
            assert!(out.result.is_ok());
        })
    });
    let no_schema = no_schema_request(&doc);
    g.bench_function("json-schema validator, no schema (instantiate, one host call)", |b| {
        b.iter(|| rt.call(&validator, &ctx, &no_schema, &limits, [0; 32], &mut tree).unwrap())
    });
    let counter = component("counter");
    let recipe = rt.ensure(Sha256::digest(&counter).into(), Kind::Recipe, || counter.clone()).unwrap();
    let args = Request::Call(br#"{"path":"/counters/a","by":1}"#.to_vec());
    g.bench_function("counter recipe (a get and a set)", |b| {
        b.iter(|| {
            let out = rt.call(&recipe, &ctx, &args, &limits, [0; 32], &mut tree).unwrap();
            assert!(out.result.is_ok());
        })
    });
    // The same kind of call in each guest language: a validator looking
    // at one created node, with no host calls.
    let created = |path: &str, data: &[u8]| {
        Request::Validate(vec![PluginChange {
            path: path.into(),
            kind: corral::plugin::ChangeKind::Created,
            data: Some(data.to_vec()),
        }])
    };
    for (name, file, request) in [
        ("C: DNS-label name validator", "c_names", created("/hosts/web-1", b"")),
        ("JavaScript (QuickJS): percentage validator", "js_percent", created("/pct/cpu", b"42")),
    ] {
        let code = component(file);
        let compiled = rt.ensure(Sha256::digest(&code).into(), Kind::Validator, || code.clone()).unwrap();
        let out = rt.call(&compiled, &ctx, &request, &limits, [0; 32], &mut tree).unwrap();
        assert!(out.result.is_ok(), "{name}: {:?}", out.result);
        eprintln!("{name}: {} fuel", out.fuel);
        g.bench_function(name, |b| b.iter(|| rt.call(&compiled, &ctx, &request, &limits, [0; 32], &mut tree).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("plugin compile");
    g.sample_size(10);
    g.bench_function("json-schema validator (98 KB), cold", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            runtime(dir.path()).check(Kind::Validator, &schema).unwrap()
        })
    });
    g.finish();
}

criterion_group!(plugins, benches);
criterion_main!(plugins);
