//! Znode routes: `/api/v1/node`, `/api/v1/children`, `/api/v1/acl`.
//!
//! Paths travel in the `path` query parameter (or body field), so the root
//! and every valid znode path work without escaping rules. Data is returned
//! as base64, and also as text when it is valid UTF-8.

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use crate::machine::command::{Op, Scope, Write};
use crate::machine::{Reply, WriteResult};
use crate::proto::data::{Acl, Id, Stat, perms};
use crate::proto::error::ErrorCode;
use crate::proto::op;
use crate::proto::request::{CreateRequest, MultiOp};
use crate::tree::path;

/// A znode's stat. Session ids are 64-bit: `ephemeral_owner` is hex text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatView {
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    /// ms since the epoch
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    /// `0x…` of the owning session, or null.
    pub ephemeral_owner: Option<String>,
    pub data_length: i32,
    pub num_children: i32,
}

impl From<Stat> for StatView {
    fn from(s: Stat) -> Self {
        StatView {
            czxid: s.czxid,
            mzxid: s.mzxid,
            pzxid: s.pzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: (s.ephemeral_owner != 0).then(|| format!("0x{:x}", s.ephemeral_owner)),
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub path: String,
    /// The data as base64; null for null data (distinct from empty).
    pub data_base64: Option<String>,
    /// The data as text, when it is valid UTF-8.
    pub data_utf8: Option<String>,
    pub stat: StatView,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PathQuery {
    /// An absolute znode path.
    pub path: String,
}

/// One ACL entry. `perms` is a subset of `cdrwa` (create, delete, read,
/// write, admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AclView {
    pub perms: String,
    pub scheme: String,
    pub id: String,
}

const PERM_LETTERS: [(char, i32); 5] =
    [('c', perms::CREATE), ('d', perms::DELETE), ('r', perms::READ), ('w', perms::WRITE), ('a', perms::ADMIN)];

impl From<&Acl> for AclView {
    fn from(a: &Acl) -> Self {
        let perms = PERM_LETTERS.iter().filter(|(_, b)| a.perms & b != 0).map(|(c, _)| *c).collect();
        AclView { perms, scheme: a.id.scheme.clone(), id: a.id.id.clone() }
    }
}

pub(super) fn parse_acl(list: &[AclView]) -> Result<Vec<Acl>, ApiError> {
    list.iter()
        .map(|a| {
            let mut bits = 0;
            for ch in a.perms.chars() {
                let (_, b) = PERM_LETTERS
                    .iter()
                    .find(|(c, _)| *c == ch)
                    .ok_or_else(|| ApiError::bad_request(format!("ACL perms {:?}: use letters of cdrwa", a.perms)))?;
                bits |= b;
            }
            Ok(Acl { perms: bits, id: Id::new(&a.scheme, &a.id) })
        })
        .collect()
}

pub(super) fn valid(p: &str) -> Result<(), ApiError> {
    path::validate(p).map_err(|e| {
        ApiError::zk(ErrorCode::BadArguments, p).with_details(serde_json::json!({ "path": p, "reason": e.to_string() }))
    })
}

fn session_id(s: &Option<String>) -> Result<Option<i64>, ApiError> {
    s.as_deref()
        .map(|s| {
            u64::from_str_radix(s.trim_start_matches("0x"), 16).map(|v| v as i64).map_err(|_| {
                ApiError::bad_request(format!("session {s:?}: expected a hex id such as 0x100000000000003"))
            })
        })
        .transpose()
}

/// The written data: `data` (text) or `data_base64`, or neither for null.
fn body_data(text: &Option<String>, b64: &Option<String>) -> Result<Option<Vec<u8>>, ApiError> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give data or data_base64, not both")),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(b)) => B64.decode(b).map(Some).map_err(|e| ApiError::bad_request(format!("data_base64: {e}"))),
        (None, None) => Ok(None),
    }
}

fn node_view(p: String, data: Option<Vec<u8>>, stat: Stat) -> NodeView {
    let data_utf8 = data.as_ref().and_then(|d| String::from_utf8(d.clone()).ok());
    NodeView { path: p, data_base64: data.as_ref().map(|d| B64.encode(d)), data_utf8, stat: stat.into() }
}

/// Reads a znode's data and stat. Needs `read` and the node's READ ACL.
#[utoipa::path(get, path = "/api/v1/node", tag = "tree", params(PathQuery), security(("token" = [])),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn get_node(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<PathQuery>,
) -> Result<Json<NodeView>, ApiError> {
    who.require(Scope::Read)?;
    let identity = who.identity();
    let p = q.path.clone();
    let r = api.read(move |v| v.get_data(&p, &identity)).await?;
    let (data, stat) = r.map_err(|e| ApiError::zk(e, &q.path))?;
    Ok(Json(node_view(q.path, data, stat)))
}

/// How to create a znode.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
    Ttl,
    TtlSequential,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBody {
    pub path: String,
    /// Data as text.
    pub data: Option<String>,
    /// Data as base64 (instead of `data`). Neither: null data.
    pub data_base64: Option<String>,
    #[serde(default = "persistent")]
    #[schema(value_type = Option<Mode>)]
    pub mode: Mode,
    /// For `ttl` and `ttl_sequential`.
    pub ttl_ms: Option<i64>,
    /// Default: world:anyone:cdrwa.
    pub acl: Option<Vec<AclView>>,
    /// An admin API session (hex id) that owns an ephemeral.
    pub session: Option<String>,
}

fn persistent() -> Mode {
    Mode::Persistent
}

impl CreateBody {
    /// The write this body asks for, or why it is malformed. Apply checks
    /// the path, the ACL and the mode again, as for any client.
    pub fn write(&self) -> Result<Write, ApiError> {
        let data = body_data(&self.data, &self.data_base64)?;
        let acl = match &self.acl {
            Some(a) => parse_acl(a)?,
            None => Acl::open(),
        };
        let (flags, opcode) = match self.mode {
            Mode::Persistent => (0, op::CREATE2),
            Mode::Ephemeral => (1, op::CREATE2),
            Mode::PersistentSequential => (2, op::CREATE2),
            Mode::EphemeralSequential => (3, op::CREATE2),
            Mode::Container => (4, op::CREATE_CONTAINER),
            Mode::Ttl => (5, op::CREATE_TTL),
            Mode::TtlSequential => (6, op::CREATE_TTL),
        };
        let ttl = matches!(self.mode, Mode::Ttl | Mode::TtlSequential).then_some(self.ttl_ms.unwrap_or(0));
        Ok(Write::Create { opcode, req: CreateRequest { path: self.path.clone(), data, acl, flags, ttl } })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// The created path (with its sequence suffix).
    pub path: String,
    pub stat: StatView,
    pub zxid: i64,
}

fn write_result(r: Reply, p: &str) -> Result<WriteResult, ApiError> {
    match r {
        Reply::Write(Ok(w)) => Ok(w),
        Reply::Write(Err(e)) => Err(ApiError::zk(e, p)),
        Reply::Rejected { message, .. } => Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "rejected", message)),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Creates a znode in any mode. Needs `write` and CREATE on the parent.
#[utoipa::path(post, path = "/api/v1/node", tag = "tree", request_body = CreateBody, security(("token" = [])),
    responses((status = 201, body = Created), (status = 409, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_node(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<CreateBody>,
) -> Result<(axum::http::StatusCode, Json<Created>), ApiError> {
    who.require(Scope::Write)?;
    let op = Op::Write { session: session_id(&b.session)?, identity: who.identity(), write: b.write()? };
    let (zxid, reply) = api.propose(op).await?;
    match write_result(reply, &b.path)? {
        WriteResult::Created { path, stat } => {
            Ok((axum::http::StatusCode::CREATED, Json(Created { path, stat: stat.into(), zxid })))
        }
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetBody {
    pub path: String,
    pub data: Option<String>,
    pub data_base64: Option<String>,
    /// The expected version; absent or -1 means any.
    pub version: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Updated {
    pub stat: StatView,
    pub zxid: i64,
}

/// Sets a znode's data, checking the version. Needs `write` and WRITE.
#[utoipa::path(put, path = "/api/v1/node", tag = "tree", request_body = SetBody, security(("token" = [])),
    responses((status = 200, body = Updated), (status = 409, body = ErrorBody, description = "bad_version"),
              (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_node(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<SetBody>,
) -> Result<Json<Updated>, ApiError> {
    who.require(Scope::Write)?;
    let data = body_data(&b.data, &b.data_base64)?;
    let write = Write::SetData { path: b.path.clone(), data, version: b.version.unwrap_or(-1) };
    let (zxid, reply) = api.propose(Op::Write { session: None, identity: who.identity(), write }).await?;
    match write_result(reply, &b.path)? {
        WriteResult::SetData { stat } => Ok(Json(Updated { stat: stat.into(), zxid })),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeleteQuery {
    pub path: String,
    /// The expected version of `path`; absent or -1 means any.
    pub version: Option<i32>,
    /// Delete the whole subtree, leaves first, in batches (not atomic).
    pub recursive: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Znodes deleted.
    pub deleted: u64,
}

/// Deletes a znode, or a whole subtree with `recursive=true`. Needs `write`
/// and DELETE on each parent.
#[utoipa::path(delete, path = "/api/v1/node", tag = "tree", params(DeleteQuery), security(("token" = [])),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn delete_node(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    who.require(Scope::Write)?;
    valid(&q.path)?;
    let version = q.version.unwrap_or(-1);
    let mut deleted = 0;
    if q.recursive.unwrap_or(false) {
        deleted += delete_descendants(&api, &who, &q.path).await?;
    }
    let write = Write::Delete { path: q.path.clone(), version };
    let (_, reply) = api.propose(Op::Write { session: None, identity: who.identity(), write }).await?;
    write_result(reply, &q.path)?;
    Ok(Json(Deleted { deleted: deleted + 1 }))
}

/// Deletes everything under `root`, leaves first, up to 500 deletes per
/// entry. Nodes created meanwhile are found by the next pass.
async fn delete_descendants(api: &Api, who: &Principal, root: &str) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let r = root.to_owned();
        let identity = who.identity();
        let order = api.read(move |v| v.subtree_post_order(&r, &identity, 10_000)).await?;
        let order = order.map_err(|e| ApiError::zk(e, root))?;
        let below: Vec<String> = order.into_iter().filter(|p| p != root).collect();
        if below.is_empty() {
            return Ok(total);
        }
        for chunk in below.chunks(500) {
            let ops = chunk.iter().map(|p| MultiOp::Delete { path: p.clone(), version: -1 }).collect();
            let (_, reply) =
                api.propose(Op::Write { session: None, identity: who.identity(), write: Write::Multi(ops) }).await?;
            match write_result(reply, root)? {
                WriteResult::Multi(Ok(_)) => total += chunk.len() as u64,
                // Someone changed the subtree meanwhile: delete one by one.
                WriteResult::Multi(Err(_)) => {
                    for p in chunk {
                        let write = Write::Delete { path: p.clone(), version: -1 };
                        let (_, reply) =
                            api.propose(Op::Write { session: None, identity: who.identity(), write }).await?;
                        match reply {
                            Reply::Write(Err(ErrorCode::NoNode | ErrorCode::NotEmpty)) => {}
                            other => {
                                write_result(other, p)?;
                                total += 1;
                            }
                        }
                    }
                }
                other => return Err(ApiError::internal(format!("unexpected result {other:?}"))),
            }
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ChildrenQuery {
    pub path: String,
    /// Start after this child name (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size, 1..=10000; default 100.
    pub limit: Option<u32>,
    /// Include each child's stat.
    pub stat: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Child {
    pub name: String,
    pub stat: Option<StatView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChildrenPage {
    pub path: String,
    /// Children in byte order of their names.
    pub children: Vec<Child>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
    /// All children of the node.
    pub total: i32,
}

/// Lists a znode's children a page at a time, with stats if asked. Needs
/// `read` and READ on the node.
#[utoipa::path(get, path = "/api/v1/children", tag = "tree", params(ChildrenQuery), security(("token" = [])),
    responses((status = 200, body = ChildrenPage), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn children(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<ChildrenQuery>,
) -> Result<Json<ChildrenPage>, ApiError> {
    who.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be in 1..=10000"));
    }
    let identity = who.identity();
    let (p, after, with_stat) = (q.path.clone(), q.after.clone(), q.stat.unwrap_or(false));
    let page = api.read(move |v| v.children_page(&p, &identity, after.as_deref(), limit as usize)).await?;
    let (total, entries, more) = page.map_err(|e| ApiError::zk(e, &q.path))?;
    let next = if more { entries.last().map(|(n, _)| n.clone()) } else { None };
    let children =
        entries.into_iter().map(|(name, stat)| Child { name, stat: with_stat.then(|| stat.into()) }).collect();
    Ok(Json(ChildrenPage { path: q.path, children, next, total }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AclPage {
    pub path: String,
    pub acl: Vec<AclView>,
    pub stat: StatView,
}

/// Reads a znode's ACL. Needs `read` and READ or ADMIN on the node; digest
/// hashes are masked without ADMIN.
#[utoipa::path(get, path = "/api/v1/acl", tag = "tree", params(PathQuery), security(("token" = [])),
    responses((status = 200, body = AclPage), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn get_acl(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<PathQuery>,
) -> Result<Json<AclPage>, ApiError> {
    who.require(Scope::Read)?;
    let identity = who.identity();
    let p = q.path.clone();
    let r = api.read(move |v| v.get_acl(&p, &identity)).await?;
    let (acl, stat) = r.map_err(|e| ApiError::zk(e, &q.path))?;
    Ok(Json(AclPage { path: q.path, acl: acl.iter().map(AclView::from).collect(), stat: stat.into() }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AclBody {
    pub path: String,
    pub acl: Vec<AclView>,
    /// The expected ACL version (aversion); absent or -1 means any.
    pub version: Option<i32>,
}

/// Replaces a znode's ACL. Needs `write` and ADMIN on the node.
#[utoipa::path(put, path = "/api/v1/acl", tag = "tree", request_body = AclBody, security(("token" = [])),
    responses((status = 200, body = Updated), (status = 409, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_acl(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<AclBody>,
) -> Result<Json<Updated>, ApiError> {
    who.require(Scope::Write)?;
    let write = Write::SetAcl { path: b.path.clone(), acl: parse_acl(&b.acl)?, version: b.version.unwrap_or(-1) };
    let (zxid, reply) = api.propose(Op::Write { session: None, identity: who.identity(), write }).await?;
    match write_result(reply, &b.path)? {
        WriteResult::SetAcl { stat } => Ok(Json(Updated { stat: stat.into(), zxid })),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}
