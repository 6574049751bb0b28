//! The wire protocol byte by byte: handshake forms, pipelining, ordering of
//! events and replies, error shapes, bad input, four-letter words.

use std::io::Write;
use std::time::Duration;

use corral_tests::{Corral, Jute, Raw, read_frame, send_frame};

const CREATE: i32 = 1;
const EXISTS: i32 = 3;
const GET_DATA: i32 = 4;
const SET_DATA: i32 = 5;
const GET_CHILDREN: i32 = 8;

fn create(path: &str, data: Option<&[u8]>, flags: i32) -> Jute {
    Jute::default().str(path).buf(data).open_acl().int(flags)
}

#[test]
fn old_clients_get_the_short_connect_response() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut s = Raw::tcp(c.client);
    // 44 bytes: no trailing readOnly byte.
    let req = Jute::default().int(0).long(0).int(5000).long(0).buf(Some(&[0; 16]));
    assert_eq!(req.0.len(), 44);
    send_frame(&mut s, &req.0);
    let body = read_frame(&mut s).unwrap();
    assert_eq!(body.len(), 36, "no readOnly byte for a client that did not send one");
    let timeout = i32::from_be_bytes(body[4..8].try_into().unwrap());
    assert_eq!(timeout, 4000, "5000 ms is clamped to 20 ticks of 200 ms");
}

#[test]
fn timeouts_are_negotiated_into_the_tick_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    for (asked, got) in [(10, 400), (1000, 1000), (100_000, 4000)] {
        assert_eq!(Raw::connect(c.client, asked).timeout_ms, got);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut r = Raw::connect(c.client, 4000);
    // 300 requests, writes and reads interleaved, sent before reading any reply.
    let mut expect = Vec::new();
    for i in 0..300 {
        let xid = i + 1;
        match i % 3 {
            0 => r.send(xid, CREATE, create(&format!("/n{i}"), Some(b"v"), 0)),
            1 => r.send(xid, GET_DATA, Jute::default().str(&format!("/n{}", i - 1)).bool(false)),
            _ => r.send(xid, EXISTS, Jute::default().str("/nope").bool(false)),
        }
        expect.push(xid);
    }
    let mut got = Vec::new();
    let mut last_zxid = 0;
    while got.len() < expect.len() {
        let f = r.recv().expect("reply");
        assert!(f.zxid >= last_zxid, "zxids never go back on a session");
        last_zxid = f.zxid;
        match (f.xid - 1) % 3 {
            0 | 1 => assert_eq!(f.err, 0, "xid {}", f.xid),
            _ => assert_eq!(f.err, -101),
        }
        got.push(f.xid);
    }
    assert_eq!(got, expect);
}

#[test]
fn a_read_after_a_write_sees_it_and_a_read_before_does_not_see_a_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut r = Raw::connect(c.client, 4000);
    r.call(1, CREATE, create("/fifo", Some(&[0]), 0));
    for round in 0..50u8 {
        // read, write, read: the first read must see the old value, the
        // second the new one.
        let old = [round];
        let new = [round + 1];
        r.send(10, GET_DATA, Jute::default().str("/fifo").bool(false));
        r.send(11, SET_DATA, Jute::default().str("/fifo").buf(Some(&new)).int(-1));
        r.send(12, GET_DATA, Jute::default().str("/fifo").bool(false));
        let a = r.recv().unwrap();
        let b = r.recv().unwrap();
        let d = r.recv().unwrap();
        assert_eq!((a.xid, b.xid, d.xid), (10, 11, 12));
        assert_eq!(&a.body[4..5], &old, "round {round}: a read saw a write sent after it");
        assert_eq!(&d.body[4..5], &new, "round {round}: a read missed a write sent before it");
    }
}

#[test]
fn a_watch_event_arrives_before_the_data_it_announces() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut writer = Raw::connect(c.client, 4000);
    let mut watcher = Raw::connect(c.client, 4000);
    writer.call(1, CREATE, create("/ev", Some(b"0"), 0));
    for i in 1..=100u32 {
        let f = watcher.call(i as i32, GET_DATA, Jute::default().str("/ev").bool(true));
        assert_eq!(f.err, 0);
        writer.send(i as i32, SET_DATA, Jute::default().str("/ev").buf(Some(&i.to_be_bytes())).int(-1));
        // Read until the watcher sees the new value; the event must come first.
        let mut seen_event = false;
        loop {
            watcher.send(1000 + i as i32, GET_DATA, Jute::default().str("/ev").bool(false));
            let f = loop {
                let f = watcher.recv().unwrap();
                if f.xid == -1 {
                    assert!(!seen_event, "one event per change");
                    seen_event = true;
                    assert_eq!(i32::from_be_bytes(f.body[0..4].try_into().unwrap()), 3, "NodeDataChanged");
                    continue;
                }
                break f;
            };
            let value = &f.body[4..8];
            if value == i.to_be_bytes() {
                assert!(seen_event, "change {i}: new data before its watch event");
                break;
            }
            assert!(!seen_event, "change {i}: a read after the event returned old data");
        }
        assert_eq!(writer.recv().unwrap().err, 0);
    }
}

#[test]
fn errors_are_header_only_and_null_data_differs_from_empty() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut r = Raw::connect(c.client, 4000);
    let f = r.call(1, GET_DATA, Jute::default().str("/missing").bool(false));
    assert_eq!((f.err, f.body.len()), (-101, 0));
    let f = r.call(2, CREATE, create("/bad/", None, 0));
    assert_eq!(f.err, -101, "parent /bad is checked before the path (as ZooKeeper does)");
    let f = r.call(3, CREATE, create("/a\u{1}b", None, 0));
    assert_eq!(f.err, -8, "control characters are refused");

    assert_eq!(r.call(4, CREATE, create("/null", None, 0)).err, 0);
    assert_eq!(r.call(5, CREATE, create("/empty", Some(b""), 0)).err, 0);
    let null = r.call(6, GET_DATA, Jute::default().str("/null").bool(false));
    let empty = r.call(7, GET_DATA, Jute::default().str("/empty").bool(false));
    assert_eq!(&null.body[0..4], &(-1i32).to_be_bytes(), "null data reads back as length -1");
    assert_eq!(&empty.body[0..4], &0i32.to_be_bytes());
    // Both report dataLength 0 (the Stat's 9th field, at offset 4+52).
    assert_eq!(&null.body[56..60], &0i32.to_be_bytes());

    // Sequential names use %010d of the parent's creation counter.
    let f = r.call(8, CREATE, create("/seq-", None, 2));
    let name = String::from_utf8(f.body[4..].to_vec()).unwrap();
    // /zookeeper is part of the initial tree, not a creation, as in ZooKeeper.
    assert_eq!(name, "/seq-0000000002", "/ had 2 creations (null, empty)");
    let f = r.call(9, GET_CHILDREN, Jute::default().str("/").bool(false));
    assert_eq!(f.err, 0);
}

#[test]
fn bad_input_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let mut bystander = Raw::connect(c.client, 4000);
    bystander.call(1, CREATE, create("/ok", Some(b"1"), 0));

    // A frame longer than max_frame_bytes (1 MiB): closed, no reply.
    let mut r = Raw::connect(c.client, 4000);
    r.stream.write_all(&((1 << 20) + 10i32).to_be_bytes()).unwrap();
    assert!(r.is_closed());
    // A negative length.
    let mut r = Raw::connect(c.client, 4000);
    r.stream.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(r.is_closed());
    // An unknown opcode: Unimplemented, then close.
    let mut r = Raw::connect(c.client, 4000);
    let f = r.call(7, 999, Jute::default());
    assert_eq!((f.xid, f.err), (7, -6));
    assert!(r.is_closed());
    // A body that does not decode: MarshallingError, then close.
    let mut r = Raw::connect(c.client, 4000);
    let f = r.call(8, GET_DATA, Jute::default().int(1000));
    assert_eq!((f.xid, f.err), (8, -5));
    assert!(r.is_closed());
    // A top-level check is refused as ZooKeeper 3.9 refuses it.
    let mut r = Raw::connect(c.client, 4000);
    let f = r.call(9, 13, Jute::default().str("/ok").int(-1));
    assert_eq!(f.err, -6);
    assert!(r.is_closed());
    // A frame shorter than a request header.
    let mut r = Raw::connect(c.client, 4000);
    send_frame(&mut r.stream, &[1, 2, 3]);
    assert!(r.is_closed());
    // Garbage instead of a ConnectRequest.
    let mut s = Raw::tcp(c.client);
    send_frame(&mut s, b"this is not a connect request");
    assert!(read_frame(&mut s).is_none());
    // A client that has seen a later zxid than the server: no reply.
    assert!(Raw::resume(c.client, 4000, 0, &[0; 16], 1 << 60).is_none());
    // An unknown four-letter-like start is just a huge length.
    assert_eq!(corral_tests::four_letter(c.client, "xyzw"), "");

    // The bystander never noticed.
    let f = bystander.call(2, GET_DATA, Jute::default().str("/ok").bool(false));
    assert_eq!((f.err, &f.body[4..5]), (0, &b"1"[..]));
}

#[test]
fn a_slow_reader_is_dropped_and_cannot_stall_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("connection_queue", "64")]);
    let mut writer = Raw::connect(c.client, 4000);
    writer.call(1, CREATE, create("/big", Some(&vec![7u8; 512 * 1024]), 0));
    writer.call(2, CREATE, create("/hot", None, 0));
    // A client that asks for 20 MB of replies and never reads them: its
    // socket fills, then its queue, and the server drops it.
    let mut sleeper = Raw::connect(c.client, 4000);
    for i in 0..200 {
        sleeper.send(i + 1, EXISTS, Jute::default().str(&format!("/hot/{i}")).bool(true));
    }
    for i in 0..40 {
        sleeper.send(1000 + i, GET_DATA, Jute::default().str("/big").bool(false));
    }
    std::thread::sleep(Duration::from_millis(300));
    // 200 creations fire 200 events at the sleeper; the writer goes on.
    for i in 0..200 {
        assert_eq!(writer.call(i + 3, CREATE, create(&format!("/hot/{i}"), None, 0)).err, 0);
    }
    let connections = || {
        let srvr = c.four("srvr");
        srvr.lines().find_map(|l| l.strip_prefix("Connections: ")).map(|n| n.parse::<u32>().unwrap())
    };
    // The writer and the srvr probe itself remain.
    assert!(corral_tests::eventually(Duration::from_secs(10), || connections() == Some(2)), "{:?}", connections());
    assert_eq!(writer.call(1000, GET_DATA, Jute::default().str("/hot/0").bool(false)).err, 0);
}

#[test]
fn four_letter_words() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    assert_eq!(c.four("ruok"), "imok");
    let srvr = c.four("srvr");
    assert!(srvr.starts_with("Zookeeper version: 3.9.4-corral-"), "{srvr}");
    assert!(srvr.contains("Mode: standalone\n"), "{srvr}");
    assert!(srvr.contains("Node count: 4\n"), "{srvr}");
    let envi = c.four("envi");
    let version = envi.lines().find_map(|l| l.strip_prefix("zookeeper.version=")).expect(&envi);
    // kazoo parses the numeric parts before the first '-'.
    let nums: Vec<u32> = version.split('-').next().unwrap().split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(nums, [3, 9, 4]);
    let mntr = c.four("mntr");
    assert!(mntr.contains("zk_znode_count\t4\n"), "{mntr}");
    assert!(mntr.contains("zk_server_state\tstandalone\n"), "{mntr}");
    assert!(c.four("stat").contains("Clients:\n"));
    assert_eq!(c.four("isro"), "rw");
    // Not on the default allowlist.
    assert_eq!(c.four("wchc"), "wchc is not executed because it is not in the whitelist.\n");
    assert_eq!(c.four("cons"), "cons is not executed because it is not in the whitelist.\n");
}

/// `mntr` once held the watch table while counting connections, and the
/// apply's publish takes them the other way round: with watches firing,
/// the two deadlocked and the server stopped answering.
#[test]
fn mntr_answers_while_writes_fire_watches() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let client = c.client;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut w = Raw::connect(client, 4000);
            let mut watcher = Raw::connect(client, 4000);
            w.call(1, CREATE, create("/hot", Some(b"0"), 0));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // A watch set and fired per write: publish takes both locks.
                watcher.call(i, GET_DATA, Jute::default().str("/hot").bool(true));
                w.call(i, SET_DATA, Jute::default().str("/hot").buf(Some(b"1")).int(-1));
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // At least 1,500 mntr, and at least 500 writes alongside them, however
    // fast this machine runs either.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while n < 1500 || writes.load(Ordering::Relaxed) < 500 {
        assert!(std::time::Instant::now() < deadline, "{n} mntr, {} writes", writes.load(Ordering::Relaxed));
        let mntr = c.four("mntr");
        assert!(mntr.contains("zk_watch_count\t"), "mntr #{n} got no answer: {mntr:?}");
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    assert_eq!(c.http_get("/health/live").0, 200);
    let (status, body) = c.http_get("/health/ready");
    assert_eq!(status, 200, "{body}");
    let mut r = Raw::connect(c.client, 4000);
    r.call(1, CREATE, create("/m", None, 0));
    assert_eq!(c.http_get("/metrics").0, 401, "metrics need a token by default");
    let (status, metrics) = c.http_get_as("/metrics", Some(c.token()));
    assert_eq!(status, 200);
    for name in [
        "corral_requests_total{op=\"create\"}",
        "corral_request_seconds_bucket",
        "corral_log_fsync_entries",
        "corral_znodes 5",
        "corral_raft_applied_index",
        "corral_sessions 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
}
