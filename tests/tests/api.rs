//! The admin HTTP API against the real binary: every route, its OpenAPI
//! entry, and the security cases (no token, a wrong scope, a revoked token,
//! a bad version, an oversized body, bad paths, forwarded headers, CORS).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use corral_tests::{Corral, Jute, Raw, eventually};
use serde_json::{Value, json};

/// A minimal HTTP client for the tests: status and JSON body.
struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn new(c: &Corral) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http { base: c.api(), agent }
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($req:expr) => {{
                let r = $req;
                match &auth {
                    Some(a) => r.header("authorization", a),
                    None => r,
                }
            }};
        }
        let resp = match (method, body) {
            ("GET", _) => with_auth!(self.agent.get(&url)).call(),
            ("DELETE", _) => with_auth!(self.agent.delete(&url)).call(),
            ("POST", Some(b)) => with_auth!(self.agent.post(&url)).send_json(b),
            ("POST", None) => with_auth!(self.agent.post(&url)).send_empty(),
            ("PUT", Some(b)) => with_auth!(self.agent.put(&url)).send_json(b),
            ("PUT", None) => with_auth!(self.agent.put(&url)).send_empty(),
            _ => unreachable!(),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method, path, Some(token), body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }
}

/// Writes `request` on a fresh connection (ignoring a write the server cut
/// short by answering early) and returns the server's first reply line and
/// headers.
fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn new_token(h: &Http, admin: &str, name: &str, scopes: &[&str]) -> (String, String) {
    let v = h.ok("POST", "/api/v1/tokens", admin, Some(json!({ "name": name, "scopes": scopes })));
    (v["id"].as_str().unwrap().to_owned(), v["token"].as_str().unwrap().to_owned())
}

/// Every route the router serves, as (method, path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/node"),
    ("post", "/api/v1/node"),
    ("put", "/api/v1/node"),
    ("delete", "/api/v1/node"),
    ("get", "/api/v1/children"),
    ("get", "/api/v1/acl"),
    ("put", "/api/v1/acl"),
    ("get", "/api/v1/search"),
    ("get", "/api/v1/export"),
    ("post", "/api/v1/import"),
    ("get", "/api/v1/sessions"),
    ("post", "/api/v1/sessions"),
    ("put", "/api/v1/sessions/{id}"),
    ("delete", "/api/v1/sessions/{id}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/connections"),
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/cluster"),
    ("post", "/api/v1/cluster/members"),
    ("put", "/api/v1/cluster/members/{id}/voter"),
    ("delete", "/api/v1/cluster/members/{id}"),
    ("get", "/api/v1/plugins"),
    ("get", "/api/v1/plugins/{name}"),
    ("put", "/api/v1/plugins/{name}"),
    ("delete", "/api/v1/plugins/{name}"),
    ("post", "/api/v1/plugins/{name}/rollback"),
    ("put", "/api/v1/plugins/{name}/enabled"),
    ("post", "/api/v1/plugins/{name}/call"),
    ("get", "/api/v1/plugin-engine"),
    ("post", "/api/v1/plugin-engine/pause"),
    ("post", "/api/v1/plugin-engine/adopt"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
];

#[test]
fn the_openapi_document_lists_every_route_and_anonymous_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let h = Http::new(&c);
    let (status, doc) = h.send("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: BTreeSet<_> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served, "the OpenAPI document and the served routes differ");
    assert!(doc["components"]["securitySchemes"]["token"].is_object());

    for (method, path) in ROUTES {
        let concrete =
            path.replace("{id}", "0x1").replace("{name}", "p") + if path.contains('?') { "" } else { "?path=/" };
        let body = matches!(*method, "post" | "put").then(|| json!({}));
        let (status, v) = h.send(&method.to_uppercase(), &concrete, None, body);
        if path.starts_with("/health") {
            assert_eq!(status, 200, "{method} {path}");
        } else {
            assert_eq!(status, 401, "{method} {path} without a token: {v}");
            assert_eq!(v["code"], "unauthenticated", "{method} {path}");
        }
    }
    let (status, v) = h.send("GET", "/api/v1/node?path=/", Some("corral_not-a-real-token"), None);
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));

    // Swagger UI from vendored assets.
    let (status, page) = h.send("GET", "/api/docs/", None, None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("swagger"), "{page}");
}

#[test]
fn tree_routes_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("extended_types", "true")]);
    let h = Http::new(&c);
    let t = c.token();

    let v = h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/app", "data": "{\"a\":1}" })));
    assert_eq!(v["path"], "/app");
    assert!(v["zxid"].as_i64().unwrap() > 0);
    let v = h.ok("GET", "/api/v1/node?path=/app", t, None);
    assert_eq!(v["data_utf8"], "{\"a\":1}");
    assert_eq!(v["stat"]["version"], 0);
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/app/bin", "data_base64": "AP8=" })));
    let v = h.ok("GET", "/api/v1/node?path=/app/bin", t, None);
    assert_eq!((v["data_base64"].as_str(), v["data_utf8"].as_str()), (Some("AP8="), None));
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/app/null" })));
    assert_eq!(h.ok("GET", "/api/v1/node?path=/app/null", t, None)["data_base64"], Value::Null);
    for (mode, extra) in
        [("persistent_sequential", json!({})), ("container", json!({})), ("ttl", json!({ "ttl_ms": 60000 }))]
    {
        let mut body = json!({ "path": format!("/app/{mode}-"), "mode": mode });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        h.ok("POST", "/api/v1/node", t, Some(body));
    }

    // Versions.
    let v = h.ok("PUT", "/api/v1/node", t, Some(json!({ "path": "/app", "data": "v2", "version": 0 })));
    assert_eq!(v["stat"]["version"], 1);
    let (status, v) =
        h.send("PUT", "/api/v1/node", Some(t), Some(json!({ "path": "/app", "data": "v3", "version": 0 })));
    assert_eq!((status, v["code"].as_str()), (409, Some("bad_version")), "{v}");
    assert_eq!(v["details"]["zookeeper_code"], -103);
    let (status, v) = h.send("POST", "/api/v1/node", Some(t), Some(json!({ "path": "/app", "data": "x" })));
    assert_eq!((status, v["code"].as_str()), (409, Some("node_exists")));
    let (status, v) = h.send("GET", "/api/v1/node?path=/nope", Some(t), None);
    assert_eq!((status, v["code"].as_str()), (404, Some("no_node")));
    // Bad paths.
    for bad in ["/app/", "relative", "/a//b", "/a/./b"] {
        let (status, v) = h.send("POST", "/api/v1/node", Some(t), Some(json!({ "path": bad })));
        assert!(matches!(status, 400 | 404), "{bad}: {status} {v}");
    }
    let (status, _) = h.send("DELETE", "/api/v1/node?path=/app%2F", Some(t), None);
    assert_eq!(status, 400);
    let (status, v) =
        h.send("POST", "/api/v1/node", Some(t), Some(json!({ "path": "/x", "data": "a", "data_base64": "YQ==" })));
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")));
    let (status, _) = h.send("POST", "/api/v1/node", Some(t), Some(json!({ "path": "/x", "mode": "sideways" })));
    assert!(status == 400 || status == 422, "{status}");

    // Children, paged.
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/many" })));
    for i in 0..250 {
        h.ok("POST", "/api/v1/node", t, Some(json!({ "path": format!("/many/c{i:03}") })));
    }
    let mut names = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let url = format!(
            "/api/v1/children?path=/many&limit=100&stat=true{}",
            if after.is_empty() { String::new() } else { format!("&after={after}") }
        );
        let page = h.ok("GET", &url, t, None);
        assert_eq!(page["total"], 250);
        pages += 1;
        for ch in page["children"].as_array().unwrap() {
            assert!(ch["stat"]["czxid"].as_i64().unwrap() > 0);
            names.push(ch["name"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 250);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "pages are ordered and disjoint");

    // ACLs.
    let acl = h.ok("GET", "/api/v1/acl?path=/app", t, None);
    assert_eq!(acl["acl"], json!([{ "perms": "cdrwa", "scheme": "world", "id": "anyone" }]));
    let body = json!({ "path": "/app", "acl": [{ "perms": "r", "scheme": "world", "id": "anyone" }], "version": 0 });
    h.ok("PUT", "/api/v1/acl", t, Some(body.clone()));
    let (status, v) = h.send("PUT", "/api/v1/acl", Some(t), Some(body));
    assert_eq!((status, v["code"].as_str()), (409, Some("bad_version")));
    let (status, _) = h.send(
        "PUT",
        "/api/v1/acl",
        Some(t),
        Some(json!({ "path": "/app", "acl": [{ "perms": "rq", "scheme": "world", "id": "anyone" }] })),
    );
    assert_eq!(status, 400);

    // Interoperation: what HTTP wrote, a ZooKeeper client reads, and back.
    let mut zk = Raw::connect(c.client, 4000);
    let f = zk.call(1, 4, Jute::default().str("/many/c007").bool(false));
    assert_eq!(f.err, 0);
    zk.call(2, 1, Jute::default().str("/from-zk").buf(Some(b"hello")).open_acl().int(0));
    assert_eq!(h.ok("GET", "/api/v1/node?path=/from-zk", t, None)["data_utf8"], "hello");

    // Delete: version checked, not-empty refused, recursive.
    let (status, v) = h.send("DELETE", "/api/v1/node?path=/many", Some(t), None);
    assert_eq!((status, v["code"].as_str()), (409, Some("not_empty")));
    let (status, _) = h.send("DELETE", "/api/v1/node?path=/from-zk&version=5", Some(t), None);
    assert_eq!(status, 409);
    h.ok("DELETE", "/api/v1/node?path=/from-zk&version=0", t, None);
    let v = h.ok("DELETE", "/api/v1/node?path=/many&recursive=true", t, None);
    assert_eq!(v["deleted"], 251);
    let (status, _) = h.send("GET", "/api/v1/node?path=/many", Some(t), None);
    assert_eq!(status, 404);
}

#[test]
fn scopes_revocation_and_what_identity_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let h = Http::new(&c);
    let admin = c.token();
    let (_, reader) = new_token(&h, admin, "reader", &["read"]);
    let (writer_id, writer) = new_token(&h, admin, "writer", &["write"]);

    h.ok("GET", "/api/v1/node?path=/", &reader, None);
    let (status, v) = h.send("POST", "/api/v1/node", Some(&reader), Some(json!({ "path": "/r" })));
    assert_eq!((status, v["code"].as_str()), (403, Some("insufficient_scope")), "{v}");
    h.ok("POST", "/api/v1/node", &writer, Some(json!({ "path": "/w" })));
    let (status, _) = h.send("GET", "/api/v1/tokens", Some(&writer), None);
    assert_eq!(status, 403);
    let (status, _) =
        h.send("POST", "/api/v1/tokens", Some(&writer), Some(json!({ "name": "x", "scopes": ["admin"] })));
    assert_eq!(status, 403);

    let list = h.ok("GET", "/api/v1/tokens", admin, None);
    let text = list.to_string();
    assert!(!text.contains(&writer) && !text.contains(admin), "secrets must never be listed");
    assert_eq!(list.as_array().unwrap().len(), 3);

    // Revoked: refused at once.
    let (status, _) = h.send("DELETE", &format!("/api/v1/tokens/{writer_id}"), Some(admin), None);
    assert_eq!(status, 204);
    let (status, v) = h.send("POST", "/api/v1/node", Some(&writer), Some(json!({ "path": "/w2" })));
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
    let (status, _) = h.send("DELETE", &format!("/api/v1/tokens/{writer_id}"), Some(admin), None);
    assert_eq!(status, 404);
    let (status, _) = h.send("POST", "/api/v1/tokens", Some(admin), Some(json!({ "name": "x", "scopes": ["root"] })));
    assert_eq!(status, 400);

    // A node only 10.0.0.1 may change: a forwarded header does not make a
    // request come from there.
    let body = json!({ "path": "/locked", "acl": [{ "perms": "cdrwa", "scheme": "ip", "id": "10.0.0.1" }] });
    h.ok("POST", "/api/v1/node", admin, Some(body));
    let (_, writer2) = new_token(&h, admin, "writer2", &["write"]);
    let url = format!("{}/api/v1/node", c.api());
    let mut resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .put(&url)
        .header("authorization", &format!("Bearer {writer2}"))
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-real-ip", "10.0.0.1")
        .send_json(json!({ "path": "/locked", "data": "x" }))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "{}", resp.body_mut().read_to_string().unwrap());

    // Oversized bodies are refused: a declared length over the limit before
    // any of the body is sent, a streamed one once it passes the limit.
    // (Over raw TCP: a client that keeps writing a body the server refused
    // gets a broken pipe instead of the answer.)
    let limit = 4 << 20;
    let head = |framing: &str| {
        format!(
            "POST /api/v1/node HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\n\
             content-type: application/json\r\n{framing}\r\n\r\n"
        )
    };
    let declared = raw_http(c.http, head(&format!("content-length: {}", limit + 1)).as_bytes());
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let mut streamed = head("transfer-encoding: chunked").into_bytes();
    streamed.extend_from_slice(format!("{:x}\r\n", limit + 1).as_bytes());
    streamed.extend(std::iter::repeat_n(b' ', limit + 1));
    streamed.extend_from_slice(b"\r\n0\r\n\r\n");
    let streamed = raw_http(c.http, &streamed);
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    h.ok("GET", "/api/v1/node?path=/", admin, None);

    // CORS stays closed.
    let mut resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&format!("{}/api/v1/node?path=/", c.api()))
        .header("origin", "http://evil.example")
        .header("authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let _ = resp.body_mut().read_to_string();
}

#[test]
fn search_export_import_and_who_am_i() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("http_export_max_nodes", "50"), ("extended_types", "true")]);
    let h = Http::new(&c);
    let admin = c.token();
    let (_, reader) = new_token(&h, admin, "viewer", &["read"]);
    let me = h.ok("GET", "/api/v1/whoami", &reader, None);
    assert_eq!((me["token"]["name"].as_str(), me["allows"].clone()), (Some("viewer"), json!(["read"])));
    let me = h.ok("GET", "/api/v1/whoami", admin, None);
    assert_eq!(me["allows"], json!(["read", "write", "plugin", "admin"]));

    // A subtree with text, binary and null data, a container, a TTL node
    // and an ACL, and an ephemeral that an export leaves out.
    let create = |path: &str, extra: Value| {
        let mut body = json!({ "path": path });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        h.ok("POST", "/api/v1/node", admin, Some(body));
    };
    create("/svc", json!({ "data": "root" }));
    create("/svc/pay", json!({ "data": "{\"port\": 1}" }));
    create("/svc/pay/i-1", json!({ "data_base64": "AAEC/w==" }));
    create("/svc/pay/i-2", json!({}));
    create("/svc/payroll", json!({ "mode": "container" }));
    create(
        "/svc/search",
        json!({ "mode": "ttl", "ttl_ms": 60000, "acl": [{ "perms": "cdrwa", "scheme": "world", "id": "anyone" }] }),
    );
    let session = h.ok("POST", "/api/v1/sessions", admin, Some(json!({ "timeout_ms": 10000 })))["id"].clone();
    create("/svc/pay/lease", json!({ "mode": "ephemeral", "session": session }));

    // Search by path prefix: only matching branches, in pre-order.
    let found = h.ok("GET", "/api/v1/search?prefix=/svc/pay", &reader, None);
    let paths: Vec<&str> = found["matches"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/svc/pay", "/svc/pay/i-1", "/svc/pay/i-2", "/svc/pay/lease", "/svc/payroll"]);
    assert_eq!(found["truncated"], false);
    let found = h.ok("GET", "/api/v1/search?prefix=/svc/pay/&limit=2", &reader, None);
    let paths: Vec<&str> = found["matches"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!((paths, found["truncated"].as_bool()), (vec!["/svc/pay/i-1", "/svc/pay/i-2"], Some(true)));
    let (status, v) = h.send("GET", "/api/v1/search?path=/nope", Some(&reader), None);
    assert_eq!((status, v["code"].as_str()), (404, Some("no_node")));

    // Export: complete, parents first, ephemerals left out and named.
    let export = h.ok("GET", "/api/v1/export?path=/svc", &reader, None);
    let nodes = export["nodes"].as_array().unwrap();
    let rel: Vec<&str> = nodes.iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert_eq!(rel, ["", "/pay", "/pay/i-1", "/pay/i-2", "/payroll", "/search"]);
    assert_eq!(export["skipped_ephemerals"], json!(["/svc/pay/lease"]));
    assert_eq!((nodes[2]["data_base64"].as_str(), nodes[3].get("data")), (Some("AAEC/w=="), None));
    assert_eq!((nodes[4]["mode"].as_str(), nodes[5]["mode"].as_str()), (Some("container"), Some("ttl")));
    assert_eq!(nodes[5]["ttl_ms"], 60000);
    // world:anyone grants the reader ADMIN on these nodes, so their ACLs
    // are exported.
    assert_eq!(nodes[5]["acl"][0]["perms"], "cdrwa");

    // Import under another root, then the same again: the second stops at
    // the first node that exists and creates nothing of its batch.
    let imported = h.ok("POST", "/api/v1/import", admin, Some(json!({ "path": "/copy", "nodes": export["nodes"] })));
    assert_eq!(imported["created"], 6);
    let i1 = h.ok("GET", "/api/v1/node?path=/copy/pay/i-1", admin, None);
    assert_eq!(i1["data_base64"], "AAEC/w==");
    assert_eq!(h.ok("GET", "/api/v1/node?path=/copy/pay/i-2", admin, None)["data_base64"], Value::Null);
    assert_eq!(h.ok("GET", "/api/v1/node?path=/copy", admin, None)["data_utf8"], "root");
    let (status, v) =
        h.send("POST", "/api/v1/import", Some(admin), Some(json!({ "path": "/copy", "nodes": export["nodes"] })));
    assert_eq!((status, v["code"].as_str()), (409, Some("import_stopped")), "{v}");
    assert_eq!((v["details"]["failed_path"].as_str(), v["details"]["created"].as_u64()), (Some("/copy/pay"), Some(0)));
    let (status, _) = h.send("POST", "/api/v1/import", Some(&reader), Some(json!({ "path": "/x", "nodes": [] })));
    assert_eq!(status, 403);

    // Digest ids are masked in an export without ADMIN, and an import
    // refuses them; an admin's export carries them whole.
    let acl = json!([{ "perms": "r", "scheme": "world", "id": "anyone" },
                     { "perms": "cdrwa", "scheme": "digest", "id": "ops:cGFzc3dvcmRoYXNo" }]);
    create("/vault", json!({ "data": "secret", "acl": acl }));
    let masked = h.ok("GET", "/api/v1/export?path=/vault", &reader, None);
    assert_eq!(
        (masked["nodes"][0]["acl_masked"].as_bool(), masked["nodes"][0]["acl"][1]["id"].as_str()),
        (Some(true), Some("ops:x"))
    );
    let (status, v) =
        h.send("POST", "/api/v1/import", Some(admin), Some(json!({ "path": "/vault2", "nodes": masked["nodes"] })));
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("masked"), "{v}");
    let whole = h.ok("GET", "/api/v1/export?path=/vault", admin, None);
    assert_eq!(whole["nodes"][0].get("acl_masked"), None);
    h.ok("POST", "/api/v1/import", admin, Some(json!({ "path": "/vault2", "nodes": whole["nodes"] })));
    let copied = h.ok("GET", "/api/v1/acl?path=/vault2", admin, None);
    assert_eq!(copied["acl"], acl);

    // An export larger than http_export_max_nodes is refused whole.
    let many: Vec<Value> = (0..60).map(|i| json!({ "path": format!("/n{i:02}") })).collect();
    h.ok("POST", "/api/v1/import", admin, Some(json!({ "path": "/many", "nodes": many })));
    assert_eq!(h.ok("GET", "/api/v1/children?path=/many", admin, None)["total"], 60);
    let (status, v) = h.send("GET", "/api/v1/export?path=/many", Some(admin), None);
    assert_eq!((status, v["code"].as_str()), (413, Some("too_many_nodes")), "{v}");

    // Connections: a raw ZooKeeper client shows up with its session.
    let raw = Raw::connect(c.client, 10_000);
    let conns = h.ok("GET", "/api/v1/connections", &reader, None);
    let session = format!("0x{:x}", raw.session);
    assert!(conns.as_array().unwrap().iter().any(|x| x["session"] == session.as_str()), "{conns}");
}

#[test]
fn http_sessions_own_ephemerals() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let h = Http::new(&c);
    let t = c.token();
    let s = h.ok("POST", "/api/v1/sessions", t, Some(json!({ "timeout_ms": 800 })));
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["timeout_ms"], 800);
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/lease", "mode": "ephemeral", "session": id })));
    let (status, v) = h.send("POST", "/api/v1/node", Some(t), Some(json!({ "path": "/orphan", "mode": "ephemeral" })));
    assert_eq!(status, 400, "an ephemeral needs a session: {v}");

    // Renewed, it lives past its timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1600) {
        let (status, _) = h.send("PUT", &format!("/api/v1/sessions/{id}"), Some(t), None);
        assert_eq!(status, 204);
        std::thread::sleep(Duration::from_millis(150));
    }
    h.ok("GET", "/api/v1/node?path=/lease", t, None);
    let listed = h.ok("GET", "/api/v1/sessions", t, None);
    let mine = listed.as_array().unwrap().iter().find(|x| x["id"] == id.as_str()).expect("listed").clone();
    assert_eq!((mine["kind"].as_str(), mine["ephemerals"].clone()), (Some("http"), json!(["/lease"])));

    // Not renewed, it expires and takes its ephemeral along.
    assert!(eventually(Duration::from_secs(5), || h.send("GET", "/api/v1/node?path=/lease", Some(t), None).0 == 404));
    let (status, _) = h.send("PUT", &format!("/api/v1/sessions/{id}"), Some(t), None);
    assert_eq!(status, 410);

    // Closed explicitly.
    let s = h.ok("POST", "/api/v1/sessions", t, Some(json!({ "timeout_ms": 4000 })));
    let id = s["id"].as_str().unwrap();
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/lease2", "mode": "ephemeral", "session": id })));
    let (status, _) = h.send("DELETE", &format!("/api/v1/sessions/{id}"), Some(t), None);
    assert_eq!(status, 204);
    assert_eq!(h.send("GET", "/api/v1/node?path=/lease2", Some(t), None).0, 404);

    // A ZooKeeper client's session is not the API's to renew or close.
    let zk = Raw::connect(c.client, 4000);
    let zk_id = format!("0x{:x}", zk.session);
    assert_eq!(h.send("PUT", &format!("/api/v1/sessions/{zk_id}"), Some(t), None).0, 400);
    assert_eq!(h.send("DELETE", &format!("/api/v1/sessions/{zk_id}"), Some(t), None).0, 400);
}

/// Reads server-sent events until `n` data lines arrived.
fn sse(c: &Corral, query: &str, n: usize) -> std::sync::mpsc::Receiver<(String, Value)> {
    sse_as(c, c.token(), query, n)
}

fn sse_as(c: &Corral, token: &str, query: &str, n: usize) -> std::sync::mpsc::Receiver<(String, Value)> {
    let url = format!("{}/api/v1/events?{query}", c.api());
    let auth = format!("Bearer {token}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut resp = ureq::get(&url).header("authorization", &auth).call().unwrap();
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut event = String::new();
        let mut sent = 0;
        for line in reader.lines().map_while(Result::ok) {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                let _ = tx.send((event.clone(), serde_json::from_str(d.trim()).unwrap()));
                sent += 1;
                if sent >= n {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn the_event_stream_shows_a_token_only_the_nodes_it_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let h = Http::new(&c);
    let admin = c.token();
    let (_, reader) = new_token(&h, admin, "reader", &["read"]);
    let before = h.ok("POST", "/api/v1/node", admin, Some(json!({ "path": "/open" })))["zxid"].as_i64().unwrap();
    let digest_only = json!([{ "perms": "cdrwa", "scheme": "digest", "id": "ops:cGFzc3dvcmRoYXNo" }]);
    h.ok("POST", "/api/v1/node", admin, Some(json!({ "path": "/secret", "acl": digest_only })));

    // Live: the reader hears of /open and never of /secret.
    let live = sse_as(&c, &reader, "path=/", 2);
    let (event, start) = live.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event, "start", "{start}");
    h.ok("PUT", "/api/v1/node", admin, Some(json!({ "path": "/secret", "data": "s3cr3t" })));
    h.ok("PUT", "/api/v1/node", admin, Some(json!({ "path": "/open", "data": "hello" })));
    let (_, first) = live.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((first["type"].as_str(), first["path"].as_str()), (Some("data"), Some("/open")), "{first}");
    // The admin (a superuser) hears of both.
    let all = sse(&c, &format!("path=/&from_zxid={before}"), 3);
    let paths: Vec<String> = (0..3)
        .map(|_| all.recv_timeout(Duration::from_secs(10)).unwrap().1["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(paths.contains(&"/secret".to_owned()), "{paths:?}");

    // Replayed history is filtered the same way.
    let replay = sse_as(&c, &reader, &format!("path=/&from_zxid={before}"), 10);
    let mut seen = Vec::new();
    while let Ok((_, v)) = replay.recv_timeout(Duration::from_secs(2)) {
        seen.push(v["path"].as_str().unwrap_or_default().to_owned());
    }
    assert!(seen.contains(&"/open".to_owned()) && !seen.iter().any(|p| p == "/secret"), "{seen:?}");
}

#[test]
fn the_event_stream_replays_history_and_reports_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start_with(dir.path(), &[("event_history_entries", "10")]);
    let h = Http::new(&c);
    let t = c.token();
    let first = h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/s" })))["zxid"].as_i64().unwrap();
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/s/a" })));
    h.ok("POST", "/api/v1/node", t, Some(json!({ "path": "/other" })));

    // From just before /s/a: its two events, then live ones, under /s only.
    let rx = sse(&c, &format!("path=/s&from_zxid={first}"), 4);
    let got: Vec<_> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
    assert_eq!(got[0].1["type"], "created");
    assert_eq!(got[0].1["path"], "/s/a");
    assert_eq!((got[1].1["type"].as_str(), got[1].1["path"].as_str()), (Some("children"), Some("/s")));
    std::thread::sleep(Duration::from_millis(200));
    h.ok("PUT", "/api/v1/node", t, Some(json!({ "path": "/other", "data": "ignored" })));
    h.ok("PUT", "/api/v1/node", t, Some(json!({ "path": "/s/a", "data": "x" })));
    let live = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (live.0.as_str(), live.1["type"].as_str(), live.1["path"].as_str()),
        ("change", Some("data"), Some("/s/a"))
    );

    // Past the kept history: a gap comes first.
    for i in 0..20 {
        h.ok("POST", "/api/v1/node", t, Some(json!({ "path": format!("/s/n{i}") })));
    }
    let rx = sse(&c, "path=/&from_zxid=1", 1);
    let (event, v) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event, "gap", "{v}");
    assert!(v["oldest_held"].as_u64().unwrap() > 2);
}

#[test]
fn cluster_view_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    let h = Http::new(&c);
    let v = h.ok("GET", "/api/v1/cluster", c.token(), None);
    assert_eq!((v["node_id"].as_u64(), v["state"].as_str(), v["leader"].as_u64()), (Some(1), Some("leader"), Some(1)));
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    assert!(v["applied_index"].as_u64().unwrap() >= 2);
    let (_, reader) = new_token(&h, c.token(), "metrics", &["read"]);
    let (status, text) = h.send("GET", "/metrics", Some(&reader), None);
    assert_eq!(status, 200);
    assert!(text.as_str().unwrap().contains("corral_raft_term"), "{text}");
}
