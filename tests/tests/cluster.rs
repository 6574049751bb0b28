//! Replicated Corral: real `corral serve` processes on loopback, real
//! crashes (kill -9), partitions through a fault proxy, membership changes,
//! and sessions that move between members. Every load test records a
//! history and runs the checker over it, then compares the members'
//! digests at the same applied index.
//!
//! Clusters are started one at a time (`SERIAL`): two cores do not run
//! several multi-process clusters well.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corral_tests::checker::{self, History, OpKind, Outcome};
use corral_tests::cluster::{Cluster, TOKEN};
use corral_tests::workload::{self, more_writes};
use corral_tests::{Corral, Jute, Raw, eventually};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const KEYS: usize = 8;

fn check_history(c: &mut Cluster, h: History) -> checker::Report {
    workload::check(c, h, KEYS)
}

#[test]
fn the_leader_of_three_is_killed_under_load_and_nothing_acknowledged_is_lost() {
    leader_killed_under_load(3);
}

#[test]
fn the_leader_of_five_is_killed_under_load_and_nothing_acknowledged_is_lost() {
    leader_killed_under_load(5);
}

fn leader_killed_under_load(n: usize) {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), n, &[("snapshot_every_entries", "3000")], false);
    workload::setup(c.nodes[0].client, KEYS);
    let servers = c.clients();
    let h = workload::run(&servers, 2 * n, KEYS, |clock| {
        more_writes(clock, 300, Duration::from_secs(20));
        let leader = c.leader();
        c.nodes[leader].kill9();
        // Service continues on the two others.
        more_writes(clock, 300, Duration::from_secs(20));
        let new = c.leader();
        assert_ne!(new, leader);
        c.nodes[leader].restart();
        more_writes(clock, 300, Duration::from_secs(20));
    });
    check_history(&mut c, h);
}

/// A leader that restarts leads again only after winning an election in a
/// new term. openraft can restore a restarted leader in its old term
/// without one (`enable_leader_restore`, on by default); but a leader sends
/// entries before they are durable in its own log, so after a crash it
/// would write new entries under log ids that followers already hold for
/// the lost ones: equal log ids, different entries, and members that part
/// for good. The fsync nemesis found it: the members' digests differed
/// from the first batch after a leader whose log fsync failed re-executed
/// itself and came back as leader of the same term. Elections here are
/// slow, so the restarted leader is back long before a follower campaigns.
#[test]
fn a_restarted_leader_leads_again_only_in_a_new_term() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let slow = [("election_timeout_min_ms", "6000"), ("election_timeout_max_ms", "7000")];
    let mut c = Cluster::start(dir.path(), 3, &slow, false);
    let term = |c: &Cluster, i: usize| c.view(i).and_then(|v| v["term"].as_u64()).expect("a member's term");
    let leader = c.leader();
    let before = term(&c, leader);
    c.nodes[leader].kill9();
    c.nodes[leader].restart();
    let now = c.leader();
    let after = term(&c, now);
    assert!(
        after > before,
        "member {} leads in term {after}; member {} led term {before} before it restarted",
        now + 1,
        leader + 1
    );
}

#[test]
fn followers_crash_and_catch_up_even_after_compaction_on_five_nodes() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = [("snapshot_every_entries", "500"), ("snapshot_logs_to_keep", "100")];
    let mut c = Cluster::start(dir.path(), 5, &extra, false);
    workload::setup(c.nodes[0].client, KEYS);
    let servers = c.clients();
    let h = workload::run(&servers, 5, KEYS, |clock| {
        let leader = c.leader();
        let followers: Vec<usize> = (0..5).filter(|&i| i != leader).collect();
        // One follower is down while the log moves on past two snapshots:
        // it must come back by installing a snapshot.
        let f = followers[0];
        c.nodes[f].kill9();
        more_writes(clock, 1500, Duration::from_secs(60));
        c.nodes[f].restart();
        assert!(
            eventually(Duration::from_secs(30), || c.nodes[f].log().contains("snapshot installed")),
            "node {} did not catch up by snapshot",
            f + 1
        );
        more_writes(clock, 200, Duration::from_secs(20));
        // Two followers of five fail at once: three still make a quorum.
        let (a, b) = (followers[1], followers[2]);
        c.nodes[a].kill9();
        c.nodes[b].kill9();
        more_writes(clock, 300, Duration::from_secs(20));
        c.nodes[a].restart();
        c.nodes[b].restart();
        more_writes(clock, 200, Duration::from_secs(20));
    });
    check_history(&mut c, h);
}

#[test]
fn an_isolated_leader_stops_acknowledging_and_the_majority_goes_on() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], true);
    workload::setup(c.nodes[0].client, KEYS);
    let servers = c.clients();
    let old = c.leader();
    // Who claims to lead, in which term, as every member reports it.
    let claims: std::sync::Arc<Mutex<Vec<(u64, u64)>>> = Default::default();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let monitor = {
        let (claims, watching) = (claims.clone(), watching.clone());
        let apis: Vec<String> = c.nodes.iter().map(Corral::api).collect();
        std::thread::spawn(move || {
            let agent: ureq::Agent =
                ureq::Agent::config_builder().timeout_global(Some(Duration::from_millis(500))).build().into();
            while watching.load(Ordering::Relaxed) {
                for api in &apis {
                    let v: Option<serde_json::Value> = agent
                        .get(format!("{api}/api/v1/cluster"))
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .call()
                        .ok()
                        .and_then(|mut r| r.body_mut().read_json().ok());
                    if let Some(v) = v
                        && v["state"] == "leader"
                    {
                        claims.lock().unwrap().push((v["term"].as_u64().unwrap(), v["node_id"].as_u64().unwrap()));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut window = (0, 0);
    let mut new_leader = old;
    // A session on the leader, opened before the cut.
    let mut probe = Raw::connect(c.nodes[old].client, 10_000);
    assert_eq!(probe.call(1, 1, Jute::default().str("/probe").buf(Some(b"")).open_acl().int(0)).err, 0);
    let h = workload::run(&servers, 6, KEYS, |clock| {
        more_writes(clock, 300, Duration::from_secs(20));
        // The window opens once the cut is in place: a write sent a moment
        // before could still be replicated, and acknowledged rightly.
        c.proxy.as_ref().unwrap().isolate(old as u64 + 1, 3);
        window.0 = clock.ns();
        // The majority elects a new leader and keeps taking writes.
        assert!(
            eventually(Duration::from_secs(10), || {
                (0..3).filter(|&i| i != old).any(|i| {
                    c.view(i).is_some_and(|v| {
                        v["state"] == "leader" && {
                            new_leader = i;
                            true
                        }
                    })
                })
            }),
            "the majority did not elect a leader"
        );
        more_writes(clock, 300, Duration::from_secs(20));
        // The cut-off leader takes a write from its own client, and never
        // acknowledges it: it has no quorum.
        probe.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        probe.send(2, 5, Jute::default().str("/probe").buf(Some(b"minority")).int(-1));
        let answer = probe.recv();
        assert!(answer.as_ref().is_none_or(|f| f.err != 0), "the isolated leader acknowledged a write: {answer:?}");
        window.1 = clock.ns();
        c.proxy.as_ref().unwrap().heal();
        more_writes(clock, 200, Duration::from_secs(20));
    });
    watching.store(false, Ordering::Relaxed);
    monitor.join().unwrap();
    assert_ne!(new_leader, old);
    // The isolated leader acknowledged nothing sent to it while cut off.
    let tried: Vec<_> = h
        .ops
        .iter()
        .filter(|o| {
            matches!(o.kind, OpKind::Set { .. }) && o.server == old && o.invoke_ns > window.0 && o.invoke_ns < window.1
        })
        .collect();
    let acked: Vec<_> = tried.iter().filter(|o| o.outcome == Outcome::Ok && o.complete_ns < window.1).collect();
    assert!(acked.is_empty(), "the isolated leader acknowledged writes: {acked:?}");
    eprintln!("{} writes were sent to the isolated leader; none was acknowledged", tried.len());
    let claims = claims.lock().unwrap();
    let mut by_term = std::collections::BTreeMap::new();
    for &(term, node) in claims.iter() {
        let first = *by_term.entry(term).or_insert(node);
        assert_eq!(first, node, "two leaders in term {term}: {first} and {node}");
    }
    assert!(by_term.len() >= 2, "expected a new term: {by_term:?}");
    check_history(&mut c, h);
}

/// A ZooKeeper `getData` of `/zookeeper/config` through `server`.
fn zk_config(server: SocketAddr) -> String {
    let mut raw = Raw::connect(server, 5000);
    let f = raw.call(1, 4, Jute::default().str("/zookeeper/config").bool(false));
    assert_eq!(f.err, 0);
    let n = i32::from_be_bytes(f.body[0..4].try_into().unwrap()) as usize;
    String::from_utf8(f.body[4..4 + n].to_vec()).unwrap()
}

/// The version a `/zookeeper/config` text ends with.
fn config_version(config: &str) -> i64 {
    i64::from_str_radix(config.lines().last().unwrap().strip_prefix("version=").unwrap(), 16).unwrap()
}

/// Settings of members that take ZooKeeper's reconfig from the superuser
/// (password `test`, see [`as_superuser`]).
const RECONFIG: [(&str, &str); 2] =
    [("superuser_digest", "\"super:D/InIHSb7yEEbrWz8b9l71RjZJU=\""), ("reconfig_enabled", "true")];

/// Authenticates `raw` as the superuser of [`RECONFIG`] members.
fn as_superuser(raw: &mut Raw) {
    assert_eq!(raw.call(-4, 100, Jute::default().int(0).str("digest").buf(Some(b"super:test"))).err, 0);
}

fn corral_cli(c: &Corral, args: &[&str]) -> std::process::Output {
    std::process::Command::new(corral_tests::binary())
        .args(["--api", &c.api(), "--token", TOKEN])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn members_are_added_promoted_and_removed_through_the_api_the_cli_and_reconfig() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &RECONFIG, false);
    let mut raw = Raw::connect(c.nodes[0].client, 5000);
    let f = raw.call(1, 1, Jute::default().str("/before").buf(Some(b"x")).open_acl().int(0));
    assert_eq!(f.err, 0);
    // Each member publishes its client address once it serves.
    let lines: Vec<String> = (0..3)
        .map(|i| {
            format!("server.{}=127.0.0.1:{1}:{1}:participant;{2}", i + 1, c.nodes[i].raft.port(), c.nodes[i].client)
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || {
            let config = zk_config(c.nodes[2].client);
            lines.iter().all(|l| config.contains(l))
        }),
        "{lines:?} not all in\n{}",
        zk_config(c.nodes[2].client)
    );

    // A fourth node starts empty and waits to be added.
    let mut four = Corral::configure(&dir.path().join("node-4"), &RECONFIG);
    for (k, v) in [("node_id", "4"), ("join", "true"), ("cluster_secret", corral_tests::cluster::SECRET)] {
        four.set(k, v);
    }
    four.admin_token = Some(TOKEN.into());
    four.spawn();
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    // Through a follower: the change is forwarded to the leader.
    let out = corral_cli(&c.nodes[follower], &["cluster", "add-learner", "4", &four.raft.to_string()]);
    assert!(out.status.success(), "add-learner: {}", String::from_utf8_lossy(&out.stderr));
    four.wait_ready();
    // The learner has the data, serves reads, and says it is an observer.
    assert!(eventually(Duration::from_secs(10), || zk_config(four.client).contains(":observer;")));
    let mut r4 = Raw::connect(four.client, 5000);
    assert_eq!(r4.call(1, 4, Jute::default().str("/before").bool(false)).err, 0);
    assert!(four.four("srvr").contains("Mode: observer"));
    let v = c.view(leader).unwrap();
    let m4 = v["members"].as_array().unwrap().iter().find(|m| m["id"] == 4).unwrap().clone();
    assert_eq!(m4["role"], "learner");

    // Promote it with the CLI.
    let out = corral_cli(&c.nodes[leader], &["--json", "cluster", "promote", "4"]);
    assert!(out.status.success(), "promote: {}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(10), || {
        zk_config(four.client).contains(&format!("server.4=127.0.0.1:{0}:{0}:participant", four.raft.port()))
    }));
    let mntr = c.nodes[leader].four("mntr");
    assert!(mntr.contains("zk_followers\t3") && mntr.contains("zk_synced_followers\t3"), "{mntr}");
    assert!(c.nodes[follower].four("mntr").contains("zk_server_state\tfollower"));

    // ZooKeeper's reconfig removes it again: only for the superuser, and
    // only against the current config version.
    let config = zk_config(c.nodes[0].client);
    let version = config_version(&config);
    let reconfig = |raw: &mut Raw, leaving: &str, version: i64| {
        raw.call(9, 16, Jute::default().buf(None).str(leaving).buf(None).long(version))
    };
    let mut plain = Raw::connect(c.nodes[0].client, 5000);
    assert_eq!(reconfig(&mut plain, "4", version).err, -102, "NoAuth without the superuser");
    let mut admin = Raw::connect(c.nodes[0].client, 5000);
    as_superuser(&mut admin);
    assert_eq!(reconfig(&mut admin, "4", version - 1).err, -103, "BadVersion for a stale config id");
    let f = reconfig(&mut admin, "4", version);
    assert_eq!(f.err, 0, "reconfig");
    let n = i32::from_be_bytes(f.body[0..4].try_into().unwrap()) as usize;
    let new_config = String::from_utf8(f.body[4..4 + n].to_vec()).unwrap();
    assert!(!new_config.contains("server.4="), "{new_config}");
    assert_ne!(new_config.lines().last(), config.lines().last(), "the version moved");
    // Removing a member that is not there is a conflict (exit code 4).
    let out = corral_cli(&c.nodes[0], &["cluster", "remove", "4"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    // The three that remain still take writes.
    assert_eq!(raw.call(2, 5, Jute::default().str("/before").buf(Some(b"y")).int(-1)).err, 0);
    drop(four);
    c.converged();
}

#[test]
fn sessions_move_between_members_and_expire_only_through_the_leader() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = [("container_check_interval_ms", "200"), ("extended_types", "true")];
    let mut c = Cluster::start(dir.path(), 3, &extra, false);
    let leader = c.leader();
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);

    // A session on one follower, with an ephemeral.
    let mut a = Raw::connect(c.nodes[f1].client, 4000);
    let f = a.call(1, 1, Jute::default().str("/eph").buf(Some(b"")).open_acl().int(1));
    assert_eq!(f.err, 0);
    let seen = f.zxid;
    // A member behind the client's last zxid refuses it.
    assert!(Raw::resume(c.nodes[f2].client, 4000, a.session, &a.password, seen + 1_000_000).is_none());
    // Another member takes the session over: the owner changes in the log,
    // and the old connection is closed on its next write, without a reply.
    // (Until that member has applied `seen`, it refuses too: retry.)
    let mut resumed = None;
    assert!(eventually(Duration::from_secs(5), || {
        resumed = Raw::resume(c.nodes[f2].client, 4000, a.session, &a.password, seen);
        resumed.is_some()
    }));
    let mut b = resumed.expect("session resumed");
    let _ = a.stream.set_read_timeout(Some(Duration::from_secs(3)));
    a.send(2, 5, Jute::default().str("/eph").buf(Some(b"old")).int(-1));
    let answer = a.recv();
    assert!(answer.is_none() || answer.as_ref().is_some_and(|f| f.err == -118), "old connection answered {answer:?}");
    let f = b.call(3, 5, Jute::default().str("/eph").buf(Some(b"new")).int(-1));
    assert_eq!(f.err, 0, "the new owner writes");

    // Containers and TTL nodes for the reaper of the next leader.
    let mut z = Raw::connect(c.nodes[f2].client, 4000);
    assert_eq!(z.call(1, 19, Jute::default().str("/box").buf(Some(b"")).open_acl().int(4)).err, 0);
    assert_eq!(z.call(2, 1, Jute::default().str("/box/x").buf(Some(b"")).open_acl().int(0)).err, 0);
    assert_eq!(z.call(3, 21, Jute::default().str("/ttl").buf(Some(b"")).open_acl().int(5).long(1500)).err, 0);

    // The leader dies. The session stays alive on a follower that hears
    // from it: liveness reports reach the new leader.
    c.nodes[leader].kill9();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut xid = 10;
    while Instant::now() < deadline {
        xid += 1;
        assert_eq!(b.call(xid, 11, Jute::default()).err, 0);
        assert_eq!(z.call(xid, 11, Jute::default()).err, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let new = c.leader();
    assert_ne!(new, leader);
    let exists = |z: &mut Raw, xid: i32, path: &str| z.call(xid, 3, Jute::default().str(path).bool(false)).err == 0;
    assert!(exists(&mut z, 20, "/eph"), "a live session's ephemeral survived the leader change");
    // The container is reaped and the TTL node expires under the new leader.
    assert_eq!(z.call(21, 2, Jute::default().str("/box/x").int(-1)).err, 0);
    let mut x = 30;
    assert!(eventually(Duration::from_secs(10), || {
        x += 1;
        !exists(&mut z, x, "/box") && !exists(&mut z, x + 1000, "/ttl")
    }));
    // Silence: the new leader expires the session, through the log.
    drop(b);
    let gone = Instant::now();
    assert!(eventually(Duration::from_secs(15), || {
        x += 1;
        !exists(&mut z, x, "/eph")
    }));
    assert!(gone.elapsed() >= Duration::from_millis(3000), "expired before its timeout");
    c.nodes[leader].restart();
    c.converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_client_sessions_span_members() {
    use zookeeper_client as zk;
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let words = [("four_letter_words", "[\"*\"]"), ("four_letter_dump_interval_ms", "0")];
    let mut c = tokio::task::block_in_place(|| Cluster::start(dir.path(), 3, &words, false));
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let connect = |addr: String| async move {
        zk::Client::connector().with_session_timeout(Duration::from_secs(4)).connect(&addr).await.expect("connect")
    };
    // One client per member.
    let z: Vec<zk::Client> = futures_join(c.clients().iter().map(|a| connect(a.to_string()))).await;
    z[0].create("/shared", b"0", &opts).await.unwrap();
    // Another session on another member sees it once that member has
    // caught up: ZooKeeper's guarantee is sync, then read.
    z[2].sync("/shared").await.unwrap();
    let (_, _, watch) = z[2].get_and_watch_data("/shared").await.unwrap();
    z[1].set_data("/shared", b"1", None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await.expect("event");
    assert_eq!(event.event_type, zk::EventType::NodeDataChanged);
    // sync, then the read on another member sees the write.
    z[2].sync("/shared").await.unwrap();
    assert_eq!(z[2].get_data("/shared").await.unwrap().0, b"1");
    for (i, zi) in z.iter().enumerate() {
        zi.create(&format!("/shared/c{i}"), b"", &opts).await.unwrap();
    }
    for zi in &z {
        zi.sync("/shared").await.unwrap();
        assert_eq!(zi.list_children("/shared").await.unwrap().len(), 3);
    }
    // A client with every member in its list survives the loss of its
    // member: it resumes the same session elsewhere, with its watches.
    let all = c.clients().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let roaming = connect(all).await;
    let session = roaming.session_id();
    let (_, _, watch) = roaming.get_and_watch_data("/shared").await.unwrap();
    let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    roaming.create("/shared/roamer", b"", &eph).await.unwrap();
    // Kill the member it is connected to.
    let sid = format!("sid=0x{:x})", session.0);
    let victim = (0..3).find(|&i| c.nodes[i].four("cons").contains(&sid)).expect("the roaming session is on a member");
    let other = (victim + 1) % 3;
    tokio::task::block_in_place(|| c.nodes[victim].kill9());
    // If the victim led, a write in flight on another member gets
    // ConnectionLoss, as from a ZooKeeper follower: the client retries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match z[other].set_data("/shared", b"2", None).await {
            Ok(_) => break,
            Err(zk::Error::ConnectionLoss) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("set_data after the failover: {e}"),
        }
    }
    let event = tokio::time::timeout(Duration::from_secs(15), watch.changed()).await.expect("event after failover");
    assert_eq!(event.event_type, zk::EventType::NodeDataChanged);
    assert_eq!(roaming.session_id(), session, "the same session, resumed on another member");
    assert!((0..3).filter(|&i| i != victim).any(|i| c.nodes[i].four("cons").contains(&sid)));
    roaming.sync("/shared").await.unwrap();
    assert_eq!(roaming.get_data("/shared").await.unwrap().0, b"2");
    assert!(z[other].check_stat("/shared/roamer").await.unwrap().is_some(), "its ephemeral is still there");
    tokio::task::block_in_place(|| {
        c.nodes[victim].restart();
        c.converged();
    });
}

async fn futures_join<F: std::future::Future<Output = zk::Client>>(fs: impl Iterator<Item = F>) -> Vec<zk::Client> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

use zookeeper_client as zk;

/// Reads one transport frame (`u32` big-endian length, then the body).
fn read_raft_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_peer_without_the_cluster_secret_is_refused_and_the_cluster_goes_on() {
    use std::io::Write;
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &[], false);
    let refused = |n: &Corral| -> u64 {
        let (_, metrics) = n.http_get_as("/metrics", Some(TOKEN));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("corral_raft_handshakes_refused_total "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let before = refused(&c.nodes[0]);
    // The handshake: the member challenges with a nonce; we answer with
    // a MAC made without the secret. postcard: variant 1 (Hello), node id
    // 2 as a varint, then the 32 MAC bytes.
    for attempt in 0..2 {
        let mut s = Raw::tcp(c.nodes[0].raft);
        let challenge = read_raft_frame(&mut s).expect("a challenge");
        assert_eq!((challenge[0], challenge.len()), (0, 33), "Challenge {{ nonce: [u8; 32] }}");
        let mut hello = vec![1u8, 2];
        hello.extend_from_slice(&[0x5a; 32]);
        let frame = if attempt == 0 { hello } else { b"not a frame at all".to_vec() };
        s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&frame).unwrap();
        assert_eq!(read_raft_frame(&mut s), None, "the member must close the connection, not welcome us");
    }
    assert!(
        eventually(Duration::from_secs(5), || refused(&c.nodes[0]) >= before + 2),
        "refusals are counted: {}",
        refused(&c.nodes[0])
    );
    assert!(c.nodes[0].log().contains("refused a raft peer: bad handshake"));
    // The members themselves still talk: a write commits and they agree.
    let mut raw = Raw::connect(c.nodes[1].client, 5000);
    assert_eq!(raw.call(1, 1, Jute::default().str("/after").buf(Some(b"x")).open_acl().int(0)).err, 0);
    c.converged();
}

/// Runs the openssl command line in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/// A CA and one certificate per member (`member-<id>` as a DNS name), made
/// with the openssl command line in `dir`.
fn member_certificates(dir: &std::path::Path, members: u64) {
    let ca = ["-days", "2", "-subj", "/CN=members CA", "-keyout", "ca.key", "-out", "ca.pem"];
    openssl(dir, &[&["req", "-x509"][..], &EC_KEY, &ca].concat());
    for id in 1..=members {
        member_certificate(dir, id);
    }
}

/// A new key and certificate for member `id`, signed by the CA in `dir`.
fn member_certificate(dir: &std::path::Path, id: u64) {
    let name = format!("member-{id}");
    let (key, csr, ext, pem) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"), format!("{name}.pem"));
    openssl(dir, &[&["req"][..], &EC_KEY, &["-subj", &format!("/CN={name}"), "-keyout", &key, "-out", &csr]].concat());
    std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{name}\n")).unwrap();
    let sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", &ext, "-out", &pem];
    openssl(dir, &[&["x509", "-req", "-in", &csr][..], &sign].concat());
}

fn use_member_certificate(n: &mut Corral, pki: &std::path::Path, name: &str) {
    n.set("peer_tls_cert_file", pki.join(format!("{name}.pem")).to_str().unwrap());
    n.set("peer_tls_key_file", pki.join(format!("{name}.key")).to_str().unwrap());
    n.set("peer_tls_ca_file", pki.join("ca.pem").to_str().unwrap());
}

#[test]
fn members_talk_mutual_tls_and_each_must_be_the_member_its_certificate_names() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    member_certificates(&pki, 3);
    let mut c = Cluster::start_prepared(dir.path(), 3, &[("tls_reload_interval_ms", "100")], false, |i, n| {
        use_member_certificate(n, &pki, &format!("member-{}", i + 1))
    });
    workload::setup(c.nodes[0].client, KEYS);
    let servers = c.clients();
    let h = workload::run(&servers, 6, KEYS, |clock| {
        more_writes(clock, 300, Duration::from_secs(20));
        let leader = c.leader();
        c.nodes[leader].kill9();
        more_writes(clock, 300, Duration::from_secs(30));
        c.nodes[leader].restart();
        more_writes(clock, 200, Duration::from_secs(30));
    });
    check_history(&mut c, h);

    // Member 1's certificate is renewed (a new key) under the same files:
    // it is read without a restart, and new connections work with it.
    let before = std::fs::read(pki.join("member-1.pem")).unwrap();
    member_certificate(&pki, 1);
    assert_ne!(std::fs::read(pki.join("member-1.pem")).unwrap(), before);
    assert!(
        eventually(Duration::from_secs(10), || c.nodes[0].log().contains("peer TLS certificate files changed")),
        "member 1 did not pick up its renewed certificate"
    );
    c.nodes[1].kill9();
    c.nodes[1].restart();
    // Member 2 may have led: the other two may still be electing.
    let mut probe = Raw::connect_once_led(c.nodes[1].client, 5000, Duration::from_secs(20));
    assert_eq!(probe.call(1, 1, Jute::default().str("/renewed").buf(Some(b"x")).open_acl().int(0)).err, 0);
    c.converged();

    // Member 3 comes back with member 2's certificate (valid, from the same
    // CA): the others refuse it, and it cannot pass for member 2 to them.
    c.nodes[2].kill9();
    use_member_certificate(&mut c.nodes[2], &pki, "member-2");
    c.nodes[2].spawn();
    // Member 3 may have led: members 1 and 2 may still be electing.
    let mut raw = Raw::connect_once_led(c.nodes[0].client, 5000, Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(20), || {
            c.nodes[..2].iter().any(|n| n.log().contains("its certificate does not name member-3"))
        }),
        "members 1 and 2 did not refuse member 3 showing member 2's certificate"
    );
    // The two others go on: a write commits on them.
    assert_eq!(raw.call(1, 1, Jute::default().str("/without-3").buf(Some(b"x")).open_acl().int(0)).err, 0);
}

/// openraft lets a leader demoted to a learner lead on for good, and a
/// membership change asked of it then panicked its core (found by the
/// deterministic simulation). A leader that reconfig makes an observer
/// steps down, a voter takes over, and the next change goes through.
#[test]
fn a_leader_demoted_by_reconfig_steps_down_and_a_voter_takes_over() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, &RECONFIG, false);
    let leader = c.leader();
    let id = leader + 1;
    let version = config_version(&zk_config(c.nodes[0].client));
    let mut admin = Raw::connect(c.nodes[leader].client, 5000);
    as_superuser(&mut admin);
    let joining = format!("server.{id}=127.0.0.1:{0}:{0}:observer", c.nodes[leader].raft.port());
    let f = admin.call(9, 16, Jute::default().str(&joining).buf(None).buf(None).long(version));
    assert_eq!(f.err, 0, "reconfig making the leader an observer");

    assert!(eventually(Duration::from_secs(10), || c.leader() != leader), "member {id} still leads as a learner");
    let new_leader = c.leader();
    let v = c.view(new_leader).unwrap();
    let me = v["members"].as_array().unwrap().iter().find(|m| m["id"] == id as u64).unwrap().clone();
    assert_eq!(me["role"], "learner");
    let out = corral_cli(&c.nodes[new_leader], &["--json", "cluster", "promote", &id.to_string()]);
    assert!(out.status.success(), "promote: {}", String::from_utf8_lossy(&out.stderr));
    let mut raw = Raw::connect(c.nodes[new_leader].client, 5000);
    assert_eq!(raw.call(1, 1, Jute::default().str("/after").buf(Some(b"x")).open_acl().int(0)).err, 0);
    c.converged();
}
