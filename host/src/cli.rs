//! The data and admin commands of the `corral` binary: `ls`, `get`, `set`,
//! `create`, `delete`, `stat`, `watch` over the ZooKeeper port (default) or
//! the admin API (`--api`), and `token`, `cluster` over the admin API.
//!
//! Output is plain text for people, or JSON with `--json`. Errors are one
//! line on stderr, and the exit code says what kind of failure it was:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | bad usage (wrong arguments) |
//! | 3 | no such node, session or token |
//! | 4 | conflict: the node exists, a version did not match, or it has children |
//! | 5 | not allowed: no token, a wrong scope, or the node's ACL |
//! | 6 | the server could not be reached, or is unavailable |

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, ClientError};
use crate::http::admin::{ClusterView, CreatedToken, MemberChange, TokenView};
use crate::http::plugins::{Activated, EngineView, PluginView};
use crate::http::tree::{ChildrenPage, Created, NodeView, StatView, Updated};
use crate::proto::data::Acl;
use crate::proto::op;
use crate::proto::request::{CreateRequest, MultiOp, Request};
use crate::proto::response::Response;

/// Where the commands go.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The ZooKeeper port of a server.
    #[arg(long, global = true, default_value = "127.0.0.1:2181")]
    pub server: SocketAddr,
    /// Use the admin API at this URL (e.g. http://127.0.0.1:8080) instead of
    /// the ZooKeeper port.
    #[arg(long, global = true, env = "CORRAL_API_URL")]
    pub api: Option<String>,
    /// Admin API token.
    #[arg(long, global = true, env = "CORRAL_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// JSON output, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Persistent,
    Ephemeral,
    Sequential,
    EphemeralSequential,
    Container,
    Ttl,
}

#[derive(Debug, Subcommand)]
pub enum TreeCommand {
    /// List a node's children.
    Ls {
        path: String,
        /// With each child's stat.
        #[arg(long)]
        stat: bool,
    },
    /// Print a node's data.
    Get {
        path: String,
        #[arg(long)]
        stat: bool,
    },
    /// Set a node's data.
    Set {
        path: String,
        data: String,
        /// Expected version; fails with exit code 4 if it differs.
        #[arg(long)]
        version: Option<i32>,
    },
    /// Create a node.
    Create {
        path: String,
        data: Option<String>,
        #[arg(long, value_enum, default_value = "persistent")]
        mode: Mode,
        #[arg(long)]
        ttl_ms: Option<i64>,
    },
    /// Delete a node, or with --recursive its whole subtree (with progress).
    Delete {
        path: String,
        #[arg(long)]
        version: Option<i32>,
        #[arg(long)]
        recursive: bool,
    },
    /// Print a node's stat.
    Stat { path: String },
    /// Print changes under a path as they are committed, until interrupted
    /// or --count changes.
    Watch {
        path: String,
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// Comma-separated: read, write, plugin, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, the leader, and how far each member is behind.
    Status,
    /// Adds a learner (a non-voting member, like a ZooKeeper observer).
    /// Start the new node first, with its own --node-id and --raft-addr and
    /// the cluster's secret; this returns once it has caught up.
    AddLearner {
        /// The new member's node id.
        id: u64,
        /// Its Raft address, host:port.
        raft_addr: String,
    },
    /// Makes a learner a voter.
    Promote { id: u64 },
    /// Removes a member (voter or learner).
    Remove { id: u64 },
}

/// A step of a wasm engine upgrade.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EngineStep {
    Pause,
    Adopt,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Deploy a component (a new plugin, or a new version of one): checked
    /// here, uploaded through the log, active on every member at once.
    Deploy {
        name: String,
        /// The component file (.wasm).
        file: std::path::PathBuf,
        /// validator, trigger, recipe or query; guessed from the exports
        /// by default.
        #[arg(long)]
        kind: Option<String>,
        /// A path the validator or trigger watches, with its subtree
        /// (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',')]
        bind: Vec<String>,
        #[arg(long)]
        fuel: Option<u64>,
        #[arg(long)]
        memory_bytes: Option<u64>,
        #[arg(long)]
        host_calls: Option<u32>,
        #[arg(long)]
        output_bytes: Option<u64>,
        /// Consecutive traps that disable the plugin (0: never).
        #[arg(long)]
        breaker: Option<u32>,
    },
    List,
    /// Versions, bindings, limits and counters of one plugin.
    Info {
        name: String,
    },
    /// Make the previous version active again.
    Rollback {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Call a recipe or a query; prints its result. With `--api`, through
    /// the admin API; otherwise over the ZooKeeper port (`--server`), as a
    /// session of this command.
    Call {
        name: String,
        /// The arguments (bytes, often JSON).
        #[arg(default_value = "")]
        args: String,
        /// Over the ZooKeeper port: call a query plugin (opcode 4097)
        /// rather than a recipe (4096).
        #[arg(long)]
        query: bool,
    },
    /// The cluster's wasm engine, for a Corral upgrade: `pause` plugins
    /// first, upgrade the members one by one, then `adopt` the engine they
    /// all run. Without an action, shows where the cluster stands.
    Engine {
        #[arg(value_enum)]
        action: Option<EngineStep>,
    },
}

/// A failure, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> CliError {
    CliError { code, message: message.into() }
}

fn zk_code(err: i32) -> u8 {
    match err {
        -101 | -112 => 3,
        -110 | -103 | -111 => 4,
        -102 | -115 => 5,
        _ => 1,
    }
}

fn zk_name(err: i32) -> &'static str {
    match err {
        -101 => "no such node",
        -110 => "node exists",
        -103 => "version mismatch",
        -111 => "node has children",
        -102 => "not allowed by the node's ACL",
        -108 => "ephemeral nodes cannot have children",
        -8 => "bad arguments (check the path)",
        -114 => "invalid ACL",
        -6 => "not supported by this server",
        _ => "server error",
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server(code) => fail(zk_code(code), format!("{} (ZooKeeper error {code})", zk_name(code))),
            ClientError::Connect { .. } | ClientError::Refused(_) | ClientError::Closed | ClientError::Timeout(_) => {
                fail(6, e.to_string())
            }
            ClientError::Decode(_) => fail(1, e.to_string()),
        }
    }
}

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn stat_lines(s: &StatView) -> String {
    format!(
        "czxid = 0x{:x}\nmzxid = 0x{:x}\npzxid = 0x{:x}\nctime = {}\nmtime = {}\nversion = {}\ncversion = {}\naversion = {}\nephemeralOwner = {}\ndataLength = {}\nnumChildren = {}",
        s.czxid,
        s.mzxid,
        s.pzxid,
        s.ctime,
        s.mtime,
        s.version,
        s.cversion,
        s.aversion,
        s.ephemeral_owner.as_deref().unwrap_or("0x0"),
        s.data_length,
        s.num_children
    )
}

/// The admin API over HTTP.
struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl ApiClient {
    fn new(base: &str, token: Option<String>) -> ApiClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        ApiClient { base: base.trim_end_matches('/').to_owned(), token, agent: config.into() }
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("authorization", &auth).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("authorization", &auth).send_json(b),
            ("PUT", Some(b)) => self.agent.put(&url).header("authorization", &auth).send_json(b),
            ("PUT", None) => self.agent.put(&url).header("authorization", &auth).send_empty(),
            _ => unreachable!("methods used by the CLI"),
        };
        let mut resp = resp.map_err(|e| fail(6, format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| fail(6, format!("{url}: {e}")))?;
        if (200..300).contains(&status) {
            let text = if text.is_empty() { "null" } else { text.as_str() };
            return serde_json::from_str(text).map_err(|e| fail(1, format!("{url}: unexpected reply: {e}")));
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        let code = match status {
            404 | 410 => 3,
            409 => 4,
            401 | 403 => 5,
            503 => 6,
            _ => 1,
        };
        Err(fail(code, format!("{message} (HTTP {status})")))
    }
}

impl ApiClient {
    /// A request with raw bytes in and out (deploys and calls).
    fn raw(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, CliError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let req = if path.contains("/call") { self.agent.post(&url) } else { self.agent.put(&url) };
        let mut resp = req
            .header("authorization", &auth)
            .header("content-type", content_type)
            .send(body)
            .map_err(|e| fail(6, format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let bytes =
            resp.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| fail(6, format!("{url}: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = v["message"].as_str().map_or_else(|| String::from_utf8_lossy(&bytes).into_owned(), str::to_owned);
        let what = v["code"].as_str().unwrap_or("error");
        Err(fail(if status == 404 { 3 } else { 1 }, format!("{what}: {message} (HTTP {status})")))
    }
}

fn q(p: &str) -> String {
    url_escape(p)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

enum Conn {
    Zk(Client, tokio::sync::mpsc::UnboundedReceiver<crate::client::Event>),
    Api(ApiClient),
}

impl Conn {
    async fn open(t: &Target) -> Result<Conn, CliError> {
        match &t.api {
            Some(url) => Ok(Conn::Api(ApiClient::new(url, t.token.clone()))),
            None => {
                let (c, events) = Client::connect(t.server, 30_000).await?;
                Ok(Conn::Zk(c, events))
            }
        }
    }

    async fn get(&self, path: &str) -> Result<(Option<Vec<u8>>, StatView), CliError> {
        match self {
            Conn::Zk(c, _) => match c.request(&Request::GetData { path: path.into(), watch: false }).await? {
                Response::Data { data, stat } => Ok((data, stat.into())),
                other => Err(fail(1, format!("unexpected reply {other:?}"))),
            },
            Conn::Api(a) => {
                let n: NodeView = a.call("GET", &format!("/api/v1/node?path={}", q(path)), None)?;
                let data = n.data_base64.map(|d| B64.decode(d).unwrap_or_default());
                Ok((data, n.stat))
            }
        }
    }

    /// Child names with their stats, all pages.
    async fn children(&self, path: &str) -> Result<Vec<(String, Option<StatView>)>, CliError> {
        match self {
            Conn::Zk(c, _) => match c.request(&Request::GetChildren { path: path.into(), watch: false }).await? {
                Response::Children { mut children } => {
                    children.sort();
                    Ok(children.into_iter().map(|n| (n, None)).collect())
                }
                other => Err(fail(1, format!("unexpected reply {other:?}"))),
            },
            Conn::Api(a) => {
                let mut out = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut url = format!("/api/v1/children?path={}&limit=10000&stat=true", q(path));
                    if let Some(a) = &after {
                        url += &format!("&after={}", url_escape(a));
                    }
                    let page: ChildrenPage = a.call("GET", &url, None)?;
                    out.extend(page.children.into_iter().map(|c| (c.name, c.stat)));
                    match page.next {
                        Some(n) => after = Some(n),
                        None => return Ok(out),
                    }
                }
            }
        }
    }

    async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), CliError> {
        match self {
            Conn::Zk(c, _) => {
                c.request(&Request::Delete { path: path.into(), version: version.unwrap_or(-1) }).await?;
                Ok(())
            }
            Conn::Api(a) => {
                let mut url = format!("/api/v1/node?path={}", q(path));
                if let Some(v) = version {
                    url += &format!("&version={v}");
                }
                a.call::<serde_json::Value>("DELETE", &url, None)?;
                Ok(())
            }
        }
    }

    /// Deletes many nodes, children before parents; a batch per entry on
    /// the ZooKeeper port.
    async fn delete_all(&self, paths: &[String]) -> Result<(), CliError> {
        match self {
            Conn::Zk(c, _) => {
                let ops = paths.iter().map(|p| MultiOp::Delete { path: p.clone(), version: -1 }).collect();
                match c.request(&Request::Multi(ops)).await? {
                    Response::Multi(results)
                        if results.iter().all(|r| !matches!(r, crate::proto::response::MultiResult::Error(_))) =>
                    {
                        Ok(())
                    }
                    _ => {
                        for p in paths {
                            match self.delete(p, None).await {
                                Ok(()) => {}
                                Err(e) if e.code == 3 => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(())
                    }
                }
            }
            Conn::Api(_) => {
                for p in paths {
                    match self.delete(p, None).await {
                        Ok(()) => {}
                        Err(e) if e.code == 3 => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
}

fn show_data(data: &Option<Vec<u8>>) -> String {
    match data {
        None => "null".into(),
        Some(d) => match std::str::from_utf8(d) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("base64:{}", B64.encode(d)),
        },
    }
}

/// Runs a tree command.
pub async fn tree(t: Target, cmd: TreeCommand) -> Result<(), CliError> {
    let conn = Conn::open(&t).await?;
    match cmd {
        TreeCommand::Ls { path, stat } => {
            let children = conn.children(&path).await?;
            if t.json {
                let v: Vec<serde_json::Value> = children
                    .iter()
                    .map(|(n, s)| serde_json::json!({ "name": n, "stat": if stat { serde_json::to_value(s).ok() } else { None } }))
                    .collect();
                print_json(&v);
            } else {
                for (name, s) in &children {
                    match (stat, s) {
                        (true, Some(s)) => println!(
                            "{name}\tversion={} children={} bytes={}",
                            s.version, s.num_children, s.data_length
                        ),
                        _ => println!("{name}"),
                    }
                }
            }
        }
        TreeCommand::Get { path, stat } => {
            let (data, s) = conn.get(&path).await?;
            if t.json {
                print_json(&serde_json::json!({
                    "path": path,
                    "data_base64": data.as_ref().map(|d| B64.encode(d)),
                    "data_utf8": data.as_ref().and_then(|d| String::from_utf8(d.clone()).ok()),
                    "stat": s,
                }));
            } else {
                println!("{}", show_data(&data));
                if stat {
                    println!("{}", stat_lines(&s));
                }
            }
        }
        TreeCommand::Stat { path } => {
            let (_, s) = conn.get(&path).await?;
            if t.json { print_json(&s) } else { println!("{}", stat_lines(&s)) }
        }
        TreeCommand::Set { path, data, version } => {
            let s: StatView = match &conn {
                Conn::Zk(c, _) => {
                    let req = Request::SetData {
                        path: path.clone(),
                        data: Some(data.into_bytes()),
                        version: version.unwrap_or(-1),
                    };
                    match c.request(&req).await? {
                        Response::Stat(s) => s.into(),
                        other => return Err(fail(1, format!("unexpected reply {other:?}"))),
                    }
                }
                Conn::Api(a) => {
                    let body = serde_json::json!({ "path": path, "data": data, "version": version });
                    a.call::<Updated>("PUT", "/api/v1/node", Some(body))?.stat
                }
            };
            if t.json { print_json(&s) } else { println!("version {}", s.version) }
        }
        TreeCommand::Create { path, data, mode, ttl_ms } => {
            let created = match &conn {
                Conn::Zk(c, _) => {
                    let (flags, opcode) = match mode {
                        Mode::Persistent => (0, op::CREATE2),
                        Mode::Ephemeral => (1, op::CREATE2),
                        Mode::Sequential => (2, op::CREATE2),
                        Mode::EphemeralSequential => (3, op::CREATE2),
                        Mode::Container => (4, op::CREATE_CONTAINER),
                        Mode::Ttl => (5, op::CREATE_TTL),
                    };
                    let req = CreateRequest {
                        path: path.clone(),
                        data: data.map(String::into_bytes),
                        acl: Acl::open(),
                        flags,
                        ttl: ttl_ms.filter(|_| matches!(mode, Mode::Ttl)),
                    };
                    match c.request(&Request::Create { opcode, req }).await? {
                        Response::Create2 { path, .. } | Response::Create { path } => path,
                        other => return Err(fail(1, format!("unexpected reply {other:?}"))),
                    }
                }
                Conn::Api(a) => {
                    let mode = match mode {
                        Mode::Persistent => "persistent",
                        Mode::Ephemeral => "ephemeral",
                        Mode::Sequential => "persistent_sequential",
                        Mode::EphemeralSequential => "ephemeral_sequential",
                        Mode::Container => "container",
                        Mode::Ttl => "ttl",
                    };
                    let body = serde_json::json!({ "path": path, "data": data, "mode": mode, "ttl_ms": ttl_ms });
                    a.call::<Created>("POST", "/api/v1/node", Some(body))?.path
                }
            };
            if t.json { print_json(&serde_json::json!({ "path": created })) } else { println!("{created}") }
        }
        TreeCommand::Delete { path, version, recursive } => {
            let mut deleted = 0u64;
            if recursive {
                deleted = delete_subtree(&conn, &path, !t.json).await?;
            }
            conn.delete(&path, version).await?;
            deleted += 1;
            if t.json { print_json(&serde_json::json!({ "deleted": deleted })) } else { println!("deleted {deleted}") }
        }
        TreeCommand::Watch { path, count } => watch(conn, &path, count, t.json).await?,
    }
    Ok(())
}

/// Deletes everything below `root`, leaves first, printing progress.
async fn delete_subtree(conn: &Conn, root: &str, progress: bool) -> Result<u64, CliError> {
    // Walk the subtree: parents before children, then delete in reverse.
    let mut order = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        for (name, _) in conn.children(&p).await? {
            let child = crate::tree::path::join(&p, &name);
            order.push(child.clone());
            stack.push(child);
        }
        if progress && order.len() % 1000 < 1 && !order.is_empty() {
            eprint!("\rfound {} nodes", order.len());
        }
    }
    let total = order.len() as u64;
    let mut done = 0u64;
    // Deepest first: every batch then holds only nodes whose children are
    // already gone.
    order.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for chunk in order.chunks(200) {
        conn.delete_all(chunk).await?;
        done += chunk.len() as u64;
        if progress {
            eprint!("\rdeleted {done}/{total}");
        }
    }
    if progress && total > 0 {
        eprintln!();
    }
    Ok(total)
}

async fn watch(conn: Conn, path: &str, count: Option<u64>, json: bool) -> Result<(), CliError> {
    let mut seen = 0u64;
    let limit = count.unwrap_or(u64::MAX);
    let print = |zxid: i64, kind: &str, p: &str| {
        if json {
            println!("{}", serde_json::json!({ "zxid": zxid, "type": kind, "path": p }));
        } else {
            println!("0x{zxid:x} {kind} {p}");
        }
    };
    match conn {
        Conn::Zk(c, mut events) => {
            // A persistent recursive watch where the server has it; re-armed
            // one-shot watches otherwise.
            let r = c.call(&Request::AddWatch { path: path.into(), mode: 1 }).await?;
            if r.err != 0 {
                return Err(fail(zk_code(r.err), format!("{path}: cannot watch: {}", zk_name(r.err))));
            }
            while seen < limit {
                let Some(e) = events.recv().await else { return Err(fail(6, "the connection closed")) };
                let kind = match e.kind {
                    1 => "created",
                    2 => "deleted",
                    3 => "data",
                    4 => "children",
                    _ => "other",
                };
                print(e.zxid, kind, &e.path);
                seen += 1;
            }
        }
        Conn::Api(a) => {
            let url = format!("{}/api/v1/events?path={}", a.base, q(path));
            let auth = format!("Bearer {}", a.token.as_deref().unwrap_or(""));
            let mut resp =
                a.agent.get(&url).header("authorization", &auth).call().map_err(|e| fail(6, format!("{url}: {e}")))?;
            if resp.status().as_u16() != 200 {
                let code = match resp.status().as_u16() {
                    401 | 403 => 5,
                    _ => 1,
                };
                return Err(fail(code, format!("{url}: HTTP {}", resp.status())));
            }
            use std::io::BufRead;
            let reader = std::io::BufReader::new(resp.body_mut().as_reader());
            for line in reader.lines() {
                let line = line.map_err(|e| fail(6, e.to_string()))?;
                if let Some(data) = line.strip_prefix("data:") {
                    let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                    if let Some(kind) = v["type"].as_str() {
                        print(v["zxid"].as_i64().unwrap_or(0), kind, v["path"].as_str().unwrap_or(""));
                        seen += 1;
                        if seen >= limit {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn api_only(t: &Target) -> Result<ApiClient, CliError> {
    let url = t.api.clone().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    Ok(ApiClient::new(&url, t.token.clone()))
}

/// Runs a token command (admin API).
pub fn token(t: Target, cmd: TokenCommand) -> Result<(), CliError> {
    let a = api_only(&t)?;
    match cmd {
        TokenCommand::Create { name, scope } => {
            let created: CreatedToken =
                a.call("POST", "/api/v1/tokens", Some(serde_json::json!({ "name": name, "scopes": scope })))?;
            if t.json {
                print_json(&created);
            } else {
                println!("id: {}\nscopes: {}\ntoken: {}", created.id, created.scopes.join(","), created.token);
                eprintln!("the token is shown only now: store it");
            }
        }
        TokenCommand::List => {
            let tokens: Vec<TokenView> = a.call("GET", "/api/v1/tokens", None)?;
            if t.json {
                print_json(&tokens);
            } else {
                for tk in tokens {
                    println!("{}\t{}\t{}", tk.id, tk.scopes.join(","), tk.name);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            a.call::<serde_json::Value>("DELETE", &format!("/api/v1/tokens/{}", url_escape(&id)), None)?;
            if t.json { print_json(&serde_json::json!({ "revoked": id })) } else { println!("revoked {id}") }
        }
    }
    Ok(())
}

/// Runs a cluster command (admin API).
pub fn cluster(t: Target, cmd: ClusterCommand) -> Result<(), CliError> {
    let a = api_only(&t)?;
    match cmd {
        ClusterCommand::Status => {
            let c: ClusterView = a.call("GET", "/api/v1/cluster", None)?;
            print_cluster(&t, &c);
        }
        ClusterCommand::AddLearner { id, raft_addr } => {
            let body = serde_json::json!({ "id": id, "raft_addr": raft_addr });
            let c: MemberChange = a.call("POST", "/api/v1/cluster/members", Some(body))?;
            print_cluster(&t, &c.cluster);
        }
        ClusterCommand::Promote { id } => {
            let c: MemberChange = a.call("PUT", &format!("/api/v1/cluster/members/{id}/voter"), None)?;
            print_cluster(&t, &c.cluster);
        }
        ClusterCommand::Remove { id } => {
            let c: MemberChange = a.call("DELETE", &format!("/api/v1/cluster/members/{id}"), None)?;
            print_cluster(&t, &c.cluster);
        }
    }
    Ok(())
}

fn print_cluster(t: &Target, c: &ClusterView) {
    if t.json {
        print_json(&c);
    } else {
        println!(
            "node {} is {}; leader {}; term {}; committed {}; applied {}",
            c.node_id,
            c.state,
            c.leader.map_or("none".into(), |l| l.to_string()),
            c.term,
            c.committed_index,
            c.applied_index
        );
        for m in &c.members {
            println!(
                "  {}\t{}\traft {}\tclients {}\thttp {}\tlag {}",
                m.id,
                m.role,
                m.raft_addr,
                m.client_addr.as_deref().unwrap_or("-"),
                m.http_addr.as_deref().unwrap_or("-"),
                m.lag.map_or("-".into(), |l| l.to_string())
            );
        }
    }
}

/// Runs a plugin command (admin API).
pub fn plugin(t: Target, cmd: PluginCommand) -> Result<(), CliError> {
    if let PluginCommand::Call { name, args, query } = &cmd
        && t.api.is_none()
    {
        return call_over_zookeeper(&t, name, args, *query);
    }
    let a = api_only(&t)?;
    let show = |p: &PluginView| {
        if t.json {
            print_json(p);
        } else {
            println!(
                "{}\t{}\t{}\t{}{}\tcalls {} traps {} fuel {}",
                p.name,
                p.kind,
                &p.active[..12],
                p.bindings.join(","),
                if p.disabled { "\tDISABLED" } else { "" },
                p.calls,
                p.traps,
                p.fuel_used
            );
        }
    };
    match cmd {
        PluginCommand::Deploy { name, file, kind, bind, fuel, memory_bytes, host_calls, output_bytes, breaker } => {
            let code = std::fs::read(&file).map_err(|e| fail(1, format!("{}: {e}", file.display())))?;
            let mut query = Vec::new();
            let mut param = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    query.push(format!("{k}={}", url_escape(&v)));
                }
            };
            param("kind", kind);
            param("bind", (!bind.is_empty()).then(|| bind.join(",")));
            param("fuel", fuel.map(|v| v.to_string()));
            param("memory_bytes", memory_bytes.map(|v| v.to_string()));
            param("host_calls", host_calls.map(|v| v.to_string()));
            param("output_bytes", output_bytes.map(|v| v.to_string()));
            param("breaker", breaker.map(|v| v.to_string()));
            let path = format!("/api/v1/plugins/{}?{}", url_escape(&name), query.join("&"));
            let reply = a.raw(&path, "application/wasm", &code)?;
            let d: Activated = serde_json::from_slice(&reply).map_err(|e| fail(1, format!("unexpected reply: {e}")))?;
            if t.json {
                print_json(&d);
            } else {
                println!("deployed {} ({}) at zxid 0x{:x} in {} ms", d.plugin.name, d.plugin.active, d.zxid, d.took_ms);
            }
        }
        PluginCommand::List => {
            let list: Vec<PluginView> = a.call("GET", "/api/v1/plugins", None)?;
            if t.json {
                print_json(&list);
            } else {
                list.iter().for_each(show);
            }
        }
        PluginCommand::Info { name } => {
            let p: PluginView = a.call("GET", &format!("/api/v1/plugins/{}", url_escape(&name)), None)?;
            if t.json {
                print_json(&p);
            } else {
                show(&p);
                for v in &p.versions {
                    let active = if v.sha256 == p.active { " (active)" } else { "" };
                    println!("  {} {} bytes, deployed at zxid 0x{:x}{active}", v.sha256, v.size, v.deployed_zxid);
                }
            }
        }
        PluginCommand::Rollback { name } => {
            let path = format!("/api/v1/plugins/{}/rollback", url_escape(&name));
            let d: Activated = a.call("POST", &path, Some(serde_json::json!({})))?;
            if t.json {
                print_json(&d);
            } else {
                println!("{} is back at {} from zxid 0x{:x}", d.plugin.name, d.plugin.active, d.zxid);
            }
        }
        PluginCommand::Remove { name } => {
            a.call::<serde_json::Value>("DELETE", &format!("/api/v1/plugins/{}", url_escape(&name)), None)?;
            if t.json { print_json(&serde_json::json!({ "removed": name })) } else { println!("removed {name}") }
        }
        PluginCommand::Engine { action } => {
            let v: EngineView = match action {
                None => a.call("GET", "/api/v1/plugin-engine", None)?,
                Some(EngineStep::Pause) => {
                    a.call("POST", "/api/v1/plugin-engine/pause", Some(serde_json::json!({})))?
                }
                Some(EngineStep::Adopt) => {
                    a.call("POST", "/api/v1/plugin-engine/adopt", Some(serde_json::json!({})))?
                }
            };
            if t.json {
                print_json(&v);
            } else {
                let paused = v.paused_zxid.map_or(String::new(), |z| format!("; plugins paused since zxid 0x{z:x}"));
                println!("cluster engine {}{paused}", v.cluster.as_deref().unwrap_or("(none yet)"));
                for m in &v.members {
                    let (version, engine) = (m.version.as_deref().unwrap_or("-"), m.engine.as_deref().unwrap_or("-"));
                    println!("  {}\tcorral {version}\tengine {engine}", m.id);
                }
            }
        }
        PluginCommand::Call { name, args, .. } => {
            let out = a.raw(
                &format!("/api/v1/plugins/{}/call", url_escape(&name)),
                "application/octet-stream",
                args.as_bytes(),
            )?;
            println!("{}", String::from_utf8_lossy(&out));
        }
    }
    Ok(())
}

/// `corral plugin call` over the ZooKeeper port, with the client's
/// [`Client::call_plugin`].
fn call_over_zookeeper(t: &Target, name: &str, args: &str, query: bool) -> Result<(), CliError> {
    use crate::client::PluginReply;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| fail(1, e.to_string()))?;
    rt.block_on(async {
        let (client, _) = Client::connect(t.server, 30_000).await?;
        let reply = client.call_plugin(name, args.as_bytes(), query).await;
        let _ = client.close().await;
        match reply {
            Ok(PluginReply::Ok(out)) => {
                println!("{}", String::from_utf8_lossy(&out));
                Ok(())
            }
            Ok(PluginReply::Error(m)) => Err(fail(1, format!("plugin_error: {m}"))),
            Ok(PluginReply::Trap(m)) => Err(fail(1, format!("plugin_trap: {m}"))),
            Ok(PluginReply::Rejected(m)) => Err(fail(1, format!("rejected: {m}"))),
            Err(ClientError::Server(-101)) => Err(fail(3, format!("no plugin named {name}"))),
            Err(e) => Err(e.into()),
        }
    })
}
