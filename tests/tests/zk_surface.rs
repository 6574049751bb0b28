//! The rest of the ZooKeeper 3.9 surface through the Rust `zookeeper-client`
//! crate (addWatch, removeWatches, getEphemerals, getAllChildrenNumber,
//! whoAmI, containers, TTL, multiRead), limits, four-letter words, and one
//! test per ZooKeeper CVE class that applies to a single server.

use std::time::{Duration, Instant};

use corral_tests::{Corral, Jute, Raw, eventually};
use zk::{Acls, AddWatchMode, CreateMode, EventType};
use zookeeper_client as zk;

async fn client(c: &Corral) -> zk::Client {
    zk::Client::connector().with_session_timeout(Duration::from_secs(4)).connect(&c.client.to_string()).await.unwrap()
}

fn opts(mode: CreateMode) -> zk::CreateOptions<'static> {
    mode.with_acls(Acls::anyone_all())
}

const FAST_REAPER: &[(&str, &str)] =
    &[("extended_types", "true"), ("container_check_interval_ms", "100"), ("four_letter_words", "[\"*\"]")];

#[tokio::test]
async fn persistent_and_recursive_watches_and_their_removal() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;
    let other = client(&c).await;
    z.create("/app", b"", &opts(CreateMode::Persistent)).await.unwrap();
    let mut recursive = z.watch("/app", AddWatchMode::PersistentRecursive).await.unwrap();
    let mut persistent = z.watch("/app", AddWatchMode::Persistent).await.unwrap();
    async fn next(w: &mut zk::PersistentWatcher) -> zk::WatchedEvent {
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.expect("event")
    }

    other.create("/app/a", b"", &opts(CreateMode::Persistent)).await.unwrap();
    other.create("/app/a/b", b"", &opts(CreateMode::Persistent)).await.unwrap();
    other.set_data("/app/a/b", b"x", None).await.unwrap();
    other.delete("/app/a/b", None).await.unwrap();
    // Recursive: created, created, changed, deleted; never children-changed.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next(&mut recursive).await;
        seen.push((e.event_type, e.path));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::NodeCreated, "/app/a".to_owned()),
            (EventType::NodeCreated, "/app/a/b".to_owned()),
            (EventType::NodeDataChanged, "/app/a/b".to_owned()),
            (EventType::NodeDeleted, "/app/a/b".to_owned()),
        ]
    );
    // Persistent on /app: only its own child changes, and it stays.
    let e = next(&mut persistent).await;
    assert_eq!((e.event_type, e.path.as_str()), (EventType::NodeChildrenChanged, "/app"));
    other.set_data("/app", b"1", None).await.unwrap();
    assert_eq!(next(&mut persistent).await.event_type, EventType::NodeDataChanged);
    other.set_data("/app", b"2", None).await.unwrap();
    assert_eq!(next(&mut persistent).await.event_type, EventType::NodeDataChanged);

    // removeWatches: gone from the server (wchs counts), NoWatcher after.
    // `remove` is deprecated in favour of Drop, but it is the call that
    // sends removeWatches and waits for the answer, which is what this tests.
    #[allow(deprecated)]
    {
        persistent.remove().await.unwrap();
        recursive.remove().await.unwrap();
        let (_, _, oneshot) = z.get_and_watch_data("/app").await.unwrap();
        oneshot.remove().await.unwrap();
    }
    let stat = c.four("srvr");
    assert!(stat.contains("Mode: standalone"));
    let mut raw = Raw::connect(c.client, 4000);
    // checkWatches (17) and removeWatches (18) on a watch that is not there.
    for (opcode, kind) in [(17, 1), (17, 2), (17, 3), (18, 4), (18, 5)] {
        let f = raw.call(9, opcode, Jute::default().str("/app").int(kind));
        assert_eq!(f.err, -121, "opcode {opcode} type {kind}: NoWatcher");
    }
    raw.call(10, 106, Jute::default().str("/app").int(1));
    assert_eq!(raw.call(11, 17, Jute::default().str("/app").int(5)).err, 0, "type 5 finds it");
    assert_eq!(raw.call(12, 17, Jute::default().str("/app").int(4)).err, -121, "type 4 does not");
    assert_eq!(raw.call(13, 18, Jute::default().str("/app").int(3)).err, 0, "Any removes it");
    assert_eq!(raw.call(14, 17, Jute::default().str("/app").int(3)).err, -121);
}

#[tokio::test]
async fn ephemerals_counts_whoami_and_multiread() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;
    z.create("/e", b"", &opts(CreateMode::Persistent)).await.unwrap();
    for p in ["/e/a", "/e/b", "/x1"] {
        z.create(p, b"", &opts(CreateMode::Ephemeral)).await.unwrap();
    }
    let other = client(&c).await;
    other.create("/e/theirs", b"", &opts(CreateMode::Ephemeral)).await.unwrap();
    let mut mine = z.list_ephemerals("/").await.unwrap();
    mine.sort();
    assert_eq!(mine, ["/e/a", "/e/b", "/x1"]);
    let mut under = z.list_ephemerals("/e").await.unwrap();
    under.sort();
    assert_eq!(under, ["/e/a", "/e/b"]);

    z.mkdir("/deep/1/2/3", &opts(CreateMode::Persistent)).await.unwrap();
    assert_eq!(z.count_descendants_number("/deep").await.unwrap(), 3, "all descendants, not only children");

    let users = z.list_auth_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].scheme(), users[0].user()), ("ip", "127.0.0.1"));
    z.auth("digest", b"alice:secret").await.unwrap();
    let mut users: Vec<_> =
        z.list_auth_users().await.unwrap().iter().map(|u| format!("{}:{}", u.scheme(), u.user())).collect();
    users.sort();
    assert_eq!(users, ["digest:alice", "ip:127.0.0.1"]);

    let mut r = z.new_multi_reader();
    r.add_get_data("/e").unwrap();
    r.add_get_children("/e").unwrap();
    r.add_get_data("/missing").unwrap();
    let results = r.commit().await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(matches!(&results[2], zk::MultiReadResult::Error { err } if *err == zk::Error::NoNode), "{results:?}");
    let zk::MultiReadResult::Children { children } = &results[1] else { panic!("{results:?}") };
    assert_eq!(children.len(), 3);
}

#[tokio::test]
async fn containers_and_ttl_nodes_are_reaped_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), FAST_REAPER);
    let z = client(&c).await;
    let (stat, _) = z.create("/box", b"", &opts(CreateMode::Container)).await.unwrap();
    assert_eq!(stat.ephemeral_owner, 0, "clients see owner 0 for containers");
    z.create("/box/item", b"", &opts(CreateMode::Persistent)).await.unwrap();
    // A container that never had a child stays.
    z.create("/never", b"", &opts(CreateMode::Container)).await.unwrap();
    let (_, _, w) = z.get_and_watch_data("/box").await.unwrap();
    z.delete("/box/item", None).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), w.changed()).await.expect("the empty container goes");
    assert_eq!(e.event_type, EventType::NodeDeleted);
    assert!(z.check_stat("/never").await.unwrap().is_some());

    // TTL: expires on mtime, so a setData keeps it alive.
    let ttl = |ms| CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_millis(ms));
    z.create("/short", b"", &ttl(500)).await.unwrap();
    z.create("/kept", b"", &ttl(800)).await.unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        z.set_data("/kept", b"touch", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(z.check_stat("/short").await.unwrap().is_none(), "the TTL node expired");
    assert!(z.check_stat("/kept").await.unwrap().is_some(), "a touched TTL node lives on");
    let mut gone = false;
    for _ in 0..100 {
        if z.check_stat("/kept").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "once untouched, it expires too");

    // deleteContainer (20) from a client: only an empty container.
    let mut raw = Raw::connect(c.client, 4000);
    z.create("/plain", b"", &opts(CreateMode::Persistent)).await.unwrap();
    assert_eq!(raw.call(1, 20, Jute::default().buf(Some(b"/plain"))).err, -8);
    assert_eq!(raw.call(2, 20, Jute::default().buf(Some(b"/never"))).err, 0);
}

#[tokio::test]
async fn ttl_needs_extended_types() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;
    let ttl = CreateMode::Persistent.with_acls(Acls::anyone_all()).with_ttl(Duration::from_millis(1000));
    assert_eq!(z.create("/t", b"", &ttl).await.unwrap_err(), zk::Error::Unimplemented);
}

#[test]
fn limits_close_or_refuse_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(
        dir.path(),
        &[
            ("max_connections_per_ip", "5"),
            ("max_data_bytes", "1000"),
            ("max_children_listed", "10"),
            ("max_outstanding_requests", "4"),
        ],
    );
    // Per-IP connections: the sixth is closed at once, the others work.
    let mut held: Vec<Raw> = (0..5).map(|_| Raw::connect(c.client, 4000)).collect();
    let mut sixth = Raw::tcp(c.client);
    let req = Jute::default().int(0).long(0).int(4000).long(0).buf(Some(&[0; 16])).bool(false);
    corral_tests::send_frame(&mut sixth, &req.0);
    assert!(corral_tests::read_frame(&mut sixth).is_none(), "over the per-IP limit: closed without a reply");
    let r = &mut held[0];
    // Data size.
    assert_eq!(r.call(1, 1, Jute::default().str("/big").buf(Some(&[0; 1001])).open_acl().int(0)).err, -8);
    assert_eq!(r.call(2, 1, Jute::default().str("/ok").buf(Some(&[0; 1000])).open_acl().int(0)).err, 0);
    // Children listing size.
    for i in 0..11 {
        r.call(10 + i, 1, Jute::default().str(&format!("/ok/c{i}")).buf(None).open_acl().int(0));
    }
    assert_eq!(r.call(30, 8, Jute::default().str("/ok").bool(false)).err, -8);
    // Outstanding requests: a burst of 200 is absorbed by backpressure, not dropped.
    for i in 0..200 {
        r.send(100 + i, 3, Jute::default().str("/ok").bool(false));
    }
    for i in 0..200 {
        assert_eq!(r.recv().unwrap().xid, 100 + i);
    }
    drop(held);
    assert!(eventually(Duration::from_secs(5), || {
        let mut s = Raw::tcp(c.client);
        corral_tests::send_frame(&mut s, &req.0);
        corral_tests::read_frame(&mut s).is_some()
    }));
}

#[test]
fn four_letter_words_with_all_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let c =
        Corral::start_with(dir.path(), &[("four_letter_words", "[\"*\"]"), ("four_letter_dump_interval_ms", "300")]);
    let mut r = Raw::connect(c.client, 4000);
    r.call(1, 1, Jute::default().str("/e").buf(None).open_acl().int(1));
    r.call(2, 4, Jute::default().str("/e").bool(true));
    let conf = c.four("conf");
    assert!(conf.contains("tickTime=200\n") && conf.contains("maxSessionTimeout=4000\n"), "{conf}");
    let wchs = c.four("wchs");
    assert!(wchs.contains("1 connections watching 1 paths") && wchs.contains("Total watches:1"), "{wchs}");
    let wchc = c.four("wchc");
    assert!(wchc.contains(&format!("0x{:x}\n\t/e\n", r.session)), "{wchc}");
    std::thread::sleep(Duration::from_millis(350));
    let wchp = c.four("wchp");
    assert!(wchp.contains(&format!("/e\n\t0x{:x}\n", r.session)), "{wchp}");
    assert!(c.four("dump").contains("rate limited"), "two dumps within the interval");
    std::thread::sleep(Duration::from_millis(350));
    let dump = c.four("dump");
    assert!(dump.contains(&format!("0x{:x}:\n\t/e\n", r.session)), "{dump}");
    assert!(c.four("dirs").starts_with("datadir_size: "));
    assert_eq!(c.four("crst"), "Connection stats reset.\n");
    assert_eq!(c.four("srst"), "Server stats reset.\n");
    assert!(c.four("mntr").contains("zk_ephemerals_count\t1\n"));
}

/// CVE classes of ZooKeeper's history (docs: reliability-security.md §4.2),
/// as they apply to one server.
#[tokio::test]
async fn security_regressions() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("superuser_digest", "\"super:D/InIHSb7yEEbrWz8b9l71RjZJU=\"")]);
    let owner = client(&c).await;
    owner.auth("digest", b"alice:secret").await.unwrap();
    let alice = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="))];
    let secret_opts = CreateMode::Persistent.with_acls(Acls::new(&alice));
    owner.create("/secret", b"s3cr3t", &secret_opts).await.unwrap();
    let stranger = client(&c).await;

    // getACL leak (ZOOKEEPER-1392): no READ/ADMIN, no ACL; with READ but no
    // ADMIN, digests are masked.
    assert_eq!(stranger.get_acl("/secret").await.unwrap_err(), zk::Error::NoAuth);
    let mixed = [
        zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=")),
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
    ];
    owner.create("/half", b"", &CreateMode::Persistent.with_acls(Acls::new(&mixed))).await.unwrap();
    let (acl, _) = stranger.get_acl("/half").await.unwrap();
    assert_eq!(acl[0].id(), "alice:x", "digest masked without ADMIN");
    let (acl, _) = owner.get_acl("/half").await.unwrap();
    assert_eq!(acl[0].id(), "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=");

    // ACL checks on every opcode.
    assert_eq!(stranger.get_data("/secret").await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.set_data("/secret", b"x", None).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.get_children("/secret").await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.create("/secret/c", b"", &opts(CreateMode::Persistent)).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.count_descendants_number("/secret").await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.watch("/secret", AddWatchMode::PersistentRecursive).await.unwrap_err(), zk::Error::NoAuth);
    assert_eq!(stranger.set_acl("/secret", &Acls::anyone_all(), None).await.unwrap_err(), zk::Error::NoAuth);
    assert!(stranger.check_stat("/secret").await.unwrap().is_some(), "exists needs no permission");
    owner.create("/secret/kid", b"", &secret_opts).await.unwrap();
    assert_eq!(stranger.delete("/secret/kid", None).await.unwrap_err(), zk::Error::NoAuth);
    let mut w = stranger.new_multi_writer();
    w.add_check_version("/secret", 0).unwrap();
    assert!(w.commit().await.is_err(), "check inside multi needs READ");
    // The superuser passes every check.
    let root = client(&c).await;
    root.auth("digest", b"super:test").await.unwrap();
    assert_eq!(root.get_data("/secret").await.unwrap().0, b"s3cr3t");

    // Recursive watches do not leak paths the watcher may not read
    // (CVE-2024-23944).
    let mut spy = stranger.watch("/", AddWatchMode::PersistentRecursive).await.unwrap();
    owner.create("/secret/hidden", b"", &secret_opts).await.unwrap();
    owner.create("/public", b"", &opts(CreateMode::Persistent)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), spy.changed()).await.unwrap();
    assert_eq!(e.path, "/public", "the first event the spy sees is the readable one");

    // setWatches replay without READ: no catch-up event reveals a change.
    let mut replay = Raw::connect(c.client, 4000);
    let sw = Jute::default().long(0).int(1).str("/secret").int(1).str("/secret").int(1).str("/secret");
    replay.send(-8, 101, sw);
    let f = replay.recv().unwrap();
    assert_eq!((f.xid, f.err), (-8, 0), "the reply, with no event before it");
    owner.set_data("/secret", b"changed", None).await.unwrap();
    assert_eq!(replay.call(5, 3, Jute::default().str("/").bool(false)).err, 0);
    replay.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(replay.recv().is_none(), "no event for an unreadable node");

    // Log injection: a path with a newline is refused, and logged escaped.
    let mut r = Raw::connect(c.client, 4000);
    let f = r.call(1, 1, Jute::default().str("/a\nFAKE LOG LINE").buf(None).open_acl().int(0));
    assert_eq!(f.err, -8);
    let f = r.call(2, 999, Jute::default().str("/x\nFAKE LOG LINE"));
    assert_eq!(f.err, -6);
    assert!(!c.log().lines().any(|l| l.starts_with("FAKE LOG LINE")), "a client wrote a line into the log");

    // 4lw allowlist: a word not on it answers the refusal, nothing else.
    assert_eq!(c.four("dump"), "dump is not executed because it is not in the whitelist.\n");
}
