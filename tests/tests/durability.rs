//! Crashes and restarts: kill -9 loses nothing acknowledged, a restarted
//! node re-applies its log to the same state (same digest) before it
//! serves, sessions survive restarts, snapshots are built and purged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_tests::{Corral, Jute, Raw};
use zookeeper_client as zk;

fn opts() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn zxid_of(srvr: &str) -> i64 {
    let hex = srvr.lines().find_map(|l| l.strip_prefix("Zxid: 0x")).expect(srvr);
    i64::from_str_radix(hex, 16).unwrap()
}

/// Writers create nodes as fast as they can; the server is killed with
/// SIGKILL mid-stream; after a restart every acknowledged node is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Corral::start(dir.path());
    let setup = zk::Client::connect(&c.client.to_string()).await.unwrap();
    setup.create("/d", b"", &opts()).await.unwrap();
    drop(setup);

    let mut acked_total = 0;
    for round in 0..3u64 {
        let acked = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
        let mut writers = Vec::new();
        for w in 0..8 {
            let addr = c.client.to_string();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let Ok(z) = zk::Client::connector().with_session_timeout(Duration::from_secs(4)).connect(&addr).await
                else {
                    return;
                };
                for i in 0.. {
                    let path = format!("/d/r{round}-w{w}-{i}");
                    match z.create(&path, &[7u8; 100], &opts()).await {
                        Ok((stat, _)) => acked.lock().unwrap().push((path, stat.czxid)),
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        c.kill9();
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(15), w).await;
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(acked.len() > 20, "round {round}: the load produced only {} writes", acked.len());
        let max_zxid = acked.iter().map(|(_, z)| *z).max().unwrap();

        c.restart();
        assert!(zxid_of(&c.four("srvr")) >= max_zxid, "the restarted node serves older state than it acknowledged");
        let z = zk::Client::connect(&c.client.to_string()).await.unwrap();
        for (path, czxid) in &acked {
            let stat = z.check_stat(path).await.unwrap();
            assert_eq!(stat.map(|s| s.czxid), Some(*czxid), "round {round}: acknowledged {path} lost");
        }
        acked_total += acked.len();
    }
    eprintln!("{acked_total} acknowledged creates survived 3 kill -9s");
}

/// The applied state is committed to redb without fsync: a crash loses the
/// tail and re-applies it from the log. The result must be the same state.
#[test]
fn a_crashed_node_reapplies_to_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    // A long sync interval: the crash certainly loses applied state.
    let mut c = Corral::start_with(dir.path(), &[("state_sync_interval_ms", "600000")]);
    let mut r = Raw::connect(c.client, 4000);
    r.call(1, 1, Jute::default().str("/x").buf(Some(b"")).open_acl().int(0));
    for i in 0..300 {
        let f = r.call(i + 2, 5, Jute::default().str("/x").buf(Some(&i.to_be_bytes())).int(-1));
        assert_eq!(f.err, 0);
        let f = r.call(i + 1000, 1, Jute::default().str("/x/s-").buf(None).open_acl().int(2));
        assert_eq!(f.err, 0);
    }
    let digest = c.digest();
    let zxid = zxid_of(&c.four("srvr"));
    assert!(!digest.is_empty());
    c.kill9();
    c.restart();
    // The restarted node leads a new term, whose first entry is a blank one.
    let after = zxid_of(&c.four("srvr"));
    assert!((zxid..=zxid + 1).contains(&after), "zxid {after} after the restart, {zxid} before");
    assert_eq!(c.digest(), digest, "re-applying the log gave another state");
    let (status, _) = c.http_get("/health/ready");
    assert_eq!(status, 200);

    // A clean stop keeps it too.
    c.stop();
    c.restart();
    assert_eq!(c.digest(), digest);
}

#[test]
fn sessions_survive_restarts_and_get_a_full_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Corral::start(dir.path());
    let mut keep = Raw::connect(c.client, 2000);
    let f = keep.call(1, 1, Jute::default().str("/keep").buf(None).open_acl().int(1));
    assert_eq!(f.err, 0);
    let mut lose = Raw::connect(c.client, 2000);
    assert_eq!(lose.call(1, 1, Jute::default().str("/lose").buf(None).open_acl().int(1)).err, 0);
    let zxid = f.zxid;

    c.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    c.restart();
    let restarted = std::time::Instant::now();
    // Longer than the session timeout passed while the node was down, yet
    // both sessions are alive: the timeout counts from the restart.
    let mut keep = Raw::resume(c.client, 2000, keep.session, &keep.password, zxid).expect("session kept");
    assert_eq!(keep.call(2, 3, Jute::default().str("/lose").bool(false)).err, 0);
    // Keep one session alive with pings; the other is never resumed.
    let mut lose_gone = false;
    while restarted.elapsed() < Duration::from_secs(8) {
        assert_eq!(keep.call(-2, 11, Jute::default()).xid, -2);
        if keep.call(3, 3, Jute::default().str("/lose").bool(false)).err == -101 {
            lose_gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lose_gone, "an abandoned session did not expire after the restart");
    assert!(restarted.elapsed() >= Duration::from_millis(1800), "expired before a full timeout");
    assert_eq!(keep.call(4, 3, Jute::default().str("/keep").bool(false)).err, 0);
    drop(lose);
}

#[test]
fn snapshots_are_built_purged_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Corral::start_with(dir.path(), &[("snapshot_every_entries", "100"), ("snapshot_logs_to_keep", "20")]);
    let mut r = Raw::connect(c.client, 4000);
    for i in 0..450 {
        let f = r.call(i + 1, 1, Jute::default().str(&format!("/n{i}")).buf(Some(b"v")).open_acl().int(0));
        assert_eq!(f.err, 0);
    }
    let snaps = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("data/snapshots"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        names.sort();
        names
    };
    assert!(
        corral_tests::eventually(Duration::from_secs(10), || snaps().len() == 1
            && snaps()[0].as_str() >= "snap-00000000000000000300"),
        "{:?}",
        snaps()
    );
    let digest = c.digest();
    c.kill9();
    c.restart();
    assert_eq!(c.digest(), digest);
    let mut r = Raw::connect(c.client, 4000);
    assert_eq!(r.call(1, 3, Jute::default().str("/n0").bool(false)).err, 0);
    assert_eq!(r.call(2, 3, Jute::default().str("/n449").bool(false)).err, 0);
}

#[test]
fn a_stop_asked_for_while_starting_ends_the_process_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Corral::start(dir.path());
    let mut raw = Raw::connect(c.client, 5000);
    assert_eq!(raw.call(1, 1, Jute::default().str("/kept").buf(Some(b"x")).open_acl().int(0)).err, 0);
    drop(raw);
    c.stop();
    // SIGTERM at moments of a start: before the runtime exists, while the
    // state opens, while the log is re-applied. `stop` asserts that the
    // process exits successfully, not killed by the signal. The delays count
    // from the first line of `main`: before it runs (exec, the dynamic
    // loader, which on a loaded machine can take longer than 10 ms) the
    // kernel's default still applies, and nothing in the process can change
    // that.
    for delay_ms in [0, 5, 10, 20, 30, 50, 100, 200] {
        c.spawn();
        wait_until_sigterm_is_held_or_handled(c.pid());
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.stop();
    }
    c.restart();
    let mut raw = Raw::connect(c.client, 5000);
    assert_eq!(raw.call(2, 4, Jute::default().str("/kept").bool(false)).err, 0, "the data survived");
}

/// Waits until process `pid` has reached `main`: SIGTERM is blocked (held
/// until the handler exists) or caught by its handler, as its main thread's
/// `/proc/<pid>/status` shows.
fn wait_until_sigterm_is_held_or_handled(pid: u32) {
    const SIGTERM: u32 = 15; // on Linux
    let sigterm_bit = 1u64 << (SIGTERM - 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        if (mask("SigBlk:") | mask("SigCgt:")) & sigterm_bit != 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "process {pid} never reached main:\n{status}");
        std::thread::sleep(Duration::from_micros(200));
    }
}
