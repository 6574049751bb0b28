//! Tokens and the cluster view.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use super::Api;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use crate::machine::command::{Op, Scope};
use crate::machine::{Reply, WriteResult};
use crate::proto::error::ErrorCode;
use crate::raft::network::MemberOp;
use crate::tree::Token;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Of `read`, `write`, `plugin`, `admin`.
    pub scopes: Vec<String>,
    pub created_ms: i64,
}

fn scope_name(s: Scope) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(|s| scope_name(*s)).collect(),
            created_ms: t.created_ms,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub token: TokenView,
    /// Every scope the token's scopes grant (`admin` grants all of them).
    pub allows: Vec<String>,
    /// This node's id.
    pub node_id: u64,
}

/// The calling token and what it allows. Any valid token may ask; the
/// console logs in with it and offers only what the token allows.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "admin", security(("token" = [])),
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(api): State<Api>, who: Principal) -> Json<Whoami> {
    let allows = [Scope::Read, Scope::Write, Scope::Plugin, Scope::Admin]
        .into_iter()
        .filter(|s| who.token.allows(*s))
        .map(scope_name)
        .collect();
    Json(Whoami { token: TokenView::from(&who.token), allows, node_id: api.shared.node })
}

/// Lists tokens (never their secrets). Needs `admin`.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin", security(("token" = [])),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(State(api): State<Api>, who: Principal) -> Result<Json<Vec<TokenView>>, ApiError> {
    who.require(Scope::Admin)?;
    let tokens = api
        .read(|v| {
            use redb::ReadableTable;
            let mut out = Vec::new();
            for item in v.tokens()?.iter()? {
                let (_, bytes) = item?;
                let t: Token = postcard::from_bytes(bytes.value())
                    .map_err(|err| crate::tree::StoreError::Corrupt { what: "token", err })?;
                out.push(t);
            }
            Ok(out)
        })
        .await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewToken {
    pub name: String,
    /// Of `read`, `write`, `plugin`, `admin`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The secret. It is shown this once; only its hash is stored.
    pub token: String,
}

/// Creates a token with the given scopes. Needs `admin`.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin", request_body = NewToken, security(("token" = [])),
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    who.require(Scope::Admin)?;
    if b.name.is_empty() || b.name.len() > 128 || b.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name: 1 to 128 printable characters"));
    }
    let scopes: Vec<Scope> = b
        .scopes
        .iter()
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.clone()))
                .map_err(|_| ApiError::bad_request(format!("scope {s:?}: use read, write, plugin or admin")))
        })
        .collect::<Result<_, _>>()?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request("give at least one scope"));
    }
    let (secret, hash) = crate::server::new_token();
    debug_assert_eq!(<[u8; 32]>::from(Sha256::digest(secret.as_bytes())), hash);
    let op = Op::CreateToken { hash, name: b.name.clone(), scopes: scopes.clone(), identity: who.identity() };
    match api.propose(op).await?.1 {
        Reply::Write(Ok(WriteResult::Token { id })) => Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                id,
                name: b.name,
                scopes: scopes.into_iter().map(scope_name).collect(),
                token: secret,
            }),
        )),
        Reply::Write(Err(e)) => Err(ApiError::zk(e, "token")),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Revokes a token: from its commit on, requests with it are refused, and
/// its writes still in flight are refused at apply. Needs `admin`.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin", params(("id" = String, Path, description = "token id")),
    security(("token" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn revoke_token(
    State(api): State<Api>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Scope::Admin)?;
    match api.propose(Op::RevokeToken { id: id.clone(), identity: who.identity() }).await?.1 {
        Reply::Write(Ok(_)) => Ok(StatusCode::NO_CONTENT),
        Reply::Write(Err(ErrorCode::NoNode)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no_token", format!("no token with id {id}")))
        }
        Reply::Write(Err(e)) => Err(ApiError::zk(e, &id)),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub id: u64,
    pub raft_addr: String,
    /// Its ZooKeeper client address, once it has published it.
    pub client_addr: Option<String>,
    /// Its admin HTTP address, once it has published it.
    pub http_addr: Option<String>,
    /// The Corral version it published at its last start.
    pub version: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    /// Last log index known replicated to it (from the leader only).
    pub matched_index: Option<u64>,
    /// How far it is behind the leader's log (from the leader only).
    pub lag: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// This node.
    pub node_id: u64,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// The running digest of the replicated state at `applied_index`:
    /// members that applied the same log show the same digest.
    pub digest: String,
    pub members: Vec<MemberView>,
}

/// This node's view of the cluster. Needs `read`.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "admin", security(("token" = [])),
    responses((status = 200, body = ClusterView), (status = 401, body = ErrorBody)))]
pub async fn cluster(State(api): State<Api>, who: Principal) -> Result<Json<ClusterView>, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(cluster_view(&api)))
}

fn cluster_view(api: &Api) -> ClusterView {
    let m = api.shared.raft.metrics().borrow_watched().clone();
    let meta = api.shared.state.meta();
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m.replication.as_ref().and_then(|r| r.get(id)).map(|l| l.as_ref().map_or(0, |l| l.index));
            let published = meta.members.get(id);
            MemberView {
                id: *id,
                raft_addr: node.raft_addr.clone(),
                client_addr: published.and_then(|p| p.client_addr.clone()),
                http_addr: published.and_then(|p| p.http_addr.clone()),
                version: published.and_then(|p| p.version.clone()),
                role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                matched_index: matched,
                lag: matched.map(|x| last.saturating_sub(x)),
            }
        })
        .collect();
    let state = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Learner => "learner",
        _ => "candidate",
    };
    ClusterView {
        node_id: api.shared.node,
        state: state.into(),
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: last,
        committed_index: m.local_committed.map_or(0, |l| l.index),
        applied_index: meta.applied_index,
        digest: format!("{:016x}", meta.digest.0),
        members,
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddMember {
    /// The new member's node id, 1..=254.
    pub id: u64,
    /// Where the other members reach it (its `raft_addr`).
    pub raft_addr: String,
}

/// What a membership change did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberChange {
    /// The log index of the membership entry.
    pub index: u64,
    pub cluster: ClusterView,
}

async fn change(api: &Api, who: &Principal, op: MemberOp) -> Result<Json<MemberChange>, ApiError> {
    who.require(Scope::Admin)?;
    let index = crate::server::peers::change_members(&api.shared, op)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "membership_change_failed", e))?;
    api.wait_applied(index).await?;
    Ok(Json(MemberChange { index, cluster: cluster_view(api) }))
}

/// Adds a learner: a member that replicates the log and serves reads but
/// does not vote (a ZooKeeper observer). Returns once it has caught up.
/// Needs `admin`.
#[utoipa::path(post, path = "/api/v1/cluster/members", tag = "admin", security(("token" = [])),
    request_body = AddMember,
    responses((status = 200, body = MemberChange), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn add_member(
    State(api): State<Api>,
    who: Principal,
    Json(req): Json<AddMember>,
) -> Result<Json<MemberChange>, ApiError> {
    if !(1..=254).contains(&req.id) || !req.raft_addr.contains(':') {
        return Err(ApiError::bad_request("need an id in 1..=254 and a raft_addr host:port"));
    }
    change(&api, &who, MemberOp::AddLearner { id: req.id, raft_addr: req.raft_addr }).await
}

/// Makes a learner a voter. Needs `admin`.
#[utoipa::path(put, path = "/api/v1/cluster/members/{id}/voter", tag = "admin", security(("token" = [])),
    params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = MemberChange), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn promote_member(
    State(api): State<Api>,
    who: Principal,
    Path(id): Path<u64>,
) -> Result<Json<MemberChange>, ApiError> {
    change(&api, &who, MemberOp::Promote { id }).await
}

/// Removes a voter or a learner. Needs `admin`.
#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", tag = "admin", security(("token" = [])),
    params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = MemberChange), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn remove_member(
    State(api): State<Api>,
    who: Principal,
    Path(id): Path<u64>,
) -> Result<Json<MemberChange>, ApiError> {
    change(&api, &who, MemberOp::Remove { id }).await
}
