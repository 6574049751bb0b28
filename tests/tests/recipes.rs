//! Recipes from `plugins/` on a real 3-member cluster, with concurrent
//! clients over the ZooKeeper protocol (extension opcode 4096).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_tests::cluster::{Cluster, TOKEN};
use corral_tests::{Jute, Raw};
use serde_json::{Value, json};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn deploy(api: &str, name: &str) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/components/current/{name}.wasm"));
    let code = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut r = agent
        .put(format!("{api}/api/v1/plugins/{name}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send(&code[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap());
}

/// Calls the lock recipe; returns its answer and the zxid of its entry.
fn lock_call(raw: &mut Raw, args: Value) -> (Value, i64) {
    recipe(raw, "lock", args)
}

/// Calls a recipe over opcode 4096; returns its answer and its entry's zxid.
fn recipe(raw: &mut Raw, plugin: &str, args: Value) -> (Value, i64) {
    let f = raw.call(7, 4096, Jute::default().str(plugin).buf(Some(args.to_string().as_bytes())));
    assert_eq!(f.err, 0, "ZooKeeper error {}", f.err);
    let status = i32::from_be_bytes(f.body[0..4].try_into().unwrap());
    let n = i32::from_be_bytes(f.body[4..8].try_into().unwrap()) as usize;
    let payload = String::from_utf8_lossy(&f.body[8..8 + n]).into_owned();
    assert_eq!(status, 0, "{plugin} call failed: {payload}");
    (serde_json::from_str(&payload).unwrap(), f.zxid)
}

/// Acquires, polling (a real client would watch `waiting_for`); returns the
/// node and the zxid at which the lock was taken.
fn acquire(raw: &mut Raw, lock: &str) -> (String, i64) {
    acquire_as(raw, lock, "write")
}

/// Acquires in `mode` (`read` or `write`).
fn acquire_as(raw: &mut Raw, lock: &str, mode: &str) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (v, zxid) = lock_call(raw, json!({"op": "acquire", "lock": lock, "mode": mode}));
        if v["acquired"] == true {
            return (v["node"].as_str().unwrap().to_owned(), zxid);
        }
        assert!(Instant::now() < deadline, "never acquired: {v}");
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn the_lock_recipe_excludes_mutually_under_concurrent_clients_on_every_member() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[0].api(), "lock");
    let clients: Vec<_> = c.clients();
    let holds: Mutex<Vec<(i64, i64, usize)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for k in 0..6 {
            let (addr, holds) = (clients[k % 3], &holds);
            s.spawn(move || {
                let mut raw = Raw::connect(addr, 5000);
                for i in 0..12 {
                    let (node, taken) = acquire(&mut raw, "/mutex");
                    std::thread::sleep(Duration::from_millis((k as u64 + i) % 3));
                    let (v, released) = lock_call(&mut raw, json!({"op": "release", "node": node}));
                    assert_eq!(v["released"], true);
                    holds.lock().unwrap().push((taken, released, k));
                }
            });
        }
    });
    // Every hold is an interval of log indexes; no two may overlap.
    let mut holds = holds.into_inner().unwrap();
    holds.sort();
    assert_eq!(holds.len(), 72);
    for w in holds.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "client {} took the lock at {} while client {} held it until {}",
            w[1].2,
            w[1].0,
            w[0].2,
            w[0].1
        );
    }
    c.converged();
}

#[test]
fn the_read_write_lock_shares_reads_and_excludes_writes_on_every_member() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[0].api(), "lock");
    let clients: Vec<_> = c.clients();
    // (taken, released, client, writer?)
    let holds: Mutex<Vec<(i64, i64, usize, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for k in 0..6 {
            let (addr, holds) = (clients[k % 3], &holds);
            s.spawn(move || {
                let mut raw = Raw::connect(addr, 5000);
                for i in 0..10 {
                    // Clients 4 and 5 write; the others mostly read.
                    let writer = k >= 4 || (k + i) % 7 == 0;
                    let (node, taken) = acquire_as(&mut raw, "/rw", if writer { "write" } else { "read" });
                    std::thread::sleep(Duration::from_millis(if writer { 1 } else { 5 }));
                    let (v, released) = lock_call(&mut raw, json!({"op": "release", "node": node}));
                    assert_eq!(v["released"], true);
                    holds.lock().unwrap().push((taken, released, k, writer));
                }
            });
        }
    });
    let holds = holds.into_inner().unwrap();
    assert_eq!(holds.len(), 60);
    let overlap = |a: &(i64, i64, usize, bool), b: &(i64, i64, usize, bool)| a.0 < b.1 && b.0 < a.1;
    let mut shared = 0;
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if overlap(a, b) {
                assert!(!a.3 && !b.3, "a writer held the lock with another: {a:?} and {b:?}");
                shared += 1;
            }
        }
    }
    assert!(shared > 0, "readers never held the lock together: it is not shared");
    c.converged();
}

#[test]
fn a_lock_passes_on_when_its_holders_session_expires() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[1].api(), "lock");
    let mut holder = Raw::connect(c.nodes[0].client, 1000);
    let (held, _) = acquire(&mut holder, "/resource");
    let mut waiter = Raw::connect(c.nodes[2].client, 5000);
    let (v, _) = lock_call(&mut waiter, json!({"op": "acquire", "lock": "/resource"}));
    assert_eq!((v["acquired"].as_bool(), v["waiting_for"].as_str()), (Some(false), Some(held.as_str())));
    // The holder vanishes without closing its session.
    let gone = Instant::now();
    drop(holder);
    let (node, _) = acquire(&mut waiter, "/resource");
    assert_eq!(node, v["node"].as_str().unwrap());
    let waited = gone.elapsed();
    assert!(waited >= Duration::from_millis(500), "taken after {waited:?}: before the holder's session could expire");
    let f = waiter.call(8, 3, Jute::default().str(&held).bool(false));
    assert_eq!(f.err, -101, "the expired holder's node is gone");
}

#[test]
fn an_election_keeps_one_leader_through_a_corral_failover_and_passes_on_when_its_leader_leaves() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    let leader = c.leader();
    deploy(&c.nodes[leader].api(), "election");
    // Candidates on the two followers, so that they outlive the Corral
    // leader's death.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut candidates: Vec<Raw> =
        [0, 1, 0].iter().map(|&k| Raw::connect(c.nodes[followers[k]].client, 5000)).collect();
    let join = |raw: &mut Raw, id: &str| {
        recipe(raw, "election", json!({"op": "join", "election": "/elections/db", "id": id})).0
    };
    let create = Jute::default().str("/elections").buf(Some(b"")).open_acl().int(0);
    assert_eq!(candidates[0].call(1, 1, create).err, 0);
    let answers: Vec<Value> = candidates.iter_mut().enumerate().map(|(i, r)| join(r, &format!("c{i}"))).collect();
    assert_eq!(answers.iter().filter(|a| a["leader"] == true).count(), 1, "{answers:?}");
    assert_eq!((answers[0]["leader"].as_bool(), answers[2]["leader_id"].as_str()), (Some(true), Some("c0")));
    assert_eq!(answers[2]["watch"], answers[1]["node"], "each waits on the one ahead");

    // Corral's own leader dies: the election's state is replicated, and
    // re-checking gives the same single leader.
    c.nodes[leader].kill9();
    let new_leader = c.leader();
    assert_ne!(new_leader, leader);
    let again: Vec<Value> = candidates.iter_mut().enumerate().map(|(i, r)| join(r, &format!("c{i}"))).collect();
    for (a, b) in answers.iter().zip(&again) {
        assert_eq!((&a["node"], &a["leader"]), (&b["node"], &b["leader"]), "a candidacy changed across the failover");
    }

    // The leading candidate leaves (its session closes): the next leads.
    assert_eq!(candidates[0].call(9, -11, Jute::default()).err, 0);
    let (now, _) = recipe(&mut candidates[2], "election", json!({"op": "leader", "election": "/elections/db"}));
    assert_eq!(now["leader_id"], "c1");
    assert_eq!(join(&mut candidates[1], "c1")["leader"], true);
}

#[test]
fn the_queue_gives_each_item_to_exactly_one_consumer_in_fifo_order() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[0].api(), "queue");
    let clients = c.clients();
    let taken: Mutex<Vec<(i64, String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for p in 0..3 {
            let addr = clients[p];
            s.spawn(move || {
                let mut raw = Raw::connect(addr, 5000);
                for i in 0..20 {
                    recipe(&mut raw, "queue", json!({"op": "put", "queue": "/jobs", "data": format!("p{p}-{i}")}));
                }
            });
        }
        for k in 0..6 {
            let (addr, taken) = (clients[k % 3], &taken);
            s.spawn(move || {
                let mut raw = Raw::connect(addr, 5000);
                let deadline = Instant::now() + Duration::from_secs(30);
                while taken.lock().unwrap().len() < 60 && Instant::now() < deadline {
                    let (v, zxid) = recipe(&mut raw, "queue", json!({"op": "take", "queue": "/jobs"}));
                    match v["item"].as_str() {
                        Some(item) => {
                            taken.lock().unwrap().push((zxid, item.to_owned(), v["data"].as_str().unwrap().to_owned()))
                        }
                        None => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
    });
    let mut taken = taken.into_inner().unwrap();
    assert_eq!(taken.len(), 60, "every item taken once");
    let data: std::collections::BTreeSet<&String> = taken.iter().map(|t| &t.2).collect();
    assert_eq!(data.len(), 60, "no item was given twice");
    // In log order, takes come out in the order the items went in.
    taken.sort();
    for w in taken.windows(2) {
        assert!(w[0].1 < w[1].1, "{} taken after {}", w[1].1, w[0].1);
    }
    // Each producer's items come out in the order it put them.
    for p in 0..3 {
        let mine: Vec<usize> =
            taken.iter().filter_map(|t| t.2.strip_prefix(&format!("p{p}-")).map(|i| i.parse().unwrap())).collect();
        assert_eq!(mine, (0..20).collect::<Vec<_>>());
    }
    c.converged();
}

#[test]
fn a_double_barrier_and_a_group_count_concurrent_participants_on_every_member_exactly() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[0].api(), "barrier");
    deploy(&c.nodes[1].api(), "group");
    let clients = c.clients();
    let mut raws: Vec<Raw> = (0..6).map(|k| Raw::connect(clients[k % 3], 5000)).collect();
    let f = raws[0].call(1, 1, Jute::default().str("/groups").buf(Some(b"")).open_acl().int(0));
    assert_eq!(f.err, 0);
    let answers: Vec<(Value, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = raws
            .iter_mut()
            .enumerate()
            .map(|(k, raw)| {
                s.spawn(move || {
                    let b = recipe(
                        raw,
                        "barrier",
                        json!({"op": "enter", "barrier": "/stage", "size": 6, "id": format!("w{k}")}),
                    )
                    .0;
                    let g =
                        recipe(raw, "group", json!({"op": "join", "group": "/groups/g", "member": format!("m{k}")})).0;
                    (b, g)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each entry saw a distinct count, and exactly the sixth saw the
    // barrier ready; likewise for the group's size.
    let mut entered: Vec<u64> = answers.iter().map(|(b, _)| b["entered"].as_u64().unwrap()).collect();
    entered.sort();
    assert_eq!(entered, [1, 2, 3, 4, 5, 6]);
    assert_eq!(answers.iter().filter(|(b, _)| b["ready"] == true).count(), 1);
    let mut sizes: Vec<u64> = answers.iter().map(|(_, g)| g["members"].as_u64().unwrap()).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2, 3, 4, 5, 6]);
    let (members, _) = recipe(&mut raws[2], "group", json!({"op": "members", "group": "/groups/g"}));
    assert_eq!(members["members"].as_object().unwrap().len(), 6);
    // Everyone leaves; the last one out removes `ready`.
    let mut remaining: Vec<u64> = raws
        .iter_mut()
        .enumerate()
        .map(|(k, raw)| {
            recipe(raw, "barrier", json!({"op": "leave", "barrier": "/stage", "id": format!("w{k}")})).0["remaining"]
                .as_u64()
                .unwrap()
        })
        .collect();
    remaining.sort();
    assert_eq!(remaining, [0, 1, 2, 3, 4, 5]);
    // Another member shows the last leave once it has caught up: ZooKeeper's
    // guarantee is sync, then read.
    sync(&mut raws[4], "/stage");
    assert_eq!(raws[4].call(3, 3, Jute::default().str("/stage/ready").bool(false)).err, -101);
    c.converged();
}

/// Deploys a validator or trigger bound to `bind`.
fn deploy_bound(api: &str, name: &str, bind: &str) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/components/current/{name}.wasm"));
    let code = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display()));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .put(format!("{api}/api/v1/plugins/{name}?bind={bind}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send(&code[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.body_mut().read_to_string().unwrap());
}

/// A `sync`, so that this member has applied what was committed before.
fn sync(raw: &mut Raw, path: &str) {
    assert_eq!(raw.call(9, 9, Jute::default().str(path)).err, 0);
}

/// Calls a query plugin on the member `raw` is connected to (opcode 4097).
fn query(raw: &mut Raw, plugin: &str, args: Value) -> Value {
    let f = raw.call(8, 4097, Jute::default().str(plugin).buf(Some(args.to_string().as_bytes())));
    assert_eq!(f.err, 0, "ZooKeeper error {}", f.err);
    let n = i32::from_be_bytes(f.body[4..8].try_into().unwrap()) as usize;
    let payload = String::from_utf8_lossy(&f.body[8..8 + n]).into_owned();
    assert_eq!(i32::from_be_bytes(f.body[0..4].try_into().unwrap()), 0, "{plugin}: {payload}");
    serde_json::from_str(&payload).unwrap()
}

/// `getChildren` of `path`, sorted.
fn children(raw: &mut Raw, path: &str) -> Vec<String> {
    let f = raw.call(10, 8, Jute::default().str(path).bool(false));
    assert_eq!(f.err, 0, "getChildren {path}: {}", f.err);
    let count = i32::from_be_bytes(f.body[0..4].try_into().unwrap()) as usize;
    let mut at = 4;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = i32::from_be_bytes(f.body[at..at + 4].try_into().unwrap()) as usize;
        out.push(String::from_utf8_lossy(&f.body[at + 4..at + 4 + n]).into_owned());
        at += 4 + n;
    }
    out.sort();
    out
}

#[test]
fn the_registry_answers_healthy_instances_on_every_member_and_forgets_a_session_that_ends() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy(&c.nodes[0].api(), "registry");
    deploy(&c.nodes[0].api(), "registry_healthy");
    let mut clients: Vec<Raw> = c.nodes.iter().map(|n| Raw::connect(n.client, 10_000)).collect();
    assert_eq!(clients[0].call(1, 1, Jute::default().str("/services").buf(Some(b"")).open_acl().int(0)).err, 0);
    // One instance registered from each member, by its own session.
    for (i, raw) in clients.iter_mut().enumerate() {
        let args = json!({"op": "register", "service": "api", "instance": format!("i{}", i + 1),
                          "address": format!("10.0.0.{}:80", i + 1), "meta": {"zone": i}});
        assert_eq!(recipe(raw, "registry", args).0["registered"], format!("/services/api/i{}", i + 1));
    }
    // Another session cannot take over an instance.
    let f = clients[1].call(
        7,
        4096,
        Jute::default().str("registry").buf(Some(
            json!({"op": "register", "service": "api", "instance": "i1", "address": "evil:1"}).to_string().as_bytes(),
        )),
    );
    let n = i32::from_be_bytes(f.body[4..8].try_into().unwrap()) as usize;
    assert!(String::from_utf8_lossy(&f.body[8..8 + n]).contains("registered by another session"));
    // A failed health check, recorded through the log, hides i2 everywhere.
    recipe(&mut clients[1], "registry", json!({"op": "health", "service": "api", "instance": "i2", "healthy": false}));
    for raw in clients.iter_mut() {
        sync(raw, "/services");
        let healthy = query(raw, "registry_healthy", json!({"service": "api"}));
        let names: Vec<&str> =
            healthy["instances"].as_array().unwrap().iter().map(|i| i["instance"].as_str().unwrap()).collect();
        assert_eq!(names, ["i1", "i3"], "{healthy}");
        assert_eq!(healthy["instances"][1]["address"], "10.0.0.3:80");
    }
    // i3's session ends: its instance goes with it, on every member.
    let mut gone = clients.pop().unwrap();
    gone.send(99, -11, Jute::default());
    assert!(gone.recv().is_some(), "closeSession answered");
    for raw in clients.iter_mut() {
        sync(raw, "/services");
        let healthy = query(raw, "registry_healthy", json!({"service": "api"}));
        assert_eq!(healthy["instances"].as_array().unwrap().len(), 1, "{healthy}");
        assert_eq!(children(raw, "/services/api"), ["i1", "i2"]);
    }
    c.converged();
}

#[test]
fn validated_configuration_keeps_every_value_it_took_on_every_member() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    deploy_bound(&c.nodes[0].api(), "json_schema", "/config");
    deploy_bound(&c.nodes[0].api(), "config_history", "/config");
    let mut clients: Vec<Raw> = c.nodes.iter().map(|n| Raw::connect(n.client, 10_000)).collect();
    let create = |raw: &mut Raw, path: &str, data: &str| {
        raw.call(2, 1, Jute::default().str(path).buf(Some(data.as_bytes())).open_acl().int(0)).err
    };
    let set = |raw: &mut Raw, path: &str, data: &str| {
        raw.call(3, 5, Jute::default().str(path).buf(Some(data.as_bytes())).int(-1)).err
    };
    assert_eq!(create(&mut clients[0], "/config", ""), 0);
    let schema = r#"{"type":"object","required":["port"],"properties":{"port":{"type":"integer","minimum":1}}}"#;
    assert_eq!(create(&mut clients[0], "/config/.schema", schema), 0);
    // Writes from every member; the invalid ones are vetoed (BadArguments)
    // and leave no history.
    assert_eq!(create(&mut clients[0], "/config/web", r#"{"port":80}"#), 0);
    assert_eq!(set(&mut clients[1], "/config/web", r#"{"port":81}"#), 0);
    assert_eq!(set(&mut clients[2], "/config/web", r#"{"host":"no port"}"#), -8);
    assert_eq!(set(&mut clients[2], "/config/web", r#"{"port":0}"#), -8);
    assert_eq!(set(&mut clients[2], "/config/web", r#"{"port":8080}"#), 0);
    assert_eq!(clients[1].call(4, 2, Jute::default().str("/config/web").int(-1)).err, 0);
    for raw in clients.iter_mut() {
        sync(raw, "/config");
        assert_eq!(
            children(raw, "/config/.history"),
            ["web-0000000000", "web-0000000001", "web-0000000002", "web-deleted-0000000003"]
        );
        let f = raw.call(5, 4, Jute::default().str("/config/.history/web-0000000002").bool(false));
        let n = i32::from_be_bytes(f.body[0..4].try_into().unwrap()) as usize;
        assert_eq!(&f.body[4..4 + n], br#"{"port":8080}"#);
    }
    c.converged();
}
