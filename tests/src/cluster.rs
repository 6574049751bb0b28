//! Multi-process clusters on loopback, and a fault proxy between members.
//!
//! [`Cluster::start`] runs N `corral serve` processes with one shared
//! `initial_cluster`, secret and admin token. With `proxied`, every member's
//! Raft address in the membership is a [`Proxy`] port in front of its real
//! one, so a test can cut links between members.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Corral;

pub const SECRET: &str = "test-cluster-secret-0123456789";
pub const TOKEN: &str = "corral_test_token_0123456789abcdef";

pub struct Cluster {
    pub nodes: Vec<Corral>,
    pub proxy: Option<Proxy>,
}

impl Cluster {
    /// Starts `n` members (ids 1..=n) and waits until all serve.
    pub fn start(dir: &Path, n: usize, extra: &[(&str, &str)], proxied: bool) -> Cluster {
        Self::start_prepared(dir, n, extra, proxied, |_, _| {})
    }

    /// Like [`Cluster::start`], with `prepare(i, member)` run on each member
    /// before it starts (environment for fault shims, a data directory on
    /// a small tmpfs).
    pub fn start_prepared(
        dir: &Path,
        n: usize,
        extra: &[(&str, &str)],
        proxied: bool,
        prepare: impl Fn(usize, &mut Corral),
    ) -> Cluster {
        let mut nodes: Vec<Corral> =
            (1..=n).map(|i| Corral::configure(&dir.join(format!("node-{i}")), extra)).collect();
        let proxy = proxied.then(|| Proxy::start(nodes.iter().map(|c| c.raft).collect()));
        let members: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let addr = proxy.as_ref().map_or(c.raft, |p| p.listen[i]);
                format!("{}={addr}", i + 1)
            })
            .collect();
        for (i, c) in nodes.iter_mut().enumerate() {
            c.set("node_id", &(i + 1).to_string());
            c.set(
                "initial_cluster",
                &format!("[{}]", members.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(",")),
            );
            c.set("cluster_secret", SECRET);
            c.set("initial_admin_token", TOKEN);
            c.admin_token = Some(TOKEN.into());
            prepare(i, c);
            c.spawn();
        }
        for c in nodes.iter_mut() {
            c.wait_ready();
        }
        Cluster { nodes, proxy }
    }

    /// Every member's ZooKeeper address.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|c| c.client).collect()
    }

    /// Member `i`'s view of the cluster (`/api/v1/cluster`), if it answers.
    pub fn view(&self, i: usize) -> Option<serde_json::Value> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
        let mut resp = agent
            .get(format!("{}/api/v1/cluster", self.nodes[i].api()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .ok()?;
        resp.body_mut().read_json().ok()
    }

    /// The index of the leader, once a running member leads and every
    /// running member agrees.
    pub fn leader(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()).collect();
            let leaders: Vec<Option<u64>> =
                running.iter().map(|&i| self.view(i).and_then(|v| v["leader"].as_u64())).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && running.contains(&(*l as usize - 1))
                && self.view(*l as usize - 1).is_some_and(|v| v["state"] == "leader")
            {
                return *l as usize - 1;
            }
            assert!(Instant::now() < deadline, "no agreed leader among {running:?}: {leaders:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member has applied the same index with
    /// the same digest; returns them.
    pub fn converged(&mut self) -> (u64, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()).collect();
            let states: Vec<Option<(u64, String)>> = running
                .iter()
                .map(|&i| {
                    let v = self.view(i)?;
                    Some((v["applied_index"].as_u64()?, v["digest"].as_str()?.to_owned()))
                })
                .collect();
            if let Some(Some(first)) = states.first()
                && states.iter().all(|s| s.as_ref() == Some(first))
            {
                return first.clone();
            }
            if Instant::now() >= deadline {
                panic!("members did not converge: {states:?}\n{}", self.differences(&running));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Cluster {
    /// What differs between the members' trees and sessions, as their admin
    /// APIs show them: for a test that found them diverged.
    fn differences(&self, running: &[usize]) -> String {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
        let get = |i: usize, path: &str| -> serde_json::Value {
            agent
                .get(format!("{}{path}", self.nodes[i].api()))
                .header("authorization", format!("Bearer {TOKEN}"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json().ok())
                .unwrap_or_default()
        };
        let mut views = Vec::new();
        for &i in running {
            let mut entries = std::collections::BTreeMap::new();
            let export = get(i, "/api/v1/export?path=/");
            for n in export["nodes"].as_array().cloned().unwrap_or_default() {
                entries.insert(format!("node {}", n["path"].as_str().unwrap_or("?")), n.to_string());
            }
            for e in export["skipped_ephemerals"].as_array().cloned().unwrap_or_default() {
                entries.insert(format!("ephemeral {}", e.as_str().unwrap_or("?")), String::new());
            }
            for sess in get(i, "/api/v1/sessions").as_array().cloned().unwrap_or_default() {
                let (id, eph) = (sess["id"].as_str().unwrap_or("?").to_owned(), sess["ephemerals"].to_string());
                entries.insert(format!("session {id}"), eph);
            }
            views.push((i + 1, entries));
        }
        let mut keys: std::collections::BTreeSet<&String> = std::collections::BTreeSet::new();
        for (_, v) in &views {
            keys.extend(v.keys());
        }
        let mut out = Vec::new();
        for k in keys {
            let values: Vec<Option<&String>> = views.iter().map(|(_, v)| v.get(k)).collect();
            if values.windows(2).any(|w| w[0] != w[1]) {
                let shown: Vec<String> = views
                    .iter()
                    .zip(&values)
                    .map(|((m, _), v)| {
                        format!("member {m}: {}", v.map_or("absent".to_owned(), |s| s.chars().take(120).collect()))
                    })
                    .collect();
                out.push(format!("{k}: {}", shown.join(" | ")));
            }
        }
        let n = out.len();
        out.truncate(20);
        let first = first_digest_difference(&running.iter().map(|&i| (i + 1, self.nodes[i].log())).collect::<Vec<_>>());
        format!("{n} differences between the members (showing up to 20):\n{}\n{first}", out.join("\n"))
    }
}

/// What members' logs say about where they diverged, when they log each
/// applied batch (`RUST_LOG=corral::apply=debug`): the first log index at
/// which two members' digests differ, a member that reopened its state at
/// an index with another digest than it had applied there, and the log
/// lines of each member just before. `logs` holds (member, whole log).
pub fn first_digest_difference(logs: &[(usize, String)]) -> String {
    // Per member: index -> (digest, line number) of each applied batch's
    // last entry, and of each reopened state.
    let field = |line: &str, key: &str| -> Option<String> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_owned)
    };
    let mut out = Vec::new();
    let mut applied: Vec<std::collections::BTreeMap<u64, (String, usize)>> = Vec::new();
    for (member, log) in logs {
        let mut at = std::collections::BTreeMap::new();
        for (n, line) in log.lines().enumerate() {
            if !line.contains("corral::apply") {
                continue;
            }
            let index = field(line, "last=").or_else(|| field(line, "applied="));
            let (Some(index), Some(digest)) = (index.and_then(|i| i.parse::<u64>().ok()), field(line, "digest="))
            else {
                continue;
            };
            // Index 0 is a fresh state, before anything was applied.
            if index == 0 {
                continue;
            }
            if let Some((before, _)) = at.get(&index)
                && *before != digest
            {
                out.push(format!(
                    "member {member} had digest {before} at index {index}, then {digest} (log line {}): {line}",
                    n + 1
                ));
            }
            at.insert(index, (digest, n));
        }
        applied.push(at);
    }
    if applied.iter().all(|a| a.is_empty()) {
        return "(the members' logs have no per-batch digests: run them with RUST_LOG=corral::apply=debug)".into();
    }
    let indexes: std::collections::BTreeSet<u64> = applied.iter().flat_map(|a| a.keys().copied()).collect();
    let first = indexes.into_iter().find(|index| {
        let seen: std::collections::BTreeSet<&String> =
            applied.iter().filter_map(|a| a.get(index).map(|(d, _)| d)).collect();
        seen.len() > 1
    });
    match first {
        None => out.push("every index that two members logged has one digest".into()),
        Some(index) => {
            out.push(format!("first index at which members' digests differ: {index}"));
            for ((member, log), at) in logs.iter().zip(&applied) {
                let Some((digest, line)) = at.get(&index) else { continue };
                // What the member did before (starts, failures), without
                // the batches in between.
                let lines: Vec<&str> = log.lines().take(line + 1).collect();
                let mut context: Vec<&str> = lines
                    .iter()
                    .rev()
                    .skip(1)
                    .filter(|l| !l.contains("corral::apply: applied"))
                    .take(10)
                    .copied()
                    .collect();
                context.reverse();
                context.push(lines[*line]);
                out.push(format!(
                    "member {member}: digest {digest}; its log up to there:\n    {}",
                    context.join("\n    ")
                ));
            }
        }
    }
    out.join("\n")
}

/// A TCP proxy in front of each member's Raft port. It learns which member
/// dialled from the transport's `Hello` frame, and holds the bytes of cut
/// links: like a dropped packet, a held byte is not lost, it arrives when
/// the link heals (TCP retransmits), and the sender's buffers fill meanwhile.
/// It can also delay a link's bytes (what `tc netem`, missing here, would
/// do): each link has its own delay, so messages on different links (a
/// vote, an append, a snapshot chunk) arrive out of their sending order.
pub struct Proxy {
    pub listen: Vec<SocketAddr>,
    links: Arc<Links>,
    stop: Arc<AtomicBool>,
}

/// The faults on links, by (from, to) member ids.
#[derive(Default)]
struct Links {
    cut: Mutex<HashSet<(u64, u64)>>,
    delay: Mutex<HashMap<(u64, u64), Duration>>,
}

impl Links {
    fn held(&self, (a, b): (u64, u64)) -> bool {
        self.cut.lock().unwrap().iter().any(|&l| l == (a, b) || l == (b, a))
    }

    fn delay(&self, (a, b): (u64, u64)) -> Duration {
        self.delay.lock().unwrap().get(&(a, b)).copied().unwrap_or_default()
    }
}

impl Proxy {
    fn start(upstreams: Vec<SocketAddr>) -> Proxy {
        let links: Arc<Links> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut listen = Vec::new();
        for (i, up) in upstreams.into_iter().enumerate() {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            listen.push(l.local_addr().unwrap());
            let to = i as u64 + 1;
            let (links, stop) = (links.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((down, _)) => {
                            let (links, stop) = (links.clone(), stop.clone());
                            std::thread::spawn(move || relay(down, up, to, links, stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Proxy { listen, links, stop }
    }

    /// Cuts every link between `node` (1-based id) and the others.
    pub fn isolate(&self, node: u64, members: u64) {
        let mut cut = self.links.cut.lock().unwrap();
        for other in (1..=members).filter(|&o| o != node) {
            cut.insert((node, other));
            cut.insert((other, node));
        }
    }

    /// Delays what `node` sends to each other member, and what it receives
    /// from them, by `by` and a different extra per link (0–`by`/2).
    pub fn delay(&self, node: u64, members: u64, by: Duration) {
        let mut delay = self.links.delay.lock().unwrap();
        for other in (1..=members).filter(|&o| o != node) {
            let extra = by / 2 * (other as u32) / (members as u32);
            delay.insert((node, other), by + extra);
            delay.insert((other, node), by);
        }
    }

    /// Ends every cut and delay.
    pub fn heal(&self) {
        self.links.cut.lock().unwrap().clear();
        self.links.delay.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Relays one connection dialled by some member to member `to`.
fn relay(mut down: TcpStream, up: SocketAddr, to: u64, links: Arc<Links>, stop: Arc<AtomicBool>) {
    let Ok(mut upstream) = TcpStream::connect(up) else { return };
    let _ = down.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // The dialler speaks first after the challenge: read its Hello to learn
    // who it is. Frame: u32 BE length, postcard enum index 1, varint id.
    let mut from = 0u64;
    let (mut d2, mut u2) = (down.try_clone().unwrap(), upstream.try_clone().unwrap());
    let stop2 = stop.clone();
    let links2 = links.clone();
    let from_shared = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let from_up = from_shared.clone();
    // upstream -> down (challenge, welcome, responses): from `to`.
    std::thread::spawn(move || pipe(&mut u2, &mut d2, move || (to, from_up.load(Ordering::Relaxed)), links2, stop2));
    let mut len = [0u8; 4];
    if down.read_exact(&mut len).is_err() {
        return;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    if body.len() > 1 << 16 || down.read_exact(&mut body).is_err() {
        return;
    }
    if body.first() == Some(&1) && body.len() > 1 && body[1] < 128 {
        from = body[1] as u64;
    }
    from_shared.store(from, Ordering::Relaxed);
    // Hold the Hello too while the link is cut.
    while links.held((from, to)) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if upstream.write_all(&len).is_err() || upstream.write_all(&body).is_err() {
        return;
    }
    pipe(&mut down, &mut upstream, move || (from, to), links, stop);
}

/// Copies `src` to `dst`: nothing while the link is cut, and each chunk
/// after the link's delay, in order.
fn pipe(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    link: impl Fn() -> (u64, u64),
    links: Arc<Links>,
    stop: Arc<AtomicBool>,
) {
    let _ = src.set_read_timeout(Some(Duration::from_millis(10)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut due: std::collections::VecDeque<(Instant, Vec<u8>)> = std::collections::VecDeque::new();
    'copy: while !stop.load(Ordering::Relaxed) {
        if links.held(link()) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => due.push_back((Instant::now() + links.delay(link()), buf[..n].to_vec())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        // Checked again before each write: bytes read just before a cut
        // are held too, not let through after it.
        while due.front().is_some_and(|(at, _)| *at <= Instant::now()) && !links.held(link()) {
            let (_, bytes) = due.pop_front().expect("a front");
            if dst.write_all(&bytes).is_err() {
                break 'copy;
            }
        }
    }
    let _ = dst.shutdown(std::net::Shutdown::Both);
    let _ = src.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::first_digest_difference;

    fn log(batches: &[(u64, &str)]) -> String {
        let mut s = String::from("INFO corral::apply: state opened applied=0 digest=00\n");
        for (last, digest) in batches {
            s += &format!("DEBUG corral::apply: applied first=1 last={last} digest={digest} durable=false\n");
        }
        s
    }

    #[test]
    fn names_the_first_index_where_digests_differ() {
        let a = log(&[(3, "aa"), (7, "bb"), (9, "cc")]);
        let b = log(&[(5, "a5"), (7, "bX"), (9, "cX")]);
        let report = first_digest_difference(&[(1, a), (2, b)]);
        assert!(report.contains("first index at which members' digests differ: 7"), "{report}");
    }

    #[test]
    fn a_reopened_state_that_differs_from_what_was_applied_is_named() {
        let mut a = log(&[(3, "aa"), (7, "bb")]);
        a += "INFO corral::apply: state opened applied=7 digest=zz\n";
        let report = first_digest_difference(&[(1, a.clone()), (2, a)]);
        assert!(report.contains("member 1 had digest bb at index 7, then zz"), "{report}");
    }

    #[test]
    fn agreeing_members_have_no_first_difference() {
        let a = log(&[(3, "aa"), (7, "bb")]);
        let report = first_digest_difference(&[(1, a.clone()), (2, a)]);
        assert!(report.contains("every index that two members logged has one digest"), "{report}");
    }
}
