//! The four-letter words, in ZooKeeper's text formats.
//!
//! A four-letter word arrives as the first four bytes of a connection; the
//! whole answer is written at once (kazoo reads it with a single `recv`) and
//! the connection closes. Only the words in the `four_letter_words`
//! allowlist are answered; the others get ZooKeeper's refusal text.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use super::Shared;

/// The version string clients parse: kazoo reads `zookeeper.version=` from
/// `envi` and compares its numeric parts to pick features.
pub fn zookeeper_version() -> String {
    format!("3.9.4-corral-{}", env!("CARGO_PKG_VERSION"))
}

/// The text answering `word`.
pub async fn answer(s: &Arc<Shared>, word: &str) -> String {
    if !s.config.four_letter_words.iter().any(|w| w == word || w == "*") {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    if matches!(word, "cons" | "dump" | "wchc" | "wchp") {
        let interval = Duration::from_millis(s.config.four_letter_dump_interval_ms);
        let mut last = s.last_dump.lock();
        if last.is_some_and(|t| t.elapsed() < interval) {
            return format!(
                "{word} is rate limited: at most one dump every {} ms, try again later.\n",
                interval.as_millis()
            );
        }
        *last = Some(Instant::now());
    }
    match word {
        "ruok" => "imok".into(),
        "isro" => if s.read_only() { "ro" } else { "rw" }.into(),
        "srvr" => srvr(s, false),
        "stat" => srvr(s, true),
        "envi" => envi(s),
        "conf" => conf(s),
        "mntr" => mntr(s),
        "wchs" => {
            let w = s.dispatch.watches.lock();
            format!("{} connections watching {} paths\nTotal watches:{}\n", w.connections(), w.paths(), w.count())
        }
        "cons" => {
            let mut out = String::new();
            s.dispatch.for_each_conn(|_, c| {
                let _ = writeln!(
                    out,
                    " /{}[1](queued=0,recved={},sent={},sid=0x{:x})",
                    c.peer,
                    c.stats.received.load(Ordering::Relaxed),
                    c.stats.sent.load(Ordering::Relaxed),
                    c.stats.session.load(Ordering::Relaxed)
                );
            });
            out.push('\n');
            out
        }
        "dirs" => {
            let size = dir_size(&s.config.data_dir);
            format!("datadir_size: {size}\nlogdir_size: 0\n")
        }
        "srst" => {
            s.stats.reset();
            "Server stats reset.\n".into()
        }
        "crst" => {
            s.dispatch.for_each_conn(|_, c| {
                c.stats.received.store(0, Ordering::Relaxed);
                c.stats.sent.store(0, Ordering::Relaxed);
            });
            "Connection stats reset.\n".into()
        }
        "wchc" => {
            let sessions = session_of_conns(s);
            let mut out = String::new();
            for (conn, paths) in s.dispatch.watches.lock().by_connection() {
                let _ = writeln!(out, "0x{:x}", sessions.get(&conn).copied().unwrap_or(0));
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
            out.push('\n');
            out
        }
        "wchp" => {
            let sessions = session_of_conns(s);
            let mut out = String::new();
            for (p, conns) in s.dispatch.watches.lock().by_path() {
                let _ = writeln!(out, "{p}");
                for c in conns {
                    let _ = writeln!(out, "\t0x{:x}", sessions.get(&c).copied().unwrap_or(0));
                }
            }
            out.push('\n');
            out
        }
        "dump" => dump(s).await,
        "gtmk" => "0\n".into(),
        _ => format!("{word} is not supported by Corral.\n"),
    }
}

fn session_of_conns(s: &Shared) -> HashMap<u64, i64> {
    let mut out = HashMap::new();
    s.dispatch.for_each_conn(|id, c| {
        out.insert(id, c.stats.session.load(Ordering::Relaxed));
    });
    out
}

/// `dump`: sessions with their timeouts, and their ephemerals.
async fn dump(s: &Arc<Shared>) -> String {
    let state = s.state.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<_, crate::tree::StoreError> {
        let view = state.read_ungated()?;
        let mut out = Vec::new();
        for (id, session) in view.all_sessions()? {
            out.push((id, session.timeout_ms, view.ephemerals_of(id, "/")?));
        }
        Ok(out)
    })
    .await;
    let sessions = match read {
        Ok(Ok(x)) => x,
        _ => return "dump failed: could not read the state\n".into(),
    };
    let mut out = format!("SessionTracker dump:\nSession Sets ({}):\n", sessions.len());
    for (id, timeout, _) in &sessions {
        let _ = writeln!(out, "\t0x{id:x} (timeout {timeout} ms)");
    }
    let with = sessions.iter().filter(|(_, _, e)| !e.is_empty()).count();
    let _ = writeln!(out, "ephemeral nodes dump:\nSessions with Ephemerals ({with}):");
    for (id, _, ephemerals) in sessions.iter().filter(|(_, _, e)| !e.is_empty()) {
        let _ = writeln!(out, "0x{id:x}:");
        for p in ephemerals {
            let _ = writeln!(out, "\t{p}");
        }
    }
    let _ = writeln!(out, "Connections dump:\nConnections Sets ({}):", s.dispatch.connection_count());
    out
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn srvr(s: &Shared, with_clients: bool) -> String {
    let (min, avg, max) = s.stats.latency_ms();
    let meta = s.state.meta();
    let mut out = format!("Zookeeper version: {}, built on corral\n", zookeeper_version());
    if with_clients {
        out.push_str("Clients:\n");
        s.dispatch.for_each_conn(|_, c| {
            let _ = writeln!(
                out,
                " /{}[1](queued=0,recved={},sent={})",
                c.peer,
                c.stats.received.load(Ordering::Relaxed),
                c.stats.sent.load(Ordering::Relaxed)
            );
        });
        out.push('\n');
    }
    let _ = write!(
        out,
        "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: 0\nZxid: 0x{:x}\nMode: {}\nNode count: {}\n",
        s.stats.received.load(Ordering::Relaxed),
        s.stats.sent.load(Ordering::Relaxed),
        s.dispatch.connection_count(),
        meta.applied_index,
        s.mode(),
        meta.node_count,
    );
    out
}

fn envi(s: &Shared) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "Environment:\nzookeeper.version={}\nhost.name={}\nos.name={}\nos.arch={}\nuser.dir={}\ncorral.data_dir={}\n",
        zookeeper_version(),
        host.trim(),
        std::env::consts::OS,
        std::env::consts::ARCH,
        std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        s.config.data_dir.display(),
    )
}

fn conf(s: &Shared) -> String {
    let c = &s.config;
    format!(
        "clientPort={}\nclientPortAddress={}\ndataDir={}\ndataDirSize={}\ntickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nserverId={}\n",
        c.client_addr.port(),
        c.client_addr.ip(),
        c.data_dir.display(),
        dir_size(&c.data_dir),
        c.tick_time_ms,
        c.max_connections_per_ip,
        c.min_session_timeout(),
        c.max_session_timeout(),
        s.node,
    )
}

/// How far behind the leader's log a member may be and still count as
/// synced in `mntr`.
const SYNCED_LAG: u64 = 1000;

fn mntr(s: &Shared) -> String {
    let (min, avg, max) = s.stats.latency_ms();
    let meta = s.state.meta();
    // One lock at a time: the apply's publish takes the connections and
    // then the watches, so holding the watches while asking for the
    // connection count could deadlock against it.
    let watch_count = s.dispatch.watches.lock().count();
    let m = s.raft.metrics().borrow_watched().clone();
    let mut rows: Vec<(&str, String)> = vec![
        ("zk_version", zookeeper_version()),
        ("zk_server_state", s.mode().into()),
        ("zk_avg_latency", format!("{avg:.4}")),
        ("zk_max_latency", format!("{max:.0}")),
        ("zk_min_latency", format!("{min:.0}")),
        ("zk_packets_received", s.stats.received.load(Ordering::Relaxed).to_string()),
        ("zk_packets_sent", s.stats.sent.load(Ordering::Relaxed).to_string()),
        ("zk_num_alive_connections", s.dispatch.connection_count().to_string()),
        ("zk_outstanding_requests", "0".into()),
        ("zk_znode_count", meta.node_count.to_string()),
        ("zk_watch_count", watch_count.to_string()),
        ("zk_ephemerals_count", meta.ephemeral_count.to_string()),
        ("zk_approximate_data_size", meta.data_bytes.to_string()),
        ("zk_uptime", s.started.elapsed().as_millis().to_string()),
        ("zk_global_sessions", s.dispatch.liveness.len().to_string()),
        ("zk_last_zxid", format!("0x{:x}", meta.applied_index)),
        ("corral_raft_term", m.current_term.to_string()),
        ("corral_raft_applied_index", m.last_applied.map_or(0, |l| l.index).to_string()),
        ("corral_digest", format!("{:016x}", meta.digest.0)),
    ];
    if let Some(replication) = &m.replication {
        // Leader only, as in ZooKeeper. A member counts as synced when it
        // has acknowledged the log up to within SYNCED_LAG entries.
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let synced = |id: &u64| {
            replication.get(id).is_some_and(|l| last - l.as_ref().map_or(0, |l| l.index).min(last) <= SYNCED_LAG)
        };
        let others: Vec<u64> = membership.nodes().map(|(id, _)| *id).filter(|id| *id != s.node).collect();
        let followers = others.iter().filter(|id| voters.contains(id)).count();
        let synced_followers = others.iter().filter(|id| voters.contains(id) && synced(id)).count();
        let synced_observers = others.iter().filter(|id| !voters.contains(id) && synced(id)).count();
        rows.extend([
            ("zk_learners", others.len().to_string()),
            ("zk_followers", followers.to_string()),
            ("zk_synced_followers", synced_followers.to_string()),
            ("zk_synced_non_voting_followers", "0".into()),
            ("zk_synced_observers", synced_observers.to_string()),
            ("zk_pending_syncs", "0".into()),
        ]);
    }
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k}\t{v}");
    }
    out
}
