//! Whole-subtree routes: `/api/v1/search`, `/api/v1/export`,
//! `/api/v1/import`.
//!
//! These are what a console or an operator's script needs beyond single
//! znodes: find nodes by path prefix, and copy a subtree out as JSON and back
//! in, under the same or another path. Every limit is configurable
//! (`http_search_max_visited`, `http_export_max_nodes`, the body limit), and
//! an export is complete or refused, never silently cut short.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::tree::{AclView, StatView, parse_acl, valid};
use crate::machine::acl;
use crate::machine::command::{Op, Scope, Write};
use crate::machine::{Reply, WriteResult};
use crate::proto::data::{Acl, perms};
use crate::proto::op;
use crate::proto::request::{CreateRequest, MultiOp};
use crate::tree::Node;

/// Most results one search returns.
const MAX_SEARCH_RESULTS: u32 = 1000;
/// Creates per log entry during an import: each batch is one atomic multi.
const IMPORT_BATCH_NODES: usize = 500;
/// Data bytes per import batch, well under the largest entry.
const IMPORT_BATCH_BYTES: usize = 512 << 10;

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// The subtree to search; default `/`.
    pub path: Option<String>,
    /// Match nodes whose full path starts with this text, e.g.
    /// `/services/pay` matches `/services/payments/i-1`. Default: `path`.
    pub prefix: Option<String>,
    /// Most results, 1..=1000; default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    pub path: String,
    pub stat: StatView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    /// Matches in pre-order: a parent before its children, siblings by name.
    pub matches: Vec<SearchHit>,
    /// More matches may exist: the result limit or the visit budget
    /// (`http_search_max_visited`) was reached.
    pub truncated: bool,
}

/// Finds nodes of a subtree by path prefix. Only branches that can match
/// are read; nodes under a parent the caller may not READ are not listed.
/// Needs `read`.
#[utoipa::path(get, path = "/api/v1/search", tag = "tree", params(SearchQuery), security(("token" = [])),
    responses((status = 200, body = SearchResult), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn search(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<SearchQuery>,
) -> Result<Json<SearchResult>, ApiError> {
    who.require(Scope::Read)?;
    let root = q.path.unwrap_or_else(|| "/".into());
    valid(&root)?;
    let prefix = q.prefix.unwrap_or_else(|| root.clone());
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_SEARCH_RESULTS).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be in 1..={MAX_SEARCH_RESULTS}")));
    }
    let budget = api.shared.config.http_search_max_visited as usize;
    let identity = who.identity();
    let r = root.clone();
    let found = api.read(move |v| v.search(&r, &prefix, &identity, limit as usize, budget)).await?;
    let (hits, truncated) = found.map_err(|e| ApiError::zk(e, &root))?;
    let matches = hits.into_iter().map(|(path, stat)| SearchHit { path, stat: stat.into() }).collect();
    Ok(Json(SearchResult { matches, truncated }))
}

/// One node of an export. `path` is relative to the export's root: `""` for
/// the root itself, `/a/b` for a descendant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportedNode {
    pub path: String,
    /// The data as text when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The data as base64 otherwise. Neither field: null data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// The node's ACL. An import without it gives the node the open ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<AclView>>,
    /// The exporter lacked ADMIN on a node with digest ids, so they are
    /// masked (`user:x`); an import refuses such a record rather than
    /// create a node nobody can authenticate against.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acl_masked: bool,
    /// `persistent`, `container` or `ttl`.
    #[serde(default = "persistent")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
}

impl ExportedNode {
    fn empty_root() -> ExportedNode {
        ExportedNode {
            path: String::new(),
            data: None,
            data_base64: None,
            acl: None,
            acl_masked: false,
            mode: persistent(),
            ttl_ms: None,
        }
    }
}

/// What a failed create in an import means, in words.
fn create_failure(code: i32) -> String {
    match code {
        -101 => "its parent does not exist".into(),
        -102 => "no CREATE permission on its parent".into(),
        -108 => "its parent is an ephemeral".into(),
        -110 => "it exists already".into(),
        -114 => "its ACL is invalid".into(),
        c => format!("ZooKeeper error {c}"),
    }
}

fn persistent() -> String {
    "persistent".into()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Export {
    /// The exported subtree's path.
    pub root: String,
    /// The zxid this member had applied when it read the subtree.
    pub zxid: u64,
    /// Parents before their children.
    pub nodes: Vec<ExportedNode>,
    /// Ephemeral nodes left out: they belong to a session, and an import
    /// cannot recreate that.
    pub skipped_ephemerals: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    pub path: String,
}

fn exported(root: &str, p: &str, n: Node, who: &crate::machine::command::Identity) -> ExportedNode {
    let rel = if root == "/" { p.to_owned() } else { p[root.len()..].to_owned() };
    let rel = if rel == "/" { String::new() } else { rel };
    let admin = acl::allowed(&n.acl, who, perms::ADMIN);
    let acl_masked = !admin && n.acl.iter().any(|a| a.id.scheme == "digest");
    let shown = if admin { n.acl.clone() } else { acl::masked(&n.acl) };
    let acl = Some(shown.iter().map(AclView::from).collect());
    let (mode, ttl_ms) = if n.is_container() {
        ("container", None)
    } else if let Some(ttl) = n.ttl_ms() {
        ("ttl", Some(ttl))
    } else {
        ("persistent", None)
    };
    let (data, data_base64) = match n.data {
        None => (None, None),
        Some(d) => match String::from_utf8(d) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(B64.encode(e.as_bytes()))),
        },
    };
    ExportedNode { path: rel, data, data_base64, acl, acl_masked, mode: mode.into(), ttl_ms }
}

/// Exports a subtree as JSON: every node's data, mode and ACL (digest ids
/// masked where the caller lacks ADMIN), parents first. Refused with 413
/// past `http_export_max_nodes` nodes or `http_export_max_bytes` of data,
/// and with 403 when any node denies READ. Needs `read`.
#[utoipa::path(get, path = "/api/v1/export", tag = "tree", params(ExportQuery), security(("token" = [])),
    responses((status = 200, body = Export), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn export(
    State(api): State<Api>,
    who: Principal,
    Query(q): Query<ExportQuery>,
) -> Result<Json<Export>, ApiError> {
    who.require(Scope::Read)?;
    valid(&q.path)?;
    let max_nodes = api.shared.config.http_export_max_nodes as usize;
    let max_bytes = api.shared.config.http_export_max_bytes as usize;
    let identity = who.identity();
    let root = q.path.clone();
    let (zxid, nodes) = api
        .read(move |v| {
            let zxid = v.meta()?.applied_index;
            Ok((zxid, v.subtree(&root, &identity, max_nodes, max_bytes)?))
        })
        .await?;
    let nodes = nodes.map_err(|e| ApiError::zk(e, &q.path))?.ok_or_else(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_nodes",
            format!(
                "{} has more than {max_nodes} nodes (http_export_max_nodes) or {max_bytes} bytes of data \
                 (http_export_max_bytes); export a smaller subtree",
                q.path
            ),
        )
    })?;
    let identity = who.identity();
    let mut out = Export { root: q.path.clone(), zxid, nodes: Vec::new(), skipped_ephemerals: Vec::new() };
    for (p, n) in nodes {
        // Ephemerals have no children, so skipping one skips nothing else.
        if n.session_owner().is_some() {
            out.skipped_ephemerals.push(p);
        } else {
            out.nodes.push(exported(&q.path, &p, n, &identity));
        }
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportBody {
    /// Where the export's root lands. It is created from the export's root
    /// record unless it exists already.
    pub path: String,
    /// Nodes as an export lists them: parents before their children.
    pub nodes: Vec<ExportedNode>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Imported {
    /// Znodes created.
    pub created: u64,
    /// The zxid of the last batch.
    pub zxid: i64,
}

/// The create that lands `n` under `dest`, or why the record is malformed.
pub fn create_op(dest: &str, n: &ExportedNode) -> Result<MultiOp, ApiError> {
    let p = if n.path.is_empty() {
        dest.to_owned()
    } else if dest == "/" {
        n.path.clone()
    } else {
        format!("{dest}{}", n.path)
    };
    valid(&p)?;
    let data = match (&n.data, &n.data_base64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request(format!("{p}: give data or data_base64, not both"))),
        (Some(t), None) => Some(t.as_bytes().to_vec()),
        (None, Some(b)) => Some(B64.decode(b).map_err(|e| ApiError::bad_request(format!("{p}: data_base64: {e}")))?),
        (None, None) => None,
    };
    if n.acl_masked {
        return Err(ApiError::bad_request(format!(
            "{p}: its ACL was exported without ADMIN, so its digest ids are masked; export with a token that has \
             ADMIN there, or drop the record's acl fields to give it the open ACL"
        )));
    }
    let acl = match &n.acl {
        Some(a) => parse_acl(a)?,
        None => Acl::open(),
    };
    let (flags, opcode, ttl) = match (n.mode.as_str(), n.ttl_ms) {
        ("persistent", None) => (0, op::CREATE2, None),
        ("container", None) => (4, op::CREATE_CONTAINER, None),
        ("ttl", Some(ttl)) => (5, op::CREATE_TTL, Some(ttl)),
        (mode, ttl) => {
            return Err(ApiError::bad_request(format!(
                "{p}: mode {mode:?} with ttl_ms {ttl:?}: use persistent, container, or ttl with ttl_ms"
            )));
        }
    };
    Ok(MultiOp::Create { opcode, req: CreateRequest { path: p, data, acl, flags, ttl } })
}

fn op_path(o: &MultiOp) -> &str {
    match o {
        MultiOp::Create { req, .. } => &req.path,
        MultiOp::Delete { path, .. } | MultiOp::SetData { path, .. } | MultiOp::Check { path, .. } => path,
    }
}

/// Imports an export under `path`, in atomic batches of up to 500 creates:
/// each batch commits whole or not at all, and the import stops at the
/// first batch that fails (a node that exists, a missing parent, an ACL),
/// saying how many nodes the batches before it created. Nodes that already
/// exist are never overwritten. Needs `write` and CREATE on each parent.
#[utoipa::path(post, path = "/api/v1/import", tag = "tree", request_body = ImportBody, security(("token" = [])),
    responses((status = 200, body = Imported), (status = 409, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn import(
    State(api): State<Api>,
    who: Principal,
    Json(b): Json<ImportBody>,
) -> Result<Json<Imported>, ApiError> {
    who.require(Scope::Write)?;
    valid(&b.path)?;
    let dest = b.path.clone();
    let exists = api.read(move |v| Ok(v.node(&dest)?.is_some())).await?;
    let mut ops = Vec::with_capacity(b.nodes.len() + 1);
    if !exists && !b.nodes.iter().any(|n| n.path.is_empty()) {
        // No root record: the destination is created empty.
        ops.push(create_op(&b.path, &ExportedNode::empty_root())?);
    }
    for n in &b.nodes {
        // The root record lands on an existing node: keep that node as it is.
        if n.path.is_empty() && exists {
            continue;
        }
        if !n.path.is_empty() && !n.path.starts_with('/') {
            return Err(ApiError::bad_request(format!("node path {:?}: relative paths start with '/'", n.path)));
        }
        ops.push(create_op(&b.path, n)?);
    }
    let mut created = 0u64;
    let mut zxid = 0;
    let mut rest = ops.as_slice();
    while !rest.is_empty() {
        let mut bytes = 0;
        let take = rest
            .iter()
            .take(IMPORT_BATCH_NODES)
            .take_while(|o| {
                bytes += match o {
                    MultiOp::Create { req, .. } => req.path.len() + req.data.as_ref().map_or(0, Vec::len),
                    _ => 0,
                };
                bytes <= IMPORT_BATCH_BYTES
            })
            .count()
            .max(1);
        let (batch, tail) = rest.split_at(take);
        let write = Write::Multi(batch.to_vec());
        let (z, reply) = api.propose(Op::Write { session: None, identity: who.identity(), write }).await?;
        match reply {
            Reply::Write(Ok(WriteResult::Multi(Ok(_)))) => {
                created += batch.len() as u64;
                zxid = z;
            }
            Reply::Write(Ok(WriteResult::Multi(Err(codes)))) => {
                // The failing op has its own code; the others say they were
                // rolled back (-2) or would have succeeded (0).
                let (at, code) =
                    codes.iter().enumerate().find(|(_, c)| !matches!(c, 0 | -2)).map_or((0, -2), |(i, c)| (i, *c));
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "import_stopped",
                    format!(
                        "cannot create {}: {}; {created} nodes were imported before it, and nothing of its batch",
                        op_path(&batch[at]),
                        create_failure(code)
                    ),
                )
                .with_details(
                    serde_json::json!({ "created": created, "failed_path": op_path(&batch[at]), "code": code }),
                ));
            }
            Reply::Rejected { message, .. } => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "rejected", message)
                    .with_details(serde_json::json!({ "created": created })));
            }
            Reply::Write(Err(e)) => return Err(ApiError::zk(e, &b.path)),
            other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
        }
        rest = tail;
    }
    Ok(Json(Imported { created, zxid }))
}
