//! Wasm plugins on a real cluster: hostile guests, determinism across
//! members (one of them restored from a snapshot), fail-stop on an engine
//! fingerprint mismatch, an engine upgrade, and upgrade and rollback under
//! load.
//!
//! The components come from `plugins/build.sh` (tests/run.sh runs it
//! first); a missing build is a failure, not a skip.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral_tests::cluster::{Cluster, SECRET, TOKEN};
use corral_tests::{Corral, Jute, Raw, eventually};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ZooKeeper extension opcode for recipe calls, and its statuses.
const CALL: i32 = 4096;
const OK: i32 = 0;
const DOMAIN_ERROR: i32 = 1;
const TRAP: i32 = 2;

fn component(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/components/current/{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Deploys `file` as `name` through member `c`; returns (HTTP status, body).
fn deploy(c: &Corral, name: &str, file: &str, query: &str) -> (u16, serde_json::Value) {
    let mut r = agent()
        .put(format!("{}/api/v1/plugins/{name}?{query}", c.api()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/wasm")
        .send(&component(file)[..])
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or_default())
}

fn deployed(c: &Corral, name: &str, file: &str, query: &str) -> serde_json::Value {
    let (status, body) = deploy(c, name, file, query);
    assert_eq!(status, 200, "deploying {name}: {body}");
    body
}

/// Calls a plugin over the admin API: (status, body, zxid).
fn http_call(api: &str, name: &str, args: &[u8]) -> (u16, Vec<u8>, i64) {
    let mut r = agent()
        .post(format!("{api}/api/v1/plugins/{name}/call"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send(args)
        .unwrap();
    let status = r.status().as_u16();
    let zxid = r.headers().get("x-corral-zxid").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(-1);
    (status, r.body_mut().read_to_vec().unwrap(), zxid)
}

fn plugins_json(c: &Corral) -> serde_json::Value {
    let (status, body) = c.http_get_as("/api/v1/plugins", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A recipe call over the ZooKeeper protocol: (status, payload).
fn zk_call(raw: &mut Raw, xid: i32, plugin: &str, args: &[u8]) -> (i32, String) {
    let f = raw.call(xid, CALL, Jute::default().str(plugin).buf(Some(args)));
    assert_eq!(f.err, 0, "call {plugin}: ZooKeeper error {}", f.err);
    let status = i32::from_be_bytes(f.body[0..4].try_into().unwrap());
    let n = i32::from_be_bytes(f.body[4..8].try_into().unwrap()) as usize;
    (status, String::from_utf8_lossy(&f.body[8..8 + n]).into_owned())
}

fn create(raw: &mut Raw, path: &str, data: &[u8]) -> i32 {
    raw.call(1, 1, Jute::default().str(path).buf(Some(data)).open_acl().int(0)).err
}

fn exists(raw: &mut Raw, path: &str) -> bool {
    let f = raw.call(2, 3, Jute::default().str(path).bool(false));
    assert!(f.err == 0 || f.err == -101, "exists {path}: {}", f.err);
    f.err == 0
}

#[test]
fn hostile_plugins_fail_only_their_own_call_and_members_stay_identical() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deployed(&c.nodes[0], "hostile", "hostile", "breaker=0");
    let mut raws: Vec<Raw> = c.nodes.iter().map(|n| Raw::connect(n.client, 5000)).collect();
    assert_eq!(create(&mut raws[0], "/hostile", b""), 0);

    let cases: [(&str, &str); 7] = [
        ("loop", "out of fuel"),
        ("grow", "memory"),
        ("recurse", "stack overflow"),
        ("output", "output quota"),
        ("partial", "guest panic"),
        ("panic", "guest panic"),
        ("hostcalls", "host calls quota"),
    ];
    for (i, (mode, why)) in cases.iter().enumerate() {
        let raw = &mut raws[i % 3];
        let (status, message) = zk_call(raw, 10 + i as i32, "hostile", mode.as_bytes());
        assert_eq!(status, TRAP, "{mode}: {message}");
        assert!(message.contains(why), "{mode}: {message:?} does not say {why:?}");
        // The member that took the call still serves, and the trap left
        // nothing behind.
        assert_eq!(zk_call(raw, 50, "hostile", b"ok").0, OK, "after {mode}");
    }
    assert!(!exists(&mut raws[1], "/hostile/partial-0"), "a trap after writes must leave none of them");
    let (status, message) = zk_call(&mut raws[2], 60, "hostile", b"bogus");
    assert_eq!((status, message.as_str()), (DOMAIN_ERROR, "unknown mode \"bogus\""));

    // An import outside its world is refused at deploy, before the log.
    let (status, body) = deploy(&c.nodes[1], "sneaky", "hostile", "kind=validator&bind=/x");
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("corral:plugin/write"), "{body}");
    assert!(plugins_json(&c.nodes[0]).as_array().unwrap().iter().all(|p| p["name"] != "sneaky"));

    // A legal but slow plugin, with the most fuel a deploy may ask for,
    // runs out of fuel long before the watchdog (30 s by default) could
    // stop the node.
    deployed(&c.nodes[0], "slow", "hostile", "fuel=1000000000");
    let started = Instant::now();
    let (status, message) = zk_call(&mut raws[0], 70, "slow", b"loop");
    let took = started.elapsed();
    assert_eq!((status, message.as_str()), (TRAP, "plugin trapped: out of fuel"));
    eprintln!("a call with 10^9 fuel ran out of it in {took:?}");
    assert!(took < Duration::from_secs(15), "10^9 fuel took {took:?}: too close to the watchdog");

    // The breaker: three consecutive traps disable a plugin on every
    // member, until a new deploy.
    deployed(&c.nodes[0], "fragile", "hostile", "breaker=3");
    for i in 0..3 {
        assert_eq!(zk_call(&mut raws[i], 80, "fragile", b"panic").0, TRAP);
    }
    let (status, message) = zk_call(&mut raws[0], 81, "fragile", b"ok");
    assert_eq!(status, TRAP);
    assert!(message.contains("disabled after 3 consecutive traps"), "{message}");
    let (index, digest) = c.converged();
    for n in &c.nodes {
        let fragile = plugins_json(n).as_array().unwrap().iter().find(|p| p["name"] == "fragile").unwrap().clone();
        assert_eq!((fragile["disabled"].as_bool(), fragile["traps"].as_u64()), (Some(true), Some(3)));
    }
    deployed(&c.nodes[2], "fragile", "hostile", "breaker=3");
    assert_eq!(zk_call(&mut raws[1], 82, "fragile", b"ok").0, OK);

    let (index2, digest2) = c.converged();
    assert!(index2 > index && digest2 != digest);
    let lists: Vec<serde_json::Value> = c.nodes.iter().map(plugins_json).collect();
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "members disagree on plugin state: {lists:#?}");
    eprintln!("members converged at {index2} with digest {digest2}");
}

#[test]
fn the_same_plugin_workload_gives_identical_digests_and_fuel_on_every_member_and_after_a_snapshot() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    // Snapshots often, and little log kept: a member added later is sent
    // a snapshot, plugins included.
    let settings = [("snapshot_every_entries", "40"), ("snapshot_logs_to_keep", "5")];
    let mut c = Cluster::start(dir.path(), 3, &settings, false);
    deployed(&c.nodes[0], "counter", "counter", "");
    deployed(&c.nodes[1], "schemas", "json_schema", "bind=/cfg");
    deployed(&c.nodes[2], "kids", "child_counter", "bind=/svc");
    deployed(&c.nodes[0], "hostile", "hostile", "breaker=0");
    // A JavaScript guest (QuickJS) runs alike on every member too.
    deployed(&c.nodes[1], "pct", "js_percent", "bind=/pct");
    // And a C guest (clang, wasi-libc).
    deployed(&c.nodes[2], "names", "c_names", "bind=/hosts");
    // Every member compiles it before applying past its deploy (1.6 MB of
    // QuickJS takes seconds in a debug build): wait for all of them.
    c.converged();
    let mut raws: Vec<Raw> = c.nodes.iter().map(|n| Raw::connect(n.client, 5000)).collect();
    for p in ["/counters", "/cfg", "/svc", "/hostile", "/pct", "/hosts"] {
        assert_eq!(create(&mut raws[0], p, b""), 0);
    }
    assert_eq!(create(&mut raws[1], "/cfg/.schema", br#"{"type":"object","required":["n"]}"#), 0);

    let mut randoms = Vec::new();
    let workload = |raws: &mut Vec<Raw>, round: usize, n: usize, randoms: &mut Vec<String>| {
        for i in 0..n {
            let k = round * 100 + i;
            let raw = &mut raws[k % 3];
            let args = format!(r#"{{"path":"/counters/c{}","by":{}}}"#, k % 4, k);
            assert_eq!(zk_call(raw, 1, "counter", args.as_bytes()).0, OK);
            assert_eq!(create(raw, &format!("/svc/s{k}"), b""), 0);
            let ok = format!(r#"{{"n":{k}}}"#);
            assert_eq!(create(raw, &format!("/cfg/good{k}"), ok.as_bytes()), 0);
            assert_eq!(create(raw, &format!("/cfg/bad{k}"), b"{}"), -8, "the validator must refuse it");
            let pct = (k % 150).to_string();
            let want = if k % 150 <= 100 { 0 } else { -8 };
            assert_eq!(create(raw, &format!("/pct/v{k}"), pct.as_bytes()), want, "the JavaScript validator on {pct}");
            let host = if k % 7 == 0 { format!("Host_{k}") } else { format!("host-{k}") };
            let want = if k % 7 == 0 { -8 } else { 0 };
            assert_eq!(create(raw, &format!("/hosts/{host}"), b""), want, "the C validator on {host}");
            let (status, r) = zk_call(raw, 2, "hostile", if k % 5 == 0 { b"panic" } else { b"random" });
            if status == OK {
                randoms.push(r);
            }
        }
    };
    // Enough entries that the leader purges its log (in batches of 256)
    // behind a snapshot.
    workload(&mut raws, 0, 70, &mut randoms);

    // A fourth member joins mid-way: far behind the kept log, it installs
    // a snapshot, then applies (and runs plugins) from there.
    let mut four = Corral::configure(&dir.path().join("node-4"), &settings);
    for (k, v) in [("node_id", "4"), ("join", "true"), ("cluster_secret", SECRET)] {
        four.set(k, v);
    }
    four.admin_token = Some(TOKEN.into());
    four.spawn();
    let body = serde_json::json!({ "id": 4, "raft_addr": four.raft.to_string() });
    let mut r = agent()
        .post(format!("{}/api/v1/cluster/members", c.nodes[0].api()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send_json(body)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap());
    four.wait_ready();
    let built: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.log().lines().filter(|l| l.contains("snapshot")).collect::<Vec<_>>().join("\n"))
        .collect();
    assert!(
        four.log().contains("snapshot installed"),
        "the new member was not sent a snapshot:\n{}\n{built:#?}",
        four.log()
    );

    // Fresh sessions: the old ones idled past their timeout while the new
    // member joined (raw clients send no pings).
    let mut raws: Vec<Raw> = c.nodes.iter().map(|n| Raw::connect(n.client, 5000)).collect();
    workload(&mut raws, 1, 30, &mut randoms);
    // The new member compiles the snapshot's plugins once it has installed
    // it, and applies no entry that calls one before that (QuickJS takes
    // seconds in a debug build). A session opened on it meanwhile starts its
    // timeout at the leader's apply but hears of its ConnectResponse only
    // after that wait, and a raw client sends no pings: let it catch up.
    c.nodes.push(four);
    c.converged();
    let mut r4 = Raw::connect(c.nodes[3].client, 5000);
    assert_eq!(zk_call(&mut r4, 3, "counter", br#"{"path":"/counters/four"}"#), (OK, "1".to_string()));
    let (index, digest) = c.converged();

    // Plugin records hold calls, traps and fuel: equal everywhere.
    let lists: Vec<serde_json::Value> = c.nodes.iter().map(plugins_json).collect();
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "plugin state differs: {lists:#?}");
    let fuel: Vec<u64> = lists[0].as_array().unwrap().iter().map(|p| p["fuel_used"].as_u64().unwrap()).collect();
    assert!(fuel.iter().all(|&f| f > 0), "{fuel:?}");
    // The trigger kept its count in the same entries, on every member (read
    // on the new one, over a fresh session: the others idled out).
    let count = Raw::connect(c.nodes[3].client, 5000).call(4, 4, Jute::default().str("/svc.count").bool(false));
    assert_eq!(&count.body[4..7], b"100");
    // env.random differs between calls (and agrees between members: the
    // digest covers the nodes, the results came from the log).
    let distinct: std::collections::BTreeSet<&String> = randoms.iter().collect();
    assert_eq!(distinct.len(), randoms.len(), "random repeated");
    eprintln!("4 members converged at {index}, digest {digest}; plugin fuel {fuel:?}");
}

#[test]
fn a_member_whose_engine_fingerprint_differs_stops_applying_and_the_others_go_on() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    // Member 3 runs wasm with another stack size: where a deep recursion
    // traps could differ, so it must not run plugins with the others.
    c.nodes[2].stop();
    c.nodes[2].set("plugin_max_wasm_stack_bytes", "1048576");
    c.nodes[2].restart();
    // It must not lead: a leader that stops leaves the deploy's outcome
    // unknown to its client (the others commit it all the same).
    while c.leader() == 2 {
        // (kill -9: a SIGTERM this soon after start-up, before the signal
        // handler is installed, ends the process with the signal.)
        c.nodes[2].kill9();
        c.leader();
        c.nodes[2].restart();
    }
    let leader = c.leader();
    deployed(&c.nodes[leader], "counter", "counter", "");
    assert!(
        eventually(Duration::from_secs(20), || !c.nodes[2].is_running()),
        "member 3 should have stopped:\n{}",
        c.nodes[2].log()
    );
    let log = c.nodes[2].log();
    assert!(log.contains("fingerprint") && log.contains("differs from the cluster's"), "{log}");
    let mut raw = Raw::connect(c.nodes[1].client, 5000);
    assert_eq!(create(&mut raw, "/counters", b""), 0);
    for i in 1..=20 {
        let (status, out) = zk_call(&mut raw, i, "counter", br#"{"path":"/counters/a"}"#);
        assert_eq!((status, out), (OK, i.to_string()));
    }
    c.nodes.truncate(2);
    c.converged();
}

/// `POST` to the admin API: (status, JSON body).
fn post(c: &Corral, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut r = agent()
        .post(format!("{}{path}", c.api()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or_default())
}

fn engine(c: &Corral) -> serde_json::Value {
    let (status, body) = c.http_get_as("/api/v1/plugin-engine", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A Corral upgrade that changes the wasm engine, on a cluster with
/// plugins: pause plugins, move every member to the new engine one by one
/// (here: another wasm stack size, which is part of the fingerprint), and
/// adopt it. No member stops, plain writes go on throughout, and plugins
/// take up their state where they left it.
#[test]
fn an_engine_upgrade_pauses_plugins_rolls_every_member_and_adopts_the_new_engine() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deployed(&c.nodes[0], "counter", "counter", "");
    deployed(&c.nodes[0], "schemas", "json_schema", "bind=/cfg");
    let mut raw = Raw::connect(c.nodes[0].client, 5000);
    for p in ["/counters", "/cfg", "/plain"] {
        assert_eq!(create(&mut raw, p, b""), 0);
    }
    assert_eq!(create(&mut raw, "/cfg/.schema", br#"{"type":"object","required":["n"]}"#), 0);
    assert_eq!(zk_call(&mut raw, 3, "counter", br#"{"path":"/counters/a"}"#), (OK, "1".to_string()));
    let old = engine(&c.nodes[0]);
    assert!(old["cluster"].is_string() && old["paused_zxid"].is_null(), "{old}");
    assert_eq!(old["adoptable"], old["cluster"], "{old}");

    let (ok, out, err) = cli(&c.nodes[1], &["plugin", "engine", "pause"]);
    assert!(ok && out.contains("plugins paused since zxid"), "{out}{err}");
    assert!(engine(&c.nodes[1])["paused_zxid"].is_u64(), "{}", engine(&c.nodes[1]));
    // Paused: recipe calls fail, validated writes are refused, deploys too;
    // plain writes go on.
    let (status, out) = zk_call(&mut raw, 4, "counter", br#"{"path":"/counters/a"}"#);
    assert!(status == TRAP && out.contains("paused"), "{status} {out}");
    assert_eq!(create(&mut raw, "/cfg/x", br#"{"n":1}"#), -8);
    let (status, body) = deploy(&c.nodes[2], "counter", "counter", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("paused"), "{body}");

    let mut new_engine = None;
    for i in 0..3 {
        c.nodes[i].stop();
        c.nodes[i].set("plugin_max_wasm_stack_bytes", "1048576");
        c.nodes[i].restart();
        c.leader();
        let local = engine(&c.nodes[i])["local"].clone();
        assert_ne!(local, old["cluster"], "the new setting must change the fingerprint");
        new_engine = Some(local.clone());
        let published =
            eventually(Duration::from_secs(30), || engine(&c.nodes[(i + 1) % 3])["members"][i]["engine"] == local);
        assert!(published, "member {} did not publish its build: {}", i + 1, engine(&c.nodes[(i + 1) % 3]));
        let mut raw = Raw::connect(c.nodes[(i + 1) % 3].client, 5000);
        assert_eq!(create(&mut raw, &format!("/plain/p{i}"), b""), 0);
        let (status, _) = zk_call(&mut raw, 2, "counter", br#"{"path":"/counters/a"}"#);
        assert_eq!(status, TRAP);
        if i < 2 {
            // Not every member runs the new engine yet.
            let (status, body) = post(&c.nodes[i], "/api/v1/plugin-engine/adopt", "{}");
            assert_eq!(status, 409, "{body}");
        }
    }
    // Apply re-checks what is adopted against the members' builds.
    let (status, body) = post(&c.nodes[0], "/api/v1/plugin-engine/adopt", r#"{"fingerprint":"0123"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("members 1"), "{body}");
    let (status, adopted) = post(&c.nodes[2], "/api/v1/plugin-engine/adopt", "{}");
    assert_eq!(status, 200, "{adopted}");
    assert_eq!(Some(adopted["cluster"].clone()), new_engine, "{adopted}");
    assert!(adopted["paused_zxid"].is_null(), "{adopted}");

    let mut raw = Raw::connect(c.nodes[1].client, 5000);
    assert_eq!(zk_call(&mut raw, 5, "counter", br#"{"path":"/counters/a"}"#), (OK, "2".to_string()));
    assert_eq!(create(&mut raw, "/cfg/x", br#"{"n":1}"#), 0);
    assert_eq!(create(&mut raw, "/cfg/y", br#"{"m":1}"#), -8, "the validator runs again");
    deployed(&c.nodes[0], "counter", "counter", "");
    assert!(c.nodes.iter_mut().all(|n| n.is_running()));
    c.converged();
}

#[test]
fn upgrade_and_rollback_under_load_switch_every_call_at_one_log_index() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deployed(&c.nodes[0], "versioned", "versioned_v1", "");
    let mut raw = Raw::connect(c.nodes[0].client, 5000);
    assert_eq!(create(&mut raw, "/versioned", b""), 0);

    let stop = AtomicBool::new(false);
    let calls: Mutex<Vec<(i64, String)>> = Mutex::new(Vec::new());
    let apis: Vec<String> = c.nodes.iter().map(Corral::api).collect();
    let (v2_zxid, rollback_zxid) = std::thread::scope(|s| {
        for api in &apis {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let (status, out, zxid) = http_call(api, "versioned", b"");
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
                        calls.lock().unwrap().push((zxid, String::from_utf8(out).unwrap()));
                    }
                });
            }
        }
        std::thread::sleep(Duration::from_millis(800));
        let v2 = deployed(&c.nodes[1], "versioned", "versioned_v2", "");
        std::thread::sleep(Duration::from_millis(800));
        let mut r = agent()
            .post(format!("{}/api/v1/plugins/versioned/rollback", c.nodes[2].api()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send_empty()
            .unwrap();
        let body: serde_json::Value = r.body_mut().read_json().unwrap();
        assert_eq!(body["plugin"]["active"], v2["plugin"]["versions"][0]["sha256"], "{body}");
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Ordering::Relaxed);
        (v2["zxid"].as_i64().unwrap(), body["zxid"].as_i64().unwrap())
    });
    let calls = calls.into_inner().unwrap();
    // Every call ran wholly on the version active at its index: v1 before
    // the upgrade's entry, v2 from it until the rollback, v1 after.
    let mut per_phase = [0usize; 3];
    for (zxid, version) in &calls {
        assert!(*zxid != v2_zxid && *zxid != rollback_zxid, "a call shares an index with a deploy");
        let (phase, want) = if *zxid < v2_zxid {
            (0, "1")
        } else if *zxid > rollback_zxid {
            (2, "1")
        } else {
            (1, "2")
        };
        assert_eq!(version, want, "call at zxid {zxid} (upgrade at {v2_zxid}, rollback at {rollback_zxid})");
        per_phase[phase] += 1;
    }
    assert!(per_phase.iter().all(|&n| n > 5), "too few calls per phase: {per_phase:?}");
    let a = raw.call(3, 4, Jute::default().str("/versioned/a").bool(false));
    let b = raw.call(3, 4, Jute::default().str("/versioned/b").bool(false));
    assert_eq!(a.body[..5], b.body[..5]);
    c.converged();
    eprintln!("{} calls: {per_phase:?} per phase; upgrade at {v2_zxid}, rollback at {rollback_zxid}", calls.len());
}

fn cli(c: &Corral, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(corral_tests::binary())
        .args(["--api", &c.api(), "--token", TOKEN])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A member loads its plugins as it opens its state (and as it installs a
/// snapshot), not when the first entry calls one: that entry would wait for
/// the compile on the apply path.
#[test]
fn a_restarted_member_prepares_its_plugins_before_any_call() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 1, &[], false);
    deployed(&c.nodes[0], "counter", "counter", "");
    let compiled = |n: &Corral| n.log().matches("plugin compiled").count();
    assert_eq!(compiled(&c.nodes[0]), 1);
    c.nodes[0].stop();
    c.nodes[0].restart();
    let ready = eventually(Duration::from_secs(20), || compiled(&c.nodes[0]) == 2);
    assert!(ready, "not loaded at start-up:\n{}", c.nodes[0].log());
    // The call finds it ready: no second load.
    let mut raw = Raw::connect(c.nodes[0].client, 5000);
    assert_eq!(create(&mut raw, "/counters", b""), 0);
    assert_eq!(zk_call(&mut raw, 2, "counter", br#"{"path":"/counters/a"}"#), (OK, "1".to_string()));
    assert_eq!(compiled(&c.nodes[0]), 2);
}

#[test]
fn the_cli_deploys_lists_inspects_calls_rolls_back_and_removes_plugins() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 1, &[], false);
    let n = &c.nodes[0];
    let file = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../plugins/target/components/current/{name}.wasm"))
            .display()
            .to_string()
    };
    let (ok, out, err) =
        cli(n, &["plugin", "deploy", "v", &file("versioned_v1"), "--fuel", "2000000", "--breaker", "4"]);
    assert!(ok && out.starts_with("deployed v ("), "{out}{err}");
    let (ok, _, err) = cli(n, &["plugin", "deploy", "v", &file("versioned_v2")]);
    assert!(ok, "{err}");
    let mut raw = Raw::connect(n.client, 5000);
    assert_eq!(create(&mut raw, "/versioned", b""), 0);
    assert_eq!(cli(n, &["plugin", "call", "v"]).1, "2\n");
    // Over the ZooKeeper port, with the client's call_plugin (opcode 4096).
    let zk = std::process::Command::new(corral_tests::binary())
        .args(["--server", &n.client.to_string(), "plugin", "call", "v"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&zk.stdout), "2\n", "{}", String::from_utf8_lossy(&zk.stderr));
    let missing = std::process::Command::new(corral_tests::binary())
        .args(["--server", &n.client.to_string(), "plugin", "call", "nope"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3), "{}", String::from_utf8_lossy(&missing.stderr));

    let (ok, out, _) = cli(n, &["--json", "plugin", "info", "v"]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!((info["kind"].as_str(), info["versions"].as_array().unwrap().len()), (Some("recipe"), 2));
    assert_eq!(info["active"], info["versions"][1]["sha256"]);
    // The second deploy gave no limits: defaults again.
    assert_eq!((info["fuel_limit"].as_u64(), info["breaker"].as_u64()), (Some(10_000_000), Some(10)));
    let (ok, out, _) = cli(n, &["plugin", "list"]);
    assert!(ok && out.starts_with("v\trecipe\t") && out.contains("calls 2"), "{out}");

    let (ok, out, err) = cli(n, &["plugin", "rollback", "v"]);
    assert!(ok && out.contains("is back at"), "{out}{err}");
    assert_eq!(cli(n, &["plugin", "call", "v"]).1, "1\n");
    let (ok, _, err) = cli(n, &["plugin", "rollback", "v"]);
    assert!(!ok && err.contains("no earlier version"), "{err}");

    let (ok, out, _) = cli(n, &["plugin", "remove", "v"]);
    assert!(ok && out == "removed v\n");
    let (ok, _, err) = cli(n, &["plugin", "info", "v"]);
    assert!(!ok && err.contains("no plugin named v"), "{err}");
    let (ok, _, err) = cli(n, &["plugin", "call", "v"]);
    assert!(!ok && err.contains("no plugin named v"), "{err}");
    // The code of a removed plugin is gone from the state too.
    let (status, body) = n.http_get_as("/api/v1/plugins", Some(TOKEN));
    assert_eq!((status, body.as_str()), (200, "[]"));
}
