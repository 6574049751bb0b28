//! The member side of the cluster transport ([`crate::raft::network`]).
//!
//! - [`listen`] accepts other members, checks their handshake, and serves
//!   their requests: Raft RPCs, snapshot chunks, forwarded client commands,
//!   session liveness reports and membership changes.
//! - [`Forwarder`] sends a follower's client commands to the leader, in
//!   order, over one connection.
//! - [`report_loop`] tells the leader which sessions this node heard from,
//!   so that only the leader expires sessions, with everyone's view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use futures::future::BoxFuture;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::impls::ProgressResponder;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::machine::command::{Command, Op};
use crate::raft::network::{
    Frame, Link, MemberOp, PeerStream, RaftService, Req, Resp, Settings, challenge, read_frame, write_frame,
};
use crate::raft::{NodeInfo, TypeConfig};

/// Accepts members until `stop`.
pub async fn listen(s: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("raft accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let s = s.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = accept_peer(s, stream, peer).await {
                tracing::info!(%peer, "raft peer connection ended: {e}");
            }
        });
    }
}

/// Serves a connection a member opened, over mutual TLS when the members
/// use it: the certificate it shows must name the member it says it is.
pub async fn accept_peer<S: PeerStream>(s: Arc<Shared>, stream: S, peer: std::net::SocketAddr) -> Result<(), String> {
    let Some(tls) = s.transport.tls.clone() else { return serve_peer(s, stream, peer, |_, _| true).await };
    match tokio::time::timeout(s.transport.rpc_timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let names = |st: &tokio_rustls::server::TlsStream<S>, from| crate::tls::names_member(st.get_ref().1, from);
            serve_peer(s, stream, peer, names).await
        }
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// Serves one member's connection: the cluster-secret handshake, then its
/// requests. `names(stream, from)` says whether what the transport proved
/// (a TLS certificate) names the member the handshake claims to be.
pub async fn serve_peer<S: PeerStream>(
    s: Arc<Shared>,
    mut stream: S,
    peer: std::net::SocketAddr,
    names: impl FnOnce(&S, u64) -> bool,
) -> Result<(), String> {
    let settings = s.transport.clone();
    let max = settings.max_frame_bytes;
    let from = match challenge(&settings, &mut stream).await {
        Ok(Some(from)) => from,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!(%peer, "refused a raft peer: {e}");
            metrics::counter!("corral_raft_handshakes_refused_total").increment(1);
            return Err(e);
        }
    };
    if !names(&stream, from) {
        tracing::warn!(%peer, from, "refused a raft peer: its certificate does not name member-{from}");
        metrics::counter!("corral_raft_handshakes_refused_total").increment(1);
        return Err("certificate names another member".into());
    }
    write_frame(&mut stream, &Frame::Welcome).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Resp)>();
    tokio::spawn(async move {
        while let Some((id, resp)) = rx.recv().await {
            if write_frame(&mut wr, &Frame::Response { id, resp }).await.is_err() {
                return;
            }
        }
    });
    let mut raft = RaftService::new(s.raft.clone(), s.config.data_dir.join("snapshots"));
    loop {
        let frame = read_frame(&mut rd, max).await.map_err(|e| e.to_string())?;
        let Some(Frame::Request { id, req }) = frame else { return Ok(()) };
        let resp = match raft.answer(req).await {
            Ok(resp) => resp,
            Err(Req::Touch(sessions)) => {
                let now = Instant::now();
                for id in sessions {
                    s.dispatch.liveness.touch(id, now);
                }
                Ok(Resp::Touched)
            }
            Err(Req::Forward { term, cmd }) => {
                // Proposed here, in arrival order; answered when its fate is
                // known, so that later requests are not held up.
                let tx = tx.clone();
                match propose(&s, cmd, Some(term)).await {
                    Ok(ack) => {
                        tokio::spawn(async move {
                            let ok = ack.await;
                            let r = if ok { Ok(()) } else { Err("not committed: leadership changed".into()) };
                            let _ = tx.send((id, Resp::Forwarded(r)));
                        });
                        continue;
                    }
                    Err(e) => Ok(Resp::Forwarded(Err(e))),
                }
            }
            Err(Req::Member(op)) => {
                let s = s.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send((id, Resp::Member(change_members(&s, op).await)));
                });
                continue;
            }
            Err(raft_request) => unreachable!("RaftService answers {raft_request:?}"),
        };
        let resp = resp.unwrap_or_else(Resp::Error);
        if tx.send((id, resp)).is_err() {
            return Ok(());
        }
        tracing::trace!(from, "served a raft request");
    }
}

/// The verdict on a proposal: true once it is committed, false if it
/// cannot be (leadership lost, node stopped).
pub type Ack = BoxFuture<'static, bool>;

/// Proposes on this node, which must be the leader, and for a forwarded
/// command the leader of the term the follower sent it in.
async fn propose(s: &Shared, cmd: Command, term: Option<u64>) -> Result<Ack, String> {
    let (leader, current_term) = {
        let rx = s.raft.metrics();
        let m = rx.borrow_watched();
        (m.current_leader, m.current_term)
    };
    if leader != Some(s.node) {
        return Err("not the leader".into());
    }
    if term.is_some_and(|t| t != current_term) {
        return Err(format!("sent for term {term:?}, this is term {current_term}"));
    }
    let (responder, rx) = ProgressResponder::complete_only();
    s.raft.write(cmd).responder(responder).await.map_err(|e| e.to_string())?;
    Ok(Box::pin(async move {
        match rx.await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::info!("a proposed write was not committed: {e}");
                false
            }
            Err(_) => {
                tracing::info!("a proposed write was not committed: its responder was dropped");
                false
            }
        }
    }))
}

/// Proposes a command from a client of this node: locally on the leader,
/// forwarded to it on a follower. Calls keep their order in the log.
///
/// ## Why a leader change cannot reorder or repeat a session's writes
///
/// A forwarded command names the term the follower saw its leader in, and
/// the leader proposes it only in that term. Each (leader, term) gets its
/// own connection; when the term changes, the old one is dropped, and every
/// command still waiting on it reports "not committed". The client
/// connection that sent it then closes (ConnectionLoss, as with a ZooKeeper
/// follower that loses its leader), so nothing it sent later is proposed
/// before that command's fate is decided: an entry of an old term commits,
/// if at all, before any entry of a later term. Corral never re-proposes on
/// its own, so nothing is applied twice.
pub async fn submit(s: &Shared, cmd: Command) -> Result<Ack, String> {
    if s.raft.is_leader() {
        return propose(s, cmd, None).await;
    }
    let rx = s.forwarder.send(s, |term| Req::Forward { term, cmd }).await?;
    Ok(Box::pin(async move { matches!(rx.await, Ok(Resp::Forwarded(Ok(())))) }))
}

/// A follower's ordered connection to the leader of the current term.
#[derive(Default)]
pub struct Forwarder {
    link: tokio::sync::Mutex<Option<((u64, u64), Arc<Link>)>>,
}

impl Forwarder {
    /// The leader's id and Raft address, and the term, as this node knows
    /// them.
    fn leader(s: &Shared) -> Option<(u64, u64, String)> {
        let rx = s.raft.metrics();
        let m = rx.borrow_watched();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, m.current_term, node.raft_addr.clone()))
    }

    /// Sends the request `make(term)` to the leader; the receiver gets the
    /// answer.
    /// During an election, or while a leader that removed itself hands
    /// over: waits up to `leader_wait_ms` for a leader that is a member, so
    /// that a write sent then is delayed rather than failed.
    async fn wait_for_leader(s: &Shared) -> Result<(u64, u64, String), String> {
        let wait = Duration::from_millis(s.config.leader_wait_ms);
        let member_leads = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.current_leader.is_some_and(|l| m.membership_config.membership().get_node(&l).is_some())
        };
        let known = s.raft.wait(Some(wait)).metrics(member_leads, "a leader is known").await;
        match known {
            Ok(_) => Self::leader(s).ok_or_else(|| "no leader is known".to_owned()),
            Err(_) => Err(format!("no leader elected within {wait:?}")),
        }
    }

    /// Drops the connection unless it goes to `leader` in `term`: whatever
    /// waits on it fails.
    async fn retire_unless(&self, leader: Option<u64>, term: u64) {
        let mut guard = self.link.lock().await;
        if guard.as_ref().is_some_and(|(key, _)| Some(key.0) != leader || key.1 != term)
            && let Some((_, link)) = guard.take()
        {
            link.close().await;
        }
    }

    pub async fn send(
        &self,
        s: &Shared,
        make: impl FnOnce(u64) -> Req,
    ) -> Result<tokio::sync::oneshot::Receiver<Resp>, String> {
        let (leader, term, addr) = match Self::leader(s) {
            Some(l) => l,
            None => Self::wait_for_leader(s).await?,
        };
        let link = {
            let mut guard = self.link.lock().await;
            match &*guard {
                Some((key, link)) if *key == (leader, term) => link.clone(),
                _ => {
                    // Dropping the old link fails whatever waits on it.
                    let link = Arc::new(Link::new(addr, leader, s.transport.clone()));
                    *guard = Some(((leader, term), link.clone()));
                    link
                }
            }
        };
        link.send(make(term)).await.map_err(|e| e.to_string())
    }

    /// Asks the leader and waits for the answer.
    pub async fn call(&self, s: &Shared, req: Req, timeout: Duration) -> Result<Resp, String> {
        let rx = self.send(s, |_| req).await?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| "no answer from the leader".to_owned())?
            .map_err(|_| "the leader's connection closed".to_owned())
    }
}

/// Applies a membership change on the leader, or forwards it there.
/// Returns the index of the membership entry once it is committed.
///
/// - `AddLearner` returns once the learner has caught up with the log, so
///   that promoting it next does not stall writes.
/// - `Promote` needs a learner; `Remove` takes a voter or a learner. Raft
///   changes voters through a joint configuration; both steps are done
///   before this returns.
pub async fn change_members(s: &Shared, op: MemberOp) -> Result<u64, String> {
    if !s.raft.is_leader() {
        return match s.forwarder.call(s, Req::Member(op), MEMBER_CHANGE_TIMEOUT).await? {
            Resp::Member(r) => r,
            other => Err(format!("unexpected answer {other:?}")),
        };
    }
    let m = s.raft.metrics().borrow_watched().membership_config.clone();
    let membership = m.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let known = |id: u64| membership.get_node(&id).is_some();
    if let Some(why) = crate::raft::step_down_unless_voter(&s.raft, s.node).await {
        return Err(why);
    }
    let op_target = match &op {
        MemberOp::Demote { id } | MemberOp::Remove { id } => Some(*id),
        MemberOp::AddLearner { .. } | MemberOp::Promote { .. } => None,
    };
    let r = match op {
        MemberOp::AddLearner { id, raft_addr } => {
            if known(id) {
                return Err(format!("node {id} is already a member"));
            }
            s.raft.add_learner(id, NodeInfo { raft_addr }, true).await
        }
        MemberOp::Promote { id } => {
            if !known(id) || voters.contains(&id) {
                return Err(format!("node {id} is not a learner"));
            }
            s.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await
        }
        MemberOp::Demote { id } => {
            if !voters.contains(&id) {
                return Err(format!("node {id} is not a voter"));
            }
            if voters.len() == 1 {
                return Err("cannot demote the last voter".into());
            }
            s.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true).await
        }
        MemberOp::Remove { id } => {
            if voters.contains(&id) {
                if voters.len() == 1 {
                    return Err("cannot remove the last voter".into());
                }
                s.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false).await
            } else if known(id) {
                s.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false).await
            } else {
                return Err(format!("node {id} is not a member"));
            }
        }
    };
    let index = r.map(|resp| resp.log_id.index()).map_err(|e| e.to_string())?;
    // A leader that took itself out of the voters steps down now rather
    // than at the next membership change (which it would refuse).
    if matches!(op_target, Some(id) if id == s.node) {
        crate::raft::step_down_unless_voter(&s.raft, s.node).await;
    }
    Ok(index)
}

/// Turns ZooKeeper `reconfig` arguments into membership changes, given the
/// current members (id to Raft address and whether each votes).
///
/// - `joining`: comma-separated `server.<id>=<host>:<port>[:<port>][:<role>][;<client>]`;
///   the first port is the member's Raft address; the role is
///   `participant` (default) or `observer`. A new id is added as a learner,
///   then promoted if a participant; a known id changes role.
/// - `leaving`: comma-separated ids.
/// - `new_members` (non-incremental): the whole new membership, in the
///   `joining` syntax; the difference to the current one is applied.
pub fn plan_reconfig(
    current: &BTreeMap<u64, (String, bool)>,
    joining: Option<&str>,
    leaving: Option<&str>,
    new_members: Option<&str>,
) -> Result<Vec<MemberOp>, String> {
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.trim().is_empty())
    }
    let (joining, leaving, new_members) = (nonempty(joining), nonempty(leaving), nonempty(new_members));
    if new_members.is_some() && (joining.is_some() || leaving.is_some()) {
        return Err("a reconfig is either incremental (joining/leaving) or gives the new members, not both".into());
    }
    let mut wanted: Vec<(u64, String, bool)> = Vec::new();
    let mut gone: BTreeSet<u64> = BTreeSet::new();
    if let Some(list) = new_members {
        wanted = list.split(',').map(parse_server).collect::<Result<_, _>>()?;
        let keep: BTreeSet<u64> = wanted.iter().map(|w| w.0).collect();
        gone = current.keys().filter(|id| !keep.contains(id)).copied().collect();
    }
    if let Some(list) = joining {
        wanted = list.split(',').map(parse_server).collect::<Result<_, _>>()?;
    }
    if let Some(list) = leaving {
        for id in list.split(',') {
            let id: u64 = id.trim().parse().map_err(|_| format!("bad server id {id:?} in leaving"))?;
            if !current.contains_key(&id) {
                return Err(format!("server {id} is not a member"));
            }
            gone.insert(id);
        }
    }
    let mut ops = Vec::new();
    for (id, raft_addr, voter) in wanted {
        if gone.contains(&id) {
            return Err(format!("server {id} is both joining and leaving"));
        }
        match current.get(&id) {
            None => {
                ops.push(MemberOp::AddLearner { id, raft_addr });
                if voter {
                    ops.push(MemberOp::Promote { id });
                }
            }
            Some((addr, _)) if *addr != raft_addr => {
                return Err(format!("server {id} is a member at {addr}; remove it before adding it at {raft_addr}"));
            }
            Some((_, was_voter)) if *was_voter != voter => {
                ops.push(if voter { MemberOp::Promote { id } } else { MemberOp::Demote { id } })
            }
            Some(_) => {}
        }
    }
    ops.extend(gone.into_iter().map(|id| MemberOp::Remove { id }));
    Ok(ops)
}

/// Moves the changes that take `leader` out of the voters to the end,
/// keeping the order of the rest: the leader steps down after such a
/// change, and a change after it would wait for the next election.
pub fn leader_changes_last(ops: &mut [MemberOp], leader: Option<u64>) {
    ops.sort_by_key(|op| matches!(op, MemberOp::Demote { id } | MemberOp::Remove { id } if Some(*id) == leader));
}

/// Parses `server.<id>=<host>:<port>[:<port>][:<role>][;<client>]` into
/// (id, Raft address, votes).
fn parse_server(spec: &str) -> Result<(u64, String, bool), String> {
    let bad = || format!("bad server spec {spec:?}: expected server.<id>=<host>:<port>[:<port>][:<role>][;<client>]");
    let (key, value) = spec.trim().split_once('=').ok_or_else(bad)?;
    let id: u64 = key.trim().strip_prefix("server.").and_then(|i| i.parse().ok()).ok_or_else(bad)?;
    if !(1..=254).contains(&id) {
        return Err(format!("server id {id} is outside 1..=254"));
    }
    let addresses = value.split(';').next().unwrap_or_default();
    let parts: Vec<&str> = addresses.split(':').collect();
    let (host, port) = match parts.as_slice() {
        [host, port, ..] if !host.is_empty() && port.parse::<u16>().is_ok() => (*host, *port),
        _ => return Err(bad()),
    };
    let voter = match parts.get(3).or(parts.get(2).filter(|p| p.parse::<u16>().is_err())) {
        None | Some(&"participant") => true,
        Some(&"observer") => false,
        Some(other) => return Err(format!("unknown role {other:?} in {spec:?}")),
    };
    Ok((id, format!("{host}:{port}"), voter))
}

/// Membership changes wait for a learner to catch up, which may take a
/// snapshot transfer.
const MEMBER_CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Closes the connection to the old leader as soon as the leader or the
/// term changes, so that commands forwarded in the old term fail at once
/// (their clients see ConnectionLoss) instead of waiting on a dead link.
pub async fn leader_watch(s: Arc<Shared>, stop: CancellationToken) {
    let mut rx = s.raft.metrics();
    let mut seen = None;
    loop {
        let now = {
            let m = rx.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if seen.is_some_and(|old| old != now) {
            tracing::info!(leader = ?now.0, term = now.1, "the leader changed");
            s.forwarder.retire_unless(now.0, now.1).await;
        }
        seen = Some(now);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// Publishes this member's client and HTTP addresses, and the build it
/// runs (Corral's version and its wasm engine fingerprint), in the
/// replicated state whenever they differ from what is there (at start,
/// after it joins, after a restart with new addresses or a new version).
pub async fn publish_member_info(
    s: Arc<Shared>,
    client_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    stop: CancellationToken,
) {
    let (client_addr, http_addr) = (client_addr.to_string(), http_addr.to_string());
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let engine = s.state.plugins().map(|p| p.runtime.fingerprint().to_owned()).unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_millis(s.config.session_check_ms.max(100)));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Not a member yet (a learner that is still being added).
        let Some(published) = s.state.meta().members.get(&s.node).cloned() else { continue };
        let op = if published.client_addr.as_ref() != Some(&client_addr)
            || published.http_addr.as_ref() != Some(&http_addr)
        {
            Op::MemberInfo { node: s.node, client_addr: client_addr.clone(), http_addr: http_addr.clone() }
        } else if published.version.as_ref() != Some(&version) || published.engine.as_ref() != Some(&engine) {
            Op::MemberBuild { node: s.node, version: version.clone(), engine: engine.clone() }
        } else {
            return;
        };
        let cmd = Command { time_ms: s.now_ms(), origin: None, op };
        if let Ok(ack) = submit(&s, cmd).await {
            ack.await;
        }
    }
}

/// On a follower, reports every `session_check_ms` the sessions its
/// clients were heard from.
pub async fn report_loop(s: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(s.config.session_check_ms));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let touched = s.dispatch.liveness.take_touched();
        if touched.is_empty() || s.raft.is_leader() {
            continue;
        }
        if let Err(e) = s.forwarder.call(&s, Req::Touch(touched), Duration::from_secs(5)).await {
            tracing::debug!("session liveness report: {e}");
        }
    }
}

/// The transport settings of this node.
pub fn settings(c: &crate::config::Config) -> Result<Settings, crate::tls::TlsError> {
    Ok(Settings {
        tls: crate::tls::PeerTls::from_config(c)?.map(Arc::new),
        node: c.node_id,
        secret: c.cluster_secret.as_bytes().into(),
        max_frame_bytes: c.max_append_bytes as usize + c.snapshot_chunk_bytes as usize + (1 << 20),
        max_append_bytes: c.max_append_bytes as usize,
        snapshot_chunk_bytes: c.snapshot_chunk_bytes as usize,
        rpc_timeout: Duration::from_millis(c.raft_rpc_timeout_ms),
        dialer: crate::raft::network::Dialer::Tcp,
    })
}

/// The members a fresh cluster starts with.
pub fn initial_members(c: &crate::config::Config) -> BTreeMap<u64, NodeInfo> {
    c.initial_members().into_iter().map(|(id, raft_addr)| (id, NodeInfo { raft_addr })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> BTreeMap<u64, (String, bool)> {
        (1..=3).map(|i| (i, (format!("127.0.0.1:{}", 2887 + i), true))).collect()
    }

    #[test]
    fn incremental_reconfig_adds_promotes_and_removes() {
        let ops =
            plan_reconfig(&three(), Some("server.4=127.0.0.1:2891:3891:participant;127.0.0.1:2185"), Some("2"), None)
                .unwrap();
        assert_eq!(
            ops,
            vec![
                MemberOp::AddLearner { id: 4, raft_addr: "127.0.0.1:2891".into() },
                MemberOp::Promote { id: 4 },
                MemberOp::Remove { id: 2 },
            ]
        );
        let observer = plan_reconfig(&three(), Some("server.5=h:1:2:observer;2186"), None, None).unwrap();
        assert_eq!(observer, vec![MemberOp::AddLearner { id: 5, raft_addr: "h:1".into() }]);
        let demote = plan_reconfig(&three(), Some("server.3=127.0.0.1:2890:2890:observer"), None, None).unwrap();
        assert_eq!(demote, vec![MemberOp::Demote { id: 3 }]);
    }

    #[test]
    fn a_change_to_the_leader_itself_goes_last() {
        let mut ops =
            plan_reconfig(&three(), Some("server.4=127.0.0.1:2891:2891:participant"), Some("1,3"), None).unwrap();
        leader_changes_last(&mut ops, Some(1));
        assert_eq!(
            ops,
            vec![
                MemberOp::AddLearner { id: 4, raft_addr: "127.0.0.1:2891".into() },
                MemberOp::Promote { id: 4 },
                MemberOp::Remove { id: 3 },
                MemberOp::Remove { id: 1 },
            ]
        );
        let mut same = ops.clone();
        leader_changes_last(&mut same, None);
        assert_eq!(same, ops, "no leader known: the order stays");
    }

    #[test]
    fn non_incremental_reconfig_applies_the_difference() {
        let ops =
            plan_reconfig(&three(), None, None, Some("server.1=127.0.0.1:2888:2888,server.4=127.0.0.1:2891")).unwrap();
        assert_eq!(
            ops,
            vec![
                MemberOp::AddLearner { id: 4, raft_addr: "127.0.0.1:2891".into() },
                MemberOp::Promote { id: 4 },
                MemberOp::Remove { id: 2 },
                MemberOp::Remove { id: 3 },
            ]
        );
    }

    #[test]
    fn bad_reconfigs_are_refused() {
        for (j, l, n) in [
            (Some("server.x=h:1"), None, None),
            (Some("server.4=h"), None, None),
            (Some("server.4=h:1:2:boss"), None, None),
            (None, Some("9"), None),
            (Some("server.2=127.0.0.1:2889"), Some("2"), None),
            (Some("server.2=10.0.0.1:2889"), None, None),
            (Some("server.4=h:1"), None, Some("server.1=h:1")),
        ] {
            assert!(plan_reconfig(&three(), j, l, n).is_err(), "{j:?} {l:?} {n:?}");
        }
    }
}
