//! The HTTP side: the admin API under `/api/v1`, its OpenAPI document and
//! Swagger UI, health and Prometheus metrics.
//!
//! Every route but health needs a token (`Authorization: Bearer <token>`),
//! whose scope must grant the operation ([`auth`]). Every write goes through
//! the same path as the ZooKeeper port: a command proposed to Raft, the same
//! apply with the same ACL checks, and the reply taken from the dispatcher
//! when this node applies the entry. The token id travels in the entry, and
//! apply checks the token still exists, so a revocation is ordered with the
//! writes.
//!
//! - [`tree`]: znodes: get, children (paged), create, set, delete
//!   (recursive too), ACLs;
//! - [`subtree`]: search by path prefix, export and import as JSON;
//! - [`sessions`]: list sessions and connections; admin API sessions
//!   (open, renew, close); the server-sent event stream of changes;
//! - [`admin`]: who am I, tokens and cluster state;
//! - [`plugins`]: deploy, inspect, roll back, enable, remove, call;
//! - [`console`]: the web console's files, served at `/`.

pub mod admin;
pub mod auth;
pub mod console;
pub mod error;
pub mod plugins;
pub mod sessions;
pub mod subtree;
pub mod tree;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::async_runtime::WatchReceiver;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use self::auth::Principal;
use self::error::ApiError;
use crate::machine::command::{Command, Op, Origin, Scope};
use crate::machine::{ReadView, Reply};
use crate::server::Shared;
use crate::tree::StoreError;

/// What every handler gets.
#[derive(Clone)]
pub struct Api {
    pub shared: Arc<Shared>,
    prometheus: PrometheusHandle,
}

impl Api {
    /// Runs `f` on a consistent read of the state, off the async workers
    /// (in place in the deterministic simulation: `raft::runtime::blocking`).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadView) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.shared.state.clone();
        crate::raft::runtime::blocking(move || {
            let (_gate, view) = state.read()?;
            f(&view)
        })
        .await
        .map_err(|e| ApiError::internal(format!("read task: {e}")))?
        .map_err(ApiError::from)
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.shared.dispatch.applied() < index {
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::unavailable(format!("entry {index} is committed but not applied here yet")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Proposes `op` and waits until this node has applied it: the reply
    /// comes from the apply, as for a ZooKeeper client.
    pub async fn propose(&self, op: Op) -> Result<(i64, Reply), ApiError> {
        let s = &self.shared;
        let id = s.next_conn_id();
        let reply = s.dispatch.wait_for(id);
        let cmd = Command { time_ms: s.now_ms(), origin: Some(Origin { node: s.node, conn: id, xid: 0 }), op };
        let ack = match crate::server::peers::submit(s, cmd).await {
            Ok(ack) => ack,
            Err(e) => {
                s.dispatch.forget(id);
                return Err(ApiError::unavailable(format!("the write cannot be proposed: {e}")));
            }
        };
        let mut reply = reply;
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                biased;
                r = &mut reply => r.ok(),
                // Committed: this node's apply will send the reply.
                committed = ack => if committed { (&mut reply).await.ok() } else { None },
            }
        })
        .await;
        match outcome {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                s.dispatch.forget(id);
                Err(ApiError::unavailable(
                    "the write could not be committed: leadership changed; its outcome is unknown",
                ))
            }
            Err(_) => {
                s.dispatch.forget(id);
                Err(ApiError::unavailable("the write was not applied within 30 s"))
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Corral admin API",
        description = "The znode tree, sessions, change streams, tokens and cluster state of a Corral node. \
                       Send `Authorization: Bearer <token>`; the bootstrap admin token is printed once when \
                       a cluster is created."
    ),
    modifiers(&BearerToken),
    tags(
        (name = "tree", description = "Znodes"),
        (name = "sessions", description = "Sessions and change streams"),
        (name = "admin", description = "Tokens and the cluster"),
        (name = "plugins", description = "Wasm plugins: deploy, inspect, roll back, call"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their OpenAPI document, built together so that one cannot
/// list a route the other does not serve.
pub fn routes() -> (Router<Api>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tree::get_node, tree::create_node, tree::set_node, tree::delete_node))
        .routes(routes!(tree::children))
        .routes(routes!(tree::get_acl, tree::set_acl))
        .routes(routes!(subtree::search))
        .routes(routes!(subtree::export))
        .routes(routes!(subtree::import))
        .routes(routes!(sessions::list, sessions::open))
        .routes(routes!(sessions::renew, sessions::close))
        .routes(routes!(sessions::events))
        .routes(routes!(sessions::connections))
        .routes(routes!(admin::whoami))
        .routes(routes!(admin::list_tokens, admin::create_token))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::cluster))
        .routes(routes!(admin::add_member))
        .routes(routes!(admin::promote_member))
        .routes(routes!(admin::remove_member))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::info, plugins::deploy, plugins::remove))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::enable))
        .routes(routes!(plugins::call))
        .routes(routes!(plugins::engine))
        .routes(routes!(plugins::pause))
        .routes(routes!(plugins::adopt))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(render_metrics))
        .split_for_parts()
}

/// The whole HTTP service.
pub fn router(shared: Arc<Shared>, prometheus: PrometheusHandle) -> Router {
    let max_body = shared.config.http_max_body_bytes as usize;
    let (api, doc) = routes();
    // SwaggerUi serves the document at /api/v1/openapi.json too.
    api.merge(SwaggerUi::new("/api/docs").url("/api/v1/openapi.json", doc))
        .route("/", axum::routing::get(console::index))
        .route("/console/{file}", axum::routing::get(console::asset))
        .layer(axum::middleware::from_fn(audit))
        // tower-http's limit refuses a declared Content-Length over the limit
        // before reading any of the body, and cuts a streamed one at the
        // limit; axum's own per-extractor limit (2 MiB) is turned off so
        // that this one setting is the only limit.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body))
        .with_state(Api { shared, prometheus })
}

/// Writes an audit line for every request that changes who may do what, or
/// the cluster: tokens, membership, plugins (not calls), ACLs, sessions
/// closed by an operator, imports. Znode data writes are not audited: they
/// are the data plane.
async fn audit(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    let audited = req.method() != axum::http::Method::GET
        && (["/api/v1/tokens", "/api/v1/cluster", "/api/v1/acl", "/api/v1/import", "/api/v1/plugin-engine"]
            .iter()
            .any(|p| path.starts_with(p))
            || (path.starts_with("/api/v1/plugins/") && !path.ends_with("/call"))
            || (path.starts_with("/api/v1/sessions/") && req.method() == axum::http::Method::DELETE));
    if !audited {
        return next.run(req).await;
    }
    let action = format!("{} {}", req.method(), path);
    let object = req.uri().query().unwrap_or_default().to_owned();
    // The token's public id, from its hash: who asked, even when refused.
    let actor = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map_or("anonymous".to_owned(), |secret| {
            let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(secret.trim().as_bytes()).into();
            format!("token:{}", crate::tree::Token::id_of(&hash))
        });
    let resp = next.run(req).await;
    let status = resp.status();
    let outcome = if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) };
    crate::audit::record(&action, &actor, &object, outcome);
    resp
}

/// The Prometheus exporter, with histogram buckets: seconds for latencies,
/// counts for batch sizes.
pub fn prometheus_builder() -> PrometheusBuilder {
    let seconds =
        [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
    let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
    PrometheusBuilder::new()
        .set_buckets(&seconds)
        .expect("buckets are not empty")
        .set_buckets_for_metric(Matcher::Suffix("_entries".into()), &counts)
        .expect("buckets are not empty")
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "Alive")))]
async fn live() -> &'static str {
    "ok\n"
}

/// The node has recovered its state, knows a leader, and has applied all
/// but at most `ready_max_apply_lag` of the entries it knows committed.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Recovering, without a leader, or far behind the commit")))]
async fn ready(State(api): State<Api>) -> (StatusCode, String) {
    let m = api.shared.raft.metrics().borrow_watched().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = m.local_committed.map_or(0, |l| l.index);
    let caught_up = committed.saturating_sub(applied) <= api.shared.config.ready_max_apply_lag;
    if api.shared.is_ready() && m.current_leader.is_some() && caught_up {
        (StatusCode::OK, format!("ready: applied {applied}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: applied {applied} of committed {committed}\n"))
    }
}

/// Prometheus metrics, in the text exposition format. Needs the `read`
/// scope unless `http_metrics_public` is set.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("token" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
              (status = 401, body = error::ErrorBody)))]
async fn render_metrics(State(api): State<Api>, principal: Result<Principal, ApiError>) -> axum::response::Response {
    if !api.shared.config.http_metrics_public
        && let Err(e) = principal.and_then(|p| p.require(Scope::Read))
    {
        return e.into_response();
    }
    let s = &api.shared;
    let meta = s.state.meta();
    let m = s.raft.metrics().borrow_watched().clone();
    metrics::gauge!("corral_znodes").set(meta.node_count as f64);
    metrics::gauge!("corral_data_bytes").set(meta.data_bytes as f64);
    metrics::gauge!("corral_ephemerals").set(meta.ephemeral_count as f64);
    metrics::gauge!("corral_sessions").set(s.dispatch.liveness.len() as f64);
    metrics::gauge!("corral_watches").set(s.dispatch.watches.lock().count() as f64);
    metrics::gauge!("corral_raft_term").set(m.current_term as f64);
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = m.local_committed.map_or(0, |l| l.index);
    metrics::gauge!("corral_raft_applied_index").set(applied as f64);
    metrics::gauge!("corral_raft_committed_index").set(committed as f64);
    metrics::gauge!("corral_raft_apply_lag").set(committed.saturating_sub(applied) as f64);
    metrics::gauge!("corral_raft_is_leader").set(if s.raft.is_leader() { 1.0 } else { 0.0 });
    ([("content-type", "text/plain; version=0.0.4")], api.prometheus.render()).into_response()
}
