//! Session routes and the change stream.
//!
//! Admin API clients open their own sessions, Consul-style: `POST
//! /api/v1/sessions` with a timeout, renewed by `PUT
//! /api/v1/sessions/{id}`, closed by `DELETE`. Ephemerals created with
//! `"session": id` belong to it and vanish when it expires, exactly like a
//! ZooKeeper client's.
//!
//! `GET /api/v1/events` streams committed changes under a subtree as
//! server-sent events. With `from_zxid` it first replays the history this
//! node still holds, and says so with a `gap` event where it does not.

use std::convert::Infallible;
use tokio::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use crate::machine::command::{Op, Scope};
use crate::machine::{Reply, acl};
use crate::proto::data::perms;
use crate::proto::error::ErrorCode;
use crate::proto::response::EventType;
use crate::server::dispatch::Change;
use crate::tree;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `0x…`
    pub id: String,
    pub timeout_ms: i32,
    /// `client` (a ZooKeeper connection) or `http` (an admin API session).
    pub kind: String,
    /// The member whose connection owns it.
    pub owner_node: u64,
    pub ephemerals: Vec<String>,
    /// Watches it holds on this node.
    pub watches: usize,
}

fn hex(id: i64) -> String {
    format!("0x{:x}", id as u64)
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|_| ApiError::bad_request(format!("session {s:?}: expected a hex id such as 0x100000000000003")))
}

/// Lists live sessions with their ephemerals. Needs `read`.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("token" = [])),
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = ErrorBody)))]
pub async fn list(State(api): State<Api>, who: Principal) -> Result<Json<Vec<SessionView>>, ApiError> {
    who.require(Scope::Read)?;
    let watches = api.shared.dispatch.watches_by_session();
    let sessions = api
        .read(|v| {
            let mut out = Vec::new();
            for (id, s) in v.all_sessions()? {
                out.push((id, s, v.ephemerals_of(id, "/")?));
            }
            Ok(out)
        })
        .await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|(id, s, ephemerals)| SessionView {
                id: hex(id),
                timeout_ms: s.timeout_ms,
                kind: if s.http { "http" } else { "client" }.into(),
                owner_node: s.owner.node,
                ephemerals,
                watches: watches.get(&id).copied().unwrap_or(0),
            })
            .collect(),
    ))
}

/// One ZooKeeper client connection to this member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    /// The client's address.
    pub peer: String,
    /// `0x…` of its session, or null before the handshake completes.
    pub session: Option<String>,
    /// Requests received and responses sent on it.
    pub received: u64,
    pub sent: u64,
}

/// This member's ZooKeeper client connections (what `cons` shows). Needs
/// `read`.
#[utoipa::path(get, path = "/api/v1/connections", tag = "sessions", security(("token" = [])),
    responses((status = 200, body = Vec<ConnectionView>), (status = 401, body = ErrorBody)))]
pub async fn connections(State(api): State<Api>, who: Principal) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    who.require(Scope::Read)?;
    let mut out = Vec::new();
    api.shared.dispatch.for_each_conn(|_, c| {
        let session = c.stats.session.load(Relaxed);
        out.push(ConnectionView {
            peer: c.peer.to_string(),
            session: (session != 0).then(|| hex(session)),
            received: c.stats.received.load(Relaxed),
            sent: c.stats.sent.load(Relaxed),
        });
    });
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenBody {
    /// Negotiated into the cluster's bounds, as for ZooKeeper clients.
    pub timeout_ms: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Opened {
    pub id: String,
    pub timeout_ms: i32,
}

/// Opens an admin API session. Renew it within its timeout, or it expires
/// with its ephemerals. Needs `write`.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = OpenBody, security(("token" = [])),
    responses((status = 201, body = Opened), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn open(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<OpenBody>,
) -> Result<(StatusCode, Json<Opened>), ApiError> {
    who.require(Scope::Write)?;
    match api.propose(Op::CreateSession { timeout_ms: b.timeout_ms, http: true }).await?.1 {
        Reply::Connected { session, timeout_ms, .. } => {
            Ok((StatusCode::CREATED, Json(Opened { id: hex(session), timeout_ms })))
        }
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Keeps an admin API session alive for another timeout. Needs `write`.
#[utoipa::path(put, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "hex session id")),
    security(("token" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn renew(State(api): State<Api>, who: Principal, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    who.require(Scope::Write)?;
    let sid = parse_id(&id)?;
    let session = api.read(move |v| tree::get_session(&v.sessions()?, sid)).await?;
    match session {
        Some(s) if s.http => {
            api.shared.dispatch.liveness.touch(sid, Instant::now());
            Ok(StatusCode::NO_CONTENT)
        }
        Some(_) => Err(ApiError::bad_request(format!("{id} is a ZooKeeper client's session; it renews itself"))),
        None => Err(ApiError::zk(ErrorCode::SessionExpired, &id)),
    }
}

/// Closes a session now; its ephemerals are deleted. Needs `write`.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "hex session id")),
    security(("token" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn close(State(api): State<Api>, who: Principal, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    who.require(Scope::Write)?;
    let sid = parse_id(&id)?;
    let session = api.read(move |v| tree::get_session(&v.sessions()?, sid)).await?;
    match session {
        Some(s) if s.http => match api.propose(Op::CloseSession { session: sid }).await?.1 {
            Reply::Closed => Ok(StatusCode::NO_CONTENT),
            Reply::Write(Err(e)) => Err(ApiError::zk(e, &id)),
            other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
        },
        Some(_) => Err(ApiError::bad_request(format!("{id} is a ZooKeeper client's session"))),
        None => Err(ApiError::zk(ErrorCode::SessionExpired, &id)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Only changes at or under this path; default `/`.
    pub path: Option<String>,
    /// Replay changes after this zxid first, as far as history reaches.
    pub from_zxid: Option<u64>,
}

/// One `change` event of the stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeView {
    pub zxid: u64,
    /// `created`, `deleted`, `data` or `children`.
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

fn kind_name(k: EventType) -> &'static str {
    match k {
        EventType::NodeCreated => "created",
        EventType::NodeDeleted => "deleted",
        EventType::NodeDataChanged => "data",
        EventType::NodeChildrenChanged => "children",
    }
}

fn under(root: &str, p: &str) -> bool {
    root == "/" || p == root || (p.starts_with(root) && p.as_bytes().get(root.len()) == Some(&b'/'))
}

fn change_event(zxid: u64, kind: EventType, path: String) -> Event {
    let body = ChangeView { zxid, kind: kind_name(kind).into(), path };
    Event::default().event("change").id(zxid.to_string()).json_data(body).expect("changes serialize")
}

/// Streams committed changes under a path as server-sent events: a `start`
/// event (JSON `{zxid}`: changes after it follow) unless `from_zxid` is
/// given, `change` events (JSON `{zxid, type, path}`), and a `gap` event
/// when history from `from_zxid` is no longer held or the reader fell
/// behind. Only changes of nodes the token may READ are sent. Needs
/// `read`.
#[utoipa::path(get, path = "/api/v1/events", tag = "sessions", params(EventsQuery), security(("token" = [])),
    responses((status = 200, description = "text/event-stream of change and gap events", content_type = "text/event-stream"),
              (status = 401, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn events(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    who.require(Scope::Read)?;
    let root = q.path.unwrap_or_else(|| "/".into());
    tree::path::validate(&root).map_err(|e| ApiError::bad_request(format!("path {root:?}: {e}")))?;
    // Subscribe before reading history, so that nothing falls between them.
    let mut live = api.shared.dispatch.subscribe();
    let mut backlog = Vec::new();
    let mut last = 0u64;
    if q.from_zxid.is_none() {
        // A fresh stream starts after what is applied now; the `start` event
        // says where, so that a reader that reconnects can resume from it.
        last = api.shared.dispatch.applied();
        let start = serde_json::json!({ "zxid": last });
        backlog.push(Event::default().event("start").json_data(start).expect("serializes"));
    }
    let identity = who.identity();
    if let Some(from) = q.from_zxid {
        let reader = identity.clone();
        let (history, oldest) = api
            .read(move |v| {
                let (mut history, oldest) = v.events_after(from)?;
                // History keeps no ACLs: a past change is shown to those who
                // may read its node now, or for a deleted node, list its
                // parent's children (which reveals no more than its name).
                for (_, evs) in history.iter_mut() {
                    let mut kept = Vec::with_capacity(evs.len());
                    for (kind, p) in evs.drain(..) {
                        let node = match v.node(&p)? {
                            Some(n) => Some(n),
                            None => v.node(tree::path::split(&p).map_or("/", |(parent, _)| parent))?,
                        };
                        if node.is_some_and(|n| acl::allowed(&n.acl, &reader, perms::READ)) {
                            kept.push((kind, p));
                        }
                    }
                    *evs = kept;
                }
                Ok((history, oldest))
            })
            .await?;
        let applied = api.shared.dispatch.applied();
        let held_from = oldest.unwrap_or(applied + 1);
        if from + 1 < held_from && from < applied {
            let gap =
                serde_json::json!({ "from_zxid": from, "oldest_held": held_from, "reason": "history no longer held" });
            backlog.push(Event::default().event("gap").json_data(gap).expect("serializes"));
        }
        for (zxid, evs) in history {
            for (kind, p) in evs.into_iter().filter(|(_, p)| under(&root, p)) {
                backlog.push(change_event(zxid, kind, p));
            }
            last = zxid;
        }
    }
    let stream = async_stream(backlog, move |tx| async move {
        loop {
            match live.recv().await {
                Ok(batch) => {
                    // Only changes of nodes this token may read (ZooKeeper's
                    // rule for watches, CVE-2024-23944).
                    let visible = |c: &&Change| acl::allowed(&c.acl, &identity, perms::READ);
                    for c in batch.iter().filter(|c| c.zxid > last && under(&root, &c.path)).filter(visible) {
                        if tx.send(change_event(c.zxid, c.kind, c.path.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let gap = serde_json::json!({ "reason": "reader fell behind", "batches_missed": n });
                    if tx.send(Event::default().event("gap").json_data(gap).expect("serializes")).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream that yields `first`, then whatever `produce` sends.
fn async_stream<F, Fut>(first: Vec<Event>, produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(produce(tx));
    let rest = tokio_stream_from(rx);
    futures::stream::iter(first.into_iter().map(Ok)).chain(rest)
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)))
}

use futures::StreamExt as _;
