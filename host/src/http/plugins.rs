//! Plugins over the admin API: deploy, list, inspect, roll back, remove,
//! and call.
//!
//! A deploy is checked here first (compiled and linked against its world,
//! on this node, off the async workers); code that fails the check is
//! refused before anything reaches the log. Then the code goes through the
//! log in chunks, and one `PluginDeploy` entry activates it on every member
//! at the same index.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use crate::machine::command::{Deploy, EngineAction, Op, Scope};
use crate::machine::plugins::{self, MAX_CHUNK_BYTES, MAX_PLUGIN_BYTES, PluginRecord, QueryError};
use crate::machine::{Reply, WriteResult};
use crate::plugin::{CallError, Kind, Limits, hex};
use crate::proto::error::ErrorCode;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub sha256: String,
    pub size: u64,
    /// The zxid of the entry that deployed it.
    pub deployed_zxid: u64,
    pub imports: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    /// `validator`, `trigger`, `recipe` or `query`.
    pub kind: String,
    /// The active version's SHA-256.
    pub active: String,
    /// Kept versions, oldest first.
    pub versions: Vec<VersionView>,
    pub bindings: Vec<String>,
    pub fuel_limit: u64,
    pub memory_limit_bytes: u64,
    pub host_call_limit: u32,
    pub read_limit_bytes: u64,
    pub write_limit_bytes: u64,
    pub output_limit_bytes: u64,
    /// Consecutive traps that disable the plugin (0: never).
    pub breaker: u32,
    pub consecutive_traps: u32,
    pub disabled: bool,
    pub calls: u64,
    pub traps: u64,
    /// Fuel used by all its calls: equal on every member.
    pub fuel_used: u64,
}

fn kind_name(k: Kind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<&PluginRecord> for PluginView {
    fn from(r: &PluginRecord) -> Self {
        PluginView {
            name: r.name.clone(),
            kind: kind_name(r.kind),
            active: hex(&r.active_version().sha256),
            versions: r
                .versions
                .iter()
                .map(|v| VersionView {
                    sha256: hex(&v.sha256),
                    size: v.size,
                    deployed_zxid: v.index,
                    imports: v.imports.clone(),
                })
                .collect(),
            bindings: r.bindings.clone(),
            fuel_limit: r.limits.fuel,
            memory_limit_bytes: r.limits.memory_bytes,
            host_call_limit: r.limits.host_calls,
            read_limit_bytes: r.limits.read_bytes,
            write_limit_bytes: r.limits.write_bytes,
            output_limit_bytes: r.limits.output_bytes,
            breaker: r.breaker,
            consecutive_traps: r.consecutive_traps,
            disabled: r.disabled,
            calls: r.calls,
            traps: r.traps,
            fuel_used: r.fuel,
        }
    }
}

async fn records(api: &Api) -> Result<Vec<PluginRecord>, ApiError> {
    api.read(|v| match v.txn_table(crate::tree::PLUGINS) {
        Some(t) => plugins::all(&t?),
        None => Ok(Vec::new()),
    })
    .await
}

/// One plugin's record as this member has applied it, if any.
async fn find(api: &Api, name: &str) -> Result<Option<PluginRecord>, ApiError> {
    let name = name.to_owned();
    api.read(move |v| match v.txn_table(crate::tree::PLUGINS) {
        Some(t) => plugins::get(&t?, &name),
        None => Ok(None),
    })
    .await
}

async fn record(api: &Api, name: &str) -> Result<PluginRecord, ApiError> {
    find(api, name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_plugin", format!("no plugin named {name}")))
}

/// Lists the deployed plugins. Needs `read`.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", security(("token" = [])),
    responses((status = 200, body = Vec<PluginView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(api): State<Api>, who: Principal) -> Result<Json<Vec<PluginView>>, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(records(&api).await?.iter().map(PluginView::from).collect()))
}

/// One plugin: versions, bindings, limits, breaker and counters. Needs
/// `read`.
#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path)),
    security(("token" = [])),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn info(
    State(api): State<Api>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(PluginView::from(&record(&api, &name).await?)))
}

/// How to deploy: the body is the component's bytes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployParams {
    /// `validator`, `trigger`, `recipe` or `query`; by default, guessed from
    /// the component's exports.
    pub kind: Option<String>,
    /// Comma-separated paths a validator or trigger watches (each with its
    /// subtree).
    pub bind: Option<String>,
    pub fuel: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub host_calls: Option<u32>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
    /// Consecutive traps that disable it; default 10, 0 for never.
    pub breaker: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Activated {
    pub plugin: PluginView,
    /// The zxid of the activating entry: calls before it ran the previous
    /// version, calls after it run this one.
    pub zxid: i64,
    /// Milliseconds from the request to the activation applied here.
    pub took_ms: u64,
}

fn plugin_reply(r: Reply, name: &str) -> Result<(), ApiError> {
    match r {
        Reply::Write(Ok(WriteResult::Plugin { .. })) => Ok(()),
        Reply::Write(Err(ErrorCode::NoNode)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no_plugin", format!("no plugin named {name}")))
        }
        Reply::Write(Err(e)) => Err(ApiError::zk(e, name)),
        Reply::Rejected { message, .. } => Err(ApiError::bad_request(message)),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// Deploys a plugin, or a new version of one: checks the code here,
/// uploads it through the log in chunks, and activates it on every member
/// at one log index. Needs `plugin`.
#[utoipa::path(put, path = "/api/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path), DeployParams),
    request_body(content = Vec<u8>, content_type = "application/wasm"), security(("token" = [])),
    responses((status = 200, body = Activated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn deploy(
    State(api): State<Api>,
    who: Principal,
    Path(name): Path<String>,
    Query(p): Query<DeployParams>,
    body: Body,
) -> Result<Json<Activated>, ApiError> {
    who.require(Scope::Plugin)?;
    let started = std::time::Instant::now();
    // Components may be larger than other requests: this route reads the
    // body under its own limit, the largest plugin.
    let body = axum::body::to_bytes(body, MAX_PLUGIN_BYTES as usize)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the component: {e} (at most {MAX_PLUGIN_BYTES} bytes)")))?;
    if !plugins::valid_name(&name) {
        return Err(ApiError::bad_request("plugin names are 1 to 64 letters, digits, - and _"));
    }
    if body.is_empty() || body.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(ApiError::bad_request(format!(
            "the body must be a component of 1 byte to {MAX_PLUGIN_BYTES} bytes"
        )));
    }
    let kind = match &p.kind {
        Some(k) => serde_json::from_value(serde_json::Value::String(k.clone()))
            .map_err(|_| ApiError::bad_request(format!("kind {k:?}: use validator, trigger, recipe or query")))?,
        None => plugins::sniff_kind(&body)
            .ok_or_else(|| ApiError::bad_request("give ?kind=: the component exports no Corral plugin interface"))?,
    };
    let d = Limits::default();
    let limits = Limits {
        fuel: p.fuel.unwrap_or(d.fuel),
        memory_bytes: p.memory_bytes.unwrap_or(d.memory_bytes),
        host_calls: p.host_calls.unwrap_or(d.host_calls),
        read_bytes: p.read_bytes.unwrap_or(d.read_bytes),
        write_bytes: p.write_bytes.unwrap_or(d.write_bytes),
        output_bytes: p.output_bytes.unwrap_or(d.output_bytes),
    };
    let bindings: Vec<String> =
        p.bind.as_deref().unwrap_or("").split(',').filter(|b| !b.is_empty()).map(str::to_owned).collect();
    let env = api.shared.state.plugins().ok_or_else(|| ApiError::unavailable("this node has no plugin runtime"))?;
    let runtime = env.runtime.clone();
    let code = body.clone();
    let imports = tokio::task::spawn_blocking(move || runtime.check(kind, &code))
        .await
        .map_err(|e| ApiError::internal(format!("check task: {e}")))?
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
    let sha256: [u8; 32] = Sha256::digest(&body).into();
    // The upload id starts with the time, so that the machine can drop
    // uploads whose deploy never came.
    let upload = format!("{:016x}-{:016x}", crate::server::now_ms(), rand::random::<u64>());
    let identity = who.identity();
    let total = body.len() as u64;
    for (i, chunk) in body.chunks(MAX_CHUNK_BYTES).enumerate() {
        let op = Op::PluginChunk {
            upload: upload.clone(),
            offset: (i * MAX_CHUNK_BYTES) as u64,
            total,
            data: chunk.to_vec(),
            identity: identity.clone(),
        };
        match api.propose(op).await?.1 {
            Reply::Write(Ok(_)) => {}
            Reply::Write(Err(e)) => return Err(ApiError::zk(e, &name)),
            other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
        }
    }
    let deploy = Deploy {
        name: name.clone(),
        kind,
        upload,
        size: total,
        sha256,
        bindings,
        limits,
        breaker: p.breaker.unwrap_or(10),
        fingerprint: env.runtime.fingerprint().to_owned(),
        imports,
        identity,
    };
    let (zxid, reply) = api.propose(Op::PluginDeploy(Box::new(deploy))).await?;
    plugin_reply(reply, &name)?;
    let plugin = PluginView::from(&record(&api, &name).await?);
    Ok(Json(Activated { plugin, zxid, took_ms: started.elapsed().as_millis() as u64 }))
}

/// Makes the previous kept version active again, at one log index. Needs
/// `plugin`.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/rollback", tag = "plugins", params(("name" = String, Path)),
    security(("token" = [])),
    responses((status = 200, body = Activated), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rollback(
    State(api): State<Api>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Json<Activated>, ApiError> {
    who.require(Scope::Plugin)?;
    let started = std::time::Instant::now();
    let (zxid, reply) = api.propose(Op::PluginRollback { name: name.clone(), identity: who.identity() }).await?;
    plugin_reply(reply, &name)?;
    let plugin = PluginView::from(&record(&api, &name).await?);
    Ok(Json(Activated { plugin, zxid, took_ms: started.elapsed().as_millis() as u64 }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Enable {
    /// `false` disables the plugin as its breaker would: recipes and
    /// queries fail, validators veto every write under their paths,
    /// triggers refuse. `true` enables it and clears its trap count.
    pub enabled: bool,
}

/// Disables or enables a plugin, at one log index on every member. Needs
/// `plugin`.
#[utoipa::path(put, path = "/api/v1/plugins/{name}/enabled", tag = "plugins", params(("name" = String, Path)),
    request_body = Enable, security(("token" = [])),
    responses((status = 200, body = PluginView), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn enable(
    State(api): State<Api>,
    who: Principal,
    Path(name): Path<String>,
    Json(b): Json<Enable>,
) -> Result<Json<PluginView>, ApiError> {
    who.require(Scope::Plugin)?;
    let op = Op::PluginEnable { name: name.clone(), enabled: b.enabled, identity: who.identity() };
    plugin_reply(api.propose(op).await?.1, &name)?;
    Ok(Json(PluginView::from(&record(&api, &name).await?)))
}

/// Removes a plugin and its bindings. Needs `plugin`.
#[utoipa::path(delete, path = "/api/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path)),
    security(("token" = [])), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(State(api): State<Api>, who: Principal, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    who.require(Scope::Plugin)?;
    let reply = api.propose(Op::PluginRemove { name: name.clone(), identity: who.identity() }).await?.1;
    plugin_reply(reply, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// One member's build, as it published it at its last start.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberBuildView {
    pub id: u64,
    /// Corral's version.
    pub version: Option<String>,
    /// Its wasm engine fingerprint (empty: it has no plugin runtime).
    pub engine: Option<String>,
}

/// The cluster's wasm engine, and where an engine upgrade stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EngineView {
    /// The cluster's engine fingerprint: fixed by the first deploy, changed
    /// only by adoption. A member with another must not run plugins.
    pub cluster: Option<String>,
    /// This member's fingerprint.
    pub local: Option<String>,
    /// While plugins are paused: the zxid of the pause.
    pub paused_zxid: Option<u64>,
    pub members: Vec<MemberBuildView>,
    /// What `adopt` would adopt: the fingerprint every member published, if
    /// they all agree.
    pub adoptable: Option<String>,
}

fn engine_view(api: &Api) -> EngineView {
    let meta = api.shared.state.meta();
    let members: Vec<MemberBuildView> = meta
        .members
        .iter()
        .map(|(id, m)| MemberBuildView { id: *id, version: m.version.clone(), engine: m.engine.clone() })
        .collect();
    let first = members.first().and_then(|m| m.engine.clone()).filter(|e| !e.is_empty());
    let adoptable = first.filter(|f| members.iter().all(|m| m.engine.as_ref() == Some(f)));
    EngineView {
        cluster: meta.plugin_fingerprint.clone(),
        local: api.shared.state.plugins().map(|p| p.runtime.fingerprint().to_owned()),
        paused_zxid: meta.plugins_paused_at,
        members,
        adoptable,
    }
}

fn engine_reply(api: &Api, reply: Reply) -> Result<Json<EngineView>, ApiError> {
    match reply {
        Reply::Write(Ok(WriteResult::Checked)) => Ok(Json(engine_view(api))),
        Reply::Write(Err(e)) => Err(ApiError::zk(e, "")),
        Reply::Rejected { message, .. } => Err(ApiError::new(StatusCode::CONFLICT, "engine_mismatch", message)),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// The cluster's wasm engine fingerprint, each member's, and whether
/// plugins are paused for an engine upgrade. Needs `read`.
#[utoipa::path(get, path = "/api/v1/plugin-engine", tag = "plugins", security(("token" = [])),
    responses((status = 200, body = EngineView), (status = 401, body = ErrorBody)))]
pub async fn engine(State(api): State<Api>, who: Principal) -> Result<Json<EngineView>, ApiError> {
    who.require(Scope::Read)?;
    Ok(Json(engine_view(&api)))
}

/// Pauses plugins on every member, at one log index, before an upgrade
/// that changes the engine: from that entry on, recipe calls and queries
/// fail, writes that a validator or trigger watches are refused, triggers
/// on a session's end do not run, and deploys and rollbacks are refused.
/// Members can then run another Corral version one by one. Needs `plugin`.
#[utoipa::path(post, path = "/api/v1/plugin-engine/pause", tag = "plugins", security(("token" = [])),
    responses((status = 200, body = EngineView), (status = 403, body = ErrorBody)))]
pub async fn pause(State(api): State<Api>, who: Principal) -> Result<Json<EngineView>, ApiError> {
    who.require(Scope::Plugin)?;
    let op = Op::PluginEngine { action: EngineAction::Pause, identity: who.identity() };
    let reply = api.propose(op).await?.1;
    engine_reply(&api, reply)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Adopt {
    /// The fingerprint to adopt; by default, the one every member published.
    pub fingerprint: Option<String>,
}

/// Adopts the engine fingerprint every member now runs, and resumes
/// plugins: refused (409) unless every member published that fingerprint.
/// Needs `plugin`.
#[utoipa::path(post, path = "/api/v1/plugin-engine/adopt", tag = "plugins", request_body = Adopt,
    security(("token" = [])),
    responses((status = 200, body = EngineView), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn adopt(
    State(api): State<Api>,
    who: Principal,
    body: Option<Json<Adopt>>,
) -> Result<Json<EngineView>, ApiError> {
    who.require(Scope::Plugin)?;
    let view = engine_view(&api);
    let Some(fingerprint) = body.and_then(|b| b.0.fingerprint).or(view.adoptable) else {
        let members = serde_json::to_value(&view.members).unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "engine_mismatch",
            "the members do not all run one engine yet: upgrade the rest, and wait for each to publish its build",
        )
        .with_details(members));
    };
    let op = Op::PluginEngine { action: EngineAction::Adopt { fingerprint }, identity: who.identity() };
    let reply = api.propose(op).await?.1;
    engine_reply(&api, reply)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallParams {
    /// An admin API session (hex id) to run as: ephemerals the recipe
    /// creates belong to it.
    pub session: Option<String>,
}

/// Calls a recipe (through the log, needs `write`) or a query (on this
/// member's state, needs `read`). The body is the arguments; a success
/// answers the result bytes. A plugin error answers 422 with
/// `plugin_error` or `plugin_trap`; writes a validator or trigger refused
/// answer 400 `rejected`.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/call", tag = "plugins", params(("name" = String, Path), CallParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), security(("token" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 422, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn call(
    State(api): State<Api>,
    who: Principal,
    Path(name): Path<String>,
    Query(p): Query<CallParams>,
    args: Bytes,
) -> Result<Response, ApiError> {
    let session = match &p.session {
        Some(s) => Some(
            i64::from_str_radix(s.trim_start_matches("0x"), 16)
                .map_err(|_| ApiError::bad_request(format!("session {s:?}: a hex session id")))?,
        ),
        None => None,
    };
    // Only queries are answered here; for anything else the log's apply
    // decides (this member may not have applied the deploy yet).
    let local = find(&api, &name).await?.map(|r| r.kind);
    let zxid;
    let result = if local == Some(Kind::Query) {
        who.require(Scope::Read)?;
        let identity = who.identity();
        let (n, a, shared) = (name.clone(), args.to_vec(), api.shared.clone());
        let outcome = api
            .read(move |v| match plugins::query(v, shared.state.plugins(), session, &identity, &n, &a) {
                Ok(r) => Ok(Ok(r)),
                Err(QueryError::Store(e)) => Err(e),
                Err(e) => Ok(Err(e)),
            })
            .await?;
        zxid = api.shared.dispatch.applied() as i64;
        outcome.map_err(|e| ApiError::unavailable(e.to_string()))?
    } else {
        who.require(Scope::Write)?;
        let op = Op::Call { session, identity: who.identity(), plugin: name.clone(), args: args.to_vec() };
        let (at, reply) = api.propose(op).await?;
        zxid = at;
        match reply {
            Reply::Write(Ok(WriteResult::Called(r))) => r,
            Reply::Write(Err(ErrorCode::NoNode)) => {
                return Err(ApiError::new(StatusCode::NOT_FOUND, "no_plugin", format!("no plugin named {name}")));
            }
            Reply::Write(Err(e)) => return Err(ApiError::zk(e, &name)),
            Reply::Rejected { message, .. } => return Err(ApiError::new(StatusCode::BAD_REQUEST, "rejected", message)),
            other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
        }
    };
    match result {
        Ok(out) => {
            Ok(([("content-type", "application/octet-stream"), ("x-corral-zxid", &zxid.to_string())], out)
                .into_response())
        }
        Err(CallError::Domain(m)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_error", m)),
        Err(e @ CallError::Trap(_)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_trap", e.to_string()))
        }
    }
}
