//! Security regressions: every opcode against every permission, through
//! raw frames (our own encoder, not Corral's), as ZooKeeper's CVE history
//! suggests (CVE-2026-79993: an opcode that skipped the ACL gate).
//!
//! For each permission P of `cdrwa`, a node grants an unauthenticated
//! client every permission but P. Each opcode must then answer NoAuth
//! exactly when it needs P, and succeed otherwise.

use std::time::Duration;

use corral_tests::{Corral, Jute, Raw};
use serde_json::{Value, json};

const NO_AUTH: i32 = -102;

fn admin(c: &Corral, method: &str, path: &str, body: Value) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}{path}", c.api());
    let mut r = match method {
        "POST" => agent.post(&url).header("authorization", format!("Bearer {}", c.token())).send_json(body),
        _ => unreachable!(),
    }
    .unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.body_mut().read_json().unwrap()
}

fn get(c: &Corral, path: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let url = format!("{}{path}", c.api());
    agent
        .get(&url)
        .header("authorization", format!("Bearer {}", c.token()))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// `world:anyone` with `perms` (ZooKeeper's bits).
fn acl(perms: i32) -> Jute {
    Jute::default().int(1).int(perms).str("world").str("anyone")
}

fn with_acl(j: Jute, perms: i32) -> Jute {
    let mut j = j;
    j.0.extend_from_slice(&acl(perms).0);
    j
}

#[test]
fn every_opcode_needs_exactly_its_permission() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("extended_types", "true"), ("container_check_interval_ms", "600000")]);
    let letters = [('c', 4), ('d', 8), ('r', 1), ('w', 2), ('a', 16)];
    let mut raw = Raw::connect(c.client, 10_000);
    let mut xid = 0;
    let mut checked = 0;
    for (missing, bit) in letters {
        let granted = 31 & !bit;
        let perms: String = letters.iter().filter(|(l, _)| *l != missing).map(|(l, _)| *l).collect();
        let t = format!("/t-{missing}");
        // Made by the admin API's token, a superuser that ACLs do not stop.
        admin(
            &c,
            "POST",
            "/api/v1/node",
            json!({ "path": t, "acl": [{ "perms": perms, "scheme": "world", "id": "anyone" }] }),
        );
        admin(&c, "POST", "/api/v1/node", json!({ "path": format!("{t}/kid") }));
        admin(&c, "POST", "/api/v1/node", json!({ "path": format!("{t}/box"), "mode": "container" }));
        // (name, opcode, body, the permission it needs on `t`, if any)
        let table: Vec<(&str, i32, Jute, Option<char>)> = vec![
            ("create", 1, with_acl(Jute::default().str(&format!("{t}/a")).buf(Some(b"")), 31).int(0), Some('c')),
            ("create2", 15, with_acl(Jute::default().str(&format!("{t}/b")).buf(Some(b"")), 31).int(0), Some('c')),
            (
                "createContainer",
                19,
                with_acl(Jute::default().str(&format!("{t}/c")).buf(Some(b"")), 31).int(4),
                Some('c'),
            ),
            (
                "createTTL",
                21,
                with_acl(Jute::default().str(&format!("{t}/d")).buf(Some(b"")), 31).int(5).long(60_000),
                Some('c'),
            ),
            ("delete", 2, Jute::default().str(&format!("{t}/kid")).int(-1), Some('d')),
            ("deleteContainer", 20, Jute::default().str(&format!("{t}/box")), Some('d')),
            ("exists", 3, Jute::default().str(&t).bool(false), None),
            ("getData", 4, Jute::default().str(&t).bool(false), Some('r')),
            ("setData", 5, Jute::default().str(&t).buf(Some(b"x")).int(-1), Some('w')),
            ("setACL", 7, with_acl(Jute::default().str(&t), granted).int(-1), Some('a')),
            ("getChildren", 8, Jute::default().str(&t).bool(false), Some('r')),
            ("getChildren2", 12, Jute::default().str(&t).bool(false), Some('r')),
            ("sync", 9, Jute::default().str(&t), None),
            ("getAllChildrenNumber", 104, Jute::default().str(&t), Some('r')),
            ("addWatch", 106, Jute::default().str(&t).int(0), Some('r')),
        ];
        for (name, opcode, body, needs) in table {
            xid += 1;
            let reply = raw.call(xid, opcode, body);
            if needs == Some(missing) {
                assert_eq!(reply.err, NO_AUTH, "{name} on {t} (granted {perms}) must be refused");
            } else {
                assert_eq!(reply.err, 0, "{name} on {t} (granted {perms}) must succeed, needing {needs:?}");
            }
            checked += 1;
        }
        // getACL needs READ or ADMIN: one of them is always granted here.
        xid += 1;
        assert_eq!(raw.call(xid, 6, Jute::default().str(&t)).err, 0, "getACL on {t}");
    }
    // With neither READ nor ADMIN, getACL is refused too.
    admin(
        &c,
        "POST",
        "/api/v1/node",
        json!({ "path": "/t-ra", "acl": [{ "perms": "cdw", "scheme": "world", "id": "anyone" }] }),
    );
    xid += 1;
    assert_eq!(raw.call(xid, 6, Jute::default().str("/t-ra")).err, NO_AUTH);
    assert_eq!(checked, 75);
}

#[test]
fn changes_of_access_are_audited_and_injected_newlines_stay_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    // The admin API: a token made.
    admin(&c, "POST", "/api/v1/tokens", json!({ "name": "ci-bot", "scopes": ["read"] }));
    // The ZooKeeper port: an ACL change, and an addauth whose user name
    // carries a newline and a forged line after it.
    let mut raw = Raw::connect(c.client, 10_000);
    admin(&c, "POST", "/api/v1/node", json!({ "path": "/guarded" }));
    assert_eq!(raw.call(1, 7, with_acl(Jute::default().str("/guarded"), 31).int(-1)).err, 0);
    let forged = "evil\n2026-01-01T00:00:00Z INFO audit: action=\"grant\" actor=\"root\"";
    raw.send(-4, 100, Jute::default().int(0).str("digest").buf(Some(format!("{forged}:pw").as_bytes())));
    assert_eq!(raw.recv().unwrap().err, 0);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = c.log();
        if log.contains("addauth") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit:")).collect();
    let admin_id = get(&c, "/api/v1/whoami")["token"]["id"].as_str().unwrap().to_owned();
    assert!(
        audit.iter().any(|l| l.contains("POST /api/v1/tokens")
            && l.contains(&format!("token:{admin_id}"))
            && l.contains("done")),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|l| l.contains("action=\"setACL\"") && l.contains("/guarded") && l.contains("done")),
        "{audit:#?}"
    );
    // The newline is written escaped, inside the one addauth line; no line
    // of the log begins with the forged text.
    assert!(
        audit.iter().any(|l| l.contains("addauth") && l.contains(r#"object="digest:evil\n2026-01-01T00""#)),
        "{audit:#?}"
    );
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")), "a forged line reached the log");
}
