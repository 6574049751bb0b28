//! The `corral` CLI: tree commands over the ZooKeeper port and over the
//! admin API, JSON output, token and cluster commands, and exit codes.

use std::process::{Command, Output};

use corral_tests::{Corral, binary};
use serde_json::Value;

fn corral(args: &[impl AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(binary()).args(args).env_remove("CORRAL_API_TOKEN").env_remove("CORRAL_API_URL").output().unwrap()
}

fn ok(args: &[impl AsRef<std::ffi::OsStr>]) -> String {
    let out = corral(args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(out.status.success(), "{shown:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn code(args: &[impl AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let out = corral(args);
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn tree_commands_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let zk = c.client.to_string();
    let api = c.api();
    let over_zk = ["--server", zk.as_str()];
    let over_api = ["--api", api.as_str(), "--token", c.token()];

    for (t, root) in [(&over_zk[..], "/zk"), (&over_api[..], "/api")] {
        fn join<'a>(t: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
            [t, rest].concat()
        }
        let with = |rest: &[&str]| join(t, rest).into_iter().map(String::from).collect::<Vec<String>>();
        assert_eq!(ok(&with(&["create", root, "hello"])).trim(), root);
        let child = format!("{root}/c");
        ok(&with(&["create", &child, "x"]));
        let seq = ok(&with(&["create", &format!("{root}/s-"), "--mode", "sequential"]));
        assert_eq!(seq.trim(), format!("{root}/s-0000000001"));
        assert_eq!(ok(&with(&["get", root])), "hello\n");
        assert_eq!(ok(&with(&["set", root, "again", "--version", "0"])).trim(), "version 1");
        assert_eq!(ok(&with(&["ls", root])), "c\ns-0000000001\n");
        let stat = ok(&with(&["stat", root]));
        assert!(stat.contains("numChildren = 2") && stat.contains("version = 1"), "{stat}");
        let json: Value = serde_json::from_str(&ok(&with(&["get", root, "--json"]))).unwrap();
        assert_eq!(json["data_utf8"], "again");
        assert_eq!(json["stat"]["num_children"], 2);

        // Exit codes: not found 3, conflict 4.
        assert_eq!(code(&with(&["get", &format!("{root}/missing")])).0, 3);
        assert_eq!(code(&with(&["create", root])).0, 4);
        assert_eq!(code(&with(&["set", root, "x", "--version", "0"])).0, 4);
        assert_eq!(code(&with(&["delete", root])).0, 4);
        let out = ok(&with(&["delete", root, "--recursive"]));
        assert_eq!(out.trim(), "deleted 3");
        assert_eq!(code(&with(&["stat", root])).0, 3);
    }

    // Not allowed: 5. Unreachable: 6. Bad usage: 2.
    let (rc, err) = code(&["--api", &api, "--token", "corral_wrong", "get", "/"]);
    assert_eq!(rc, 5, "{err}");
    assert!(err.starts_with("corral: "), "errors are one readable line: {err}");
    assert_eq!(code(&["--server", "127.0.0.1:1", "get", "/"]).0, 6);
    assert_eq!(code(&["get"]).0, 2);
}

#[test]
fn recursive_delete_shows_progress_and_watch_prints_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let zk = c.client.to_string();
    ok(&["--server", &zk, "create", "/big"]);
    let mut r = corral_tests::Raw::connect(c.client, 4000);
    for i in 0..1500 {
        let body = corral_tests::Jute::default().str(&format!("/big/n{i}")).buf(None).open_acl().int(0);
        r.send(i + 1, 1, body);
    }
    for _ in 0..1500 {
        assert_eq!(r.recv().unwrap().err, 0);
    }
    let out = corral(&["--server", &zk, "delete", "/big", "--recursive"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "deleted 1501");
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleted 1500/1500"), "progress on stderr");

    // watch: two changes, then exit.
    let watcher = Command::new(binary())
        .args(["--server", &zk, "watch", "/w", "--count", "2", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&["--server", &zk, "create", "/w", "a"]);
    ok(&["--server", &zk, "set", "/w", "b"]);
    let out = watcher.wait_with_output().unwrap();
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["type"].as_str(), lines[1]["type"].as_str()), (Some("created"), Some("data")));
}

#[test]
fn token_and_cluster_commands() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let api = c.api();
    let base = ["--api", api.as_str(), "--token", c.token()];
    let created: Value =
        serde_json::from_str(&ok(&[&base[..], &["token", "create", "ci", "--scope", "read,write", "--json"]].concat()))
            .unwrap();
    let secret = created["token"].as_str().unwrap();
    assert_eq!(created["scopes"], serde_json::json!(["read", "write"]));
    let list = ok(&[&base[..], &["token", "list"]].concat());
    assert!(list.contains("ci") && list.contains("bootstrap-admin") && !list.contains(secret), "{list}");
    // The new token works, but cannot manage tokens.
    ok(&["--api", &api, "--token", secret, "create", "/by-ci"]);
    assert_eq!(code(&["--api", &api, "--token", secret, "token", "list"]).0, 5);
    ok(&[&base[..], &["token", "revoke", created["id"].as_str().unwrap()]].concat());
    assert_eq!(code(&["--api", &api, "--token", secret, "get", "/by-ci"]).0, 5);

    let status = ok(&[&base[..], &["cluster", "status"]].concat());
    assert!(status.starts_with("node 1 is leader; leader 1;"), "{status}");
}
