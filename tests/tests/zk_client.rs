//! The Rust `zookeeper-client` crate (0.11, unmodified) against a real
//! `corral serve`: znode modes, sequence numbers, stat fields, watches,
//! multi, sessions.

use std::time::Duration;

use corral_tests::{Corral, Jute, Raw, eventually};
use zk::{Acls, CreateMode, EventType, MultiWriteError};
use zookeeper_client as zk;

async fn client(c: &Corral) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(&c.client.to_string())
        .await
        .expect("connect")
}

fn opts(mode: CreateMode) -> zk::CreateOptions<'static> {
    mode.with_acls(Acls::anyone_all())
}

#[tokio::test]
async fn znode_modes_and_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;

    z.create("/p", b"persistent", &opts(CreateMode::Persistent)).await.unwrap();
    let (stat, _) = z.create("/p/e", b"eph", &opts(CreateMode::Ephemeral)).await.unwrap();
    assert_eq!(stat.ephemeral_owner, z.session_id().0, "ephemeralOwner is the session id");
    assert_eq!(
        z.create("/p/e/child", b"", &opts(CreateMode::Persistent)).await.unwrap_err(),
        zk::Error::NoChildrenForEphemerals
    );
    assert_eq!(z.create("/p", b"", &opts(CreateMode::Persistent)).await.unwrap_err(), zk::Error::NodeExists);
    assert_eq!(z.create("/missing/x", b"", &opts(CreateMode::Persistent)).await.unwrap_err(), zk::Error::NoNode);

    // The suffix is the parent's child-creation counter: /p already had one
    // child created, so the first sequential child is number 1.
    let (_, s1) = z.create("/p/s-", b"", &opts(CreateMode::PersistentSequential)).await.unwrap();
    let (_, s2) = z.create("/p/s-", b"", &opts(CreateMode::EphemeralSequential)).await.unwrap();
    assert_eq!((s1.into_i64(), s2.into_i64()), (1, 2));
    let mut children = z.list_children("/p").await.unwrap();
    children.sort();
    assert_eq!(children, ["e", "s-0000000001", "s-0000000002"]);

    // Deletes neither lower the counter nor free numbers.
    z.delete("/p/s-0000000001", None).await.unwrap();
    z.delete("/p/s-0000000002", None).await.unwrap();
    let (_, s3) = z.create("/p/s-", b"", &opts(CreateMode::PersistentSequential)).await.unwrap();
    assert_eq!(s3.into_i64(), 3);
    let (_, stat) = z.get_data("/p").await.unwrap();
    // 4 creations and 2 deletions.
    assert_eq!((stat.cversion, stat.num_children), (6, 2));

    // Ephemerals go with their session.
    // Dropping the client closes its session.
    drop(z);
    let z = client(&c).await;
    let mut gone = false;
    for _ in 0..100 {
        if z.check_stat("/p/e").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the ephemeral outlived its closed session");
    assert!(z.check_stat("/p/s-0000000003").await.unwrap().is_some());
}

#[tokio::test]
async fn stat_fields_follow_zookeeper() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;

    let (created, _) = z.create("/st", b"12345", &opts(CreateMode::Persistent)).await.unwrap();
    assert_eq!(created.czxid, created.mzxid);
    assert_eq!(created.czxid, created.pzxid);
    assert_eq!((created.version, created.cversion, created.aversion), (0, 0, 0));
    assert_eq!((created.data_length, created.num_children, created.ephemeral_owner), (5, 0, 0));
    assert_eq!(created.ctime, created.mtime);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - created.ctime).abs() < 60_000, "ctime {} is wall-clock ms", created.ctime);

    let set = z.set_data("/st", b"abc", Some(0)).await.unwrap();
    assert_eq!(set.version, 1);
    assert!(set.mzxid > created.mzxid);
    assert_eq!(set.czxid, created.czxid);
    assert_eq!(set.data_length, 3);
    assert!(set.mtime >= created.mtime);
    assert_eq!(z.set_data("/st", b"x", Some(0)).await.unwrap_err(), zk::Error::BadVersion);

    let (child, _) = z.create("/st/c", b"", &opts(CreateMode::Persistent)).await.unwrap();
    let (_, parent) = z.get_data("/st").await.unwrap();
    assert_eq!((parent.num_children, parent.cversion, parent.pzxid), (1, 1, child.czxid));
    assert_eq!(parent.mzxid, set.mzxid, "a child create does not touch the parent's mzxid");
    z.delete("/st/c", Some(0)).await.unwrap();
    let (_, parent) = z.get_data("/st").await.unwrap();
    assert_eq!((parent.num_children, parent.cversion), (0, 2));
    assert!(parent.pzxid > child.czxid);

    assert_eq!(z.delete("/st", Some(7)).await.unwrap_err(), zk::Error::BadVersion);
    z.create("/st/d", b"", &opts(CreateMode::Persistent)).await.unwrap();
    assert_eq!(z.delete("/st", None).await.unwrap_err(), zk::Error::NotEmpty);

    // The reserved tree.
    let mut root = z.list_children("/").await.unwrap();
    root.sort();
    assert_eq!(root, ["st", "zookeeper"]);
    let (_, zk_stat) = z.get_data("/zookeeper").await.unwrap();
    assert_eq!((zk_stat.czxid, zk_stat.ctime), (0, 0));
    assert!(z.delete("/zookeeper", None).await.is_err());
}

#[tokio::test]
async fn watches_fire_once_with_the_right_events() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("four_letter_words", "[\"wchs\"]")]);
    let z = client(&c).await;
    let other = client(&c).await;
    let wait = |w: zk::OneshotWatcher| async move {
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.expect("event within 5 s")
    };

    // exists on a missing node: NodeCreated.
    let (stat, w) = z.check_and_watch_stat("/w").await.unwrap();
    assert!(stat.is_none());
    other.create("/w", b"0", &opts(CreateMode::Persistent)).await.unwrap();
    let e = wait(w).await;
    assert_eq!((e.event_type, e.path.as_str()), (EventType::NodeCreated, "/w"));

    // data watch: NodeDataChanged, carrying the change's zxid.
    let (_, _, w) = z.get_and_watch_data("/w").await.unwrap();
    let set = other.set_data("/w", b"1", None).await.unwrap();
    let e = wait(w).await;
    assert_eq!(e.event_type, EventType::NodeDataChanged);
    assert_eq!(e.zxid, set.mzxid, "3.9 notifications carry the zxid of the change");

    // child watch: NodeChildrenChanged on the parent.
    let (_, _, w) = z.get_and_watch_children("/w").await.unwrap();
    other.create("/w/kid", b"", &opts(CreateMode::Persistent)).await.unwrap();
    let e = wait(w).await;
    assert_eq!((e.event_type, e.path.as_str()), (EventType::NodeChildrenChanged, "/w"));

    // delete: NodeDeleted to a data watch and to a child watch.
    let (_, _, data_w) = z.get_and_watch_data("/w/kid").await.unwrap();
    let (_, _, child_w) = z.get_and_watch_children("/w/kid").await.unwrap();
    other.delete("/w/kid", None).await.unwrap();
    assert_eq!(wait(data_w).await.event_type, EventType::NodeDeleted);
    assert_eq!(wait(child_w).await.event_type, EventType::NodeDeleted);

    // One-shot: a watch fires once, a later change sends nothing.
    let (_, _, w) = z.get_and_watch_data("/w").await.unwrap();
    other.set_data("/w", b"2", None).await.unwrap();
    wait(w).await;
    other.set_data("/w", b"3", None).await.unwrap();
    let (_, _, w) = z.get_and_watch_data("/w").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), w.changed()).await.is_err(), "no change, no event");
    let watches = c.four("wchs");
    assert!(watches.contains("Total watches:1"), "{watches}");
}

#[tokio::test]
async fn multi_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;
    z.create("/m", b"v0", &opts(CreateMode::Persistent)).await.unwrap();

    let mut w = z.new_multi_writer();
    w.add_check_version("/m", 0).unwrap();
    w.add_create("/m/a", b"a", &opts(CreateMode::Persistent)).unwrap();
    w.add_set_data("/m", b"v1", Some(0)).unwrap();
    w.add_create("/m/s-", b"", &opts(CreateMode::PersistentSequential)).unwrap();
    let results = w.commit().await.unwrap();
    assert_eq!(results.len(), 4);
    let zk::MultiWriteResult::Create { path, stat } = &results[1] else { panic!("{results:?}") };
    assert_eq!(path, "/m/a");
    let zk::MultiWriteResult::SetData { stat: set } = &results[2] else { panic!("{results:?}") };
    assert_eq!(set.mzxid, stat.czxid, "all ops of a multi share one zxid");
    let zk::MultiWriteResult::Create { path, .. } = &results[3] else { panic!("{results:?}") };
    assert_eq!(path, "/m/s-0000000001");

    // The third op fails: nothing of the first two remains.
    let mut w = z.new_multi_writer();
    w.add_create("/m/b", b"", &opts(CreateMode::Persistent)).unwrap();
    w.add_delete("/m/a", None).unwrap();
    w.add_set_data("/m", b"x", Some(0)).unwrap();
    w.add_create("/m/c", b"", &opts(CreateMode::Persistent)).unwrap();
    let err = w.commit().await.unwrap_err();
    assert_eq!(err, MultiWriteError::OperationFailed { index: 2, source: zk::Error::BadVersion });
    assert_eq!(z.check_stat("/m/b").await.unwrap(), None);
    assert!(z.check_stat("/m/a").await.unwrap().is_some());
    assert_eq!(z.get_data("/m").await.unwrap().0, b"v1");

    // An empty multi succeeds with no results.
    assert_eq!(z.new_multi_writer().commit().await.unwrap(), vec![]);
}

#[tokio::test]
async fn session_expiry_removes_ephemerals_and_notifies_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let z = client(&c).await;
    z.create("/group", b"", &opts(CreateMode::Persistent)).await.unwrap();

    // A raw session that goes silent after creating an ephemeral.
    let mut quiet = Raw::connect(c.client, 600);
    assert_eq!(quiet.timeout_ms, 600);
    let f = quiet.call(1, 1, Jute::default().str("/group/member").buf(Some(b"x")).open_acl().int(1));
    assert_eq!(f.err, 0);

    let (_, _, data_w) = z.get_and_watch_data("/group/member").await.unwrap();
    let (_, _, child_w) = z.get_and_watch_children("/group").await.unwrap();
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(10), data_w.changed()).await.expect("expiry within 10 s");
    assert_eq!((e.event_type, e.path.as_str()), (EventType::NodeDeleted, "/group/member"));
    assert!(started.elapsed() >= Duration::from_millis(400), "expired too early: {:?}", started.elapsed());
    let e = tokio::time::timeout(Duration::from_secs(5), child_w.changed()).await.unwrap();
    assert_eq!(e.event_type, EventType::NodeChildrenChanged);
    assert_eq!(z.check_stat("/group/member").await.unwrap(), None);
    assert!(quiet.is_closed(), "the expired session's connection is closed");

    // Resuming it is refused: timeOut 0.
    assert!(Raw::resume(c.client, 600, quiet.session, &quiet.password, 0).is_none());
}

#[tokio::test]
async fn a_live_session_survives_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut a = Raw::connect(c.client, 2000);
    let f = a.call(1, 1, Jute::default().str("/mine").buf(Some(b"")).open_acl().int(1));
    assert_eq!(f.err, 0);
    let last_zxid = f.zxid;
    let (session, password) = (a.session, a.password.clone());
    drop(a);

    // Wrong password: refused. Right one: the same session, ephemeral kept.
    let mut wrong = password.clone();
    wrong[0] ^= 1;
    assert!(Raw::resume(c.client, 2000, session, &wrong, last_zxid).is_none());
    let mut b = Raw::resume(c.client, 2000, session, &password, last_zxid).expect("resumed");
    assert_eq!((b.session, b.timeout_ms), (session, 2000));
    let f = b.call(2, 3, Jute::default().str("/mine").bool(false));
    assert_eq!(f.err, 0, "the ephemeral is still there");

    // A session handed from one Rust client to another.
    let info = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(2))
        .with_detached()
        .connect(&c.client.to_string())
        .await
        .unwrap()
        .into_session();
    let z = zk::Client::connector().with_session(info.clone()).connect(&c.client.to_string()).await.unwrap();
    assert_eq!(z.session_id(), info.id());
    assert!(eventually(Duration::from_secs(5), || b.call(3, 11, Jute::default()).xid == -2), "b still works");

    // closeSession ends it for good.
    b.send(4, -11, Jute::default());
    let f = b.recv().expect("closeSession reply");
    assert_eq!((f.xid, f.err), (4, 0));
    assert!(b.is_closed());
    assert!(Raw::resume(c.client, 2000, session, &password, 0).is_none());
    assert_eq!(z.check_stat("/mine").await.unwrap(), None);
}

#[tokio::test]
async fn sync_then_read_sees_every_earlier_write() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let writer = client(&c).await;
    let reader = client(&c).await;
    writer.create("/sync", b"", &opts(CreateMode::Persistent)).await.unwrap();
    for i in 0..20u32 {
        writer.set_data("/sync", &i.to_be_bytes(), None).await.unwrap();
        reader.sync("/sync").await.unwrap();
        assert_eq!(reader.get_data("/sync").await.unwrap().0, i.to_be_bytes());
    }
}
