//! `corral bench`: refuses bad arguments with a clear message, and a short
//! run against a real server produces sane numbers and a JSON result.

use std::process::Command;

use corral_tests::{Corral, binary};

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(binary()).arg("bench").args(args).output().expect("corral bench runs")
}

#[test]
fn argument_errors_are_refused_clearly() {
    for (args, needle) in [
        (&["--servers", "10.1.2.3:2181"][..], "not a loopback address"),
        (&["--sessions", "0"][..], "--sessions must be in"),
        (&["--inflight", "100000"][..], "--inflight must be in"),
        (&["--read-pct", "101"][..], "--read-pct"),
        (&["--duration", "99999"][..], "--duration must be in"),
        (&["--duration", "0"][..], "give --duration above 0 or --ops"),
        (&["--prefix", "/"][..], "--prefix"),
        (&["--workload", "nonsense"][..], "invalid value 'nonsense'"),
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn short_runs_produce_results() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let server = c.client.to_string();
    let json = dir.path().join("mixed.json");
    let out = bench(&[
        "--servers",
        &server,
        "--workload",
        "mixed",
        "--sessions",
        "4",
        "--inflight",
        "4",
        "--keys",
        "200",
        "--warmup",
        "0.5",
        "--duration",
        "2",
        "--json-out",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["ops"].as_u64().unwrap() > 100, "{r}");
    assert!(r["ops_per_sec"].as_f64().unwrap() > 50.0);
    let lat = |k: &str| r["latency"][k].as_f64().unwrap();
    assert!(0.0 < lat("p50") && lat("p50") <= lat("p99") && lat("p99") <= lat("max"), "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "errors reported");
    assert!(r["reads"]["count"].as_u64().unwrap() > r["writes"]["count"].as_u64().unwrap(), "90% reads");
    assert_eq!(r["cdf"].as_array().unwrap().last().unwrap()[1], 1.0, "the CDF ends at 1");

    // Fan-out, churn and a count-bounded create run.
    for args in [
        &["--workload", "watch", "--watchers", "20", "--rounds", "3"][..],
        &["--workload", "churn", "--sessions", "2", "--warmup", "0.2", "--duration", "1"][..],
        &["--workload", "create", "--mode", "sequential", "--ops", "500", "--warmup", "0"][..],
    ] {
        let out = bench(&[&["--servers", &server, "--quiet"][..], args].concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("ops/s"), "{stdout}");
        assert!(!stdout.contains("errors:"), "{args:?}: {stdout}");
    }
    let srvr = c.four("srvr");
    let count: u64 = srvr.lines().find_map(|l| l.strip_prefix("Node count: ")).unwrap().parse().unwrap();
    assert!(count >= 500 + 200, "the runs created their nodes: {srvr}");
}
