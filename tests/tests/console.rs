//! The web console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, with fantoccini) against the real binary, while
//! kazoo, an unmodified ZooKeeper client, makes the other client's changes.
//! The tests save screenshots of the main views as `docs/console-*.png`.
//!
//! Needs `chromium`, `chromium-driver` (Debian) and the tests' Python venv
//! with kazoo; `tests/run.sh` installs them.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::{Corral, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// chromedriver and a headless Chromium session. [`Browser::quit`] ends
/// the session (Chromium exits and chromedriver removes its profile);
/// dropping it, on a failed assertion too, kills chromedriver's process
/// group, which holds the Chromium processes it started. (Killing
/// chromedriver alone left them running, orphaned, using CPU for the rest of
/// the test command.)
struct Browser {
    driver: Child,
    client: Client,
    /// Chromium's profile and temporary files (its TMPDIR): removed after
    /// the processes are gone.
    _tmp: tempfile::TempDir,
}

impl Browser {
    async fn quit(self) {
        self.client.clone().close().await.expect("the WebDriver session ends");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

async fn browser() -> Browser {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("TMPDIR", tmp.path())
        // A process group of its own, which the browser joins: see Drop.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium-driver; tests/run.sh does)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1366,860",
        "--force-prefers-reduced-motion",
    ];
    let caps = json!({ "goog:chromeOptions": { "args": args, "binary": "/usr/bin/chromium" } });
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://{addr}"))
        .await
        .expect("a Chromium session");
    Browser { driver, client, _tmp: tmp }
}

/// An unmodified kazoo client doing `args` (tests/tools/kazoo_do.py).
fn kazoo(c: &Corral, args: &[&str]) {
    let python = repo().join("tests/.work/venv/bin/python");
    let out = Command::new(&python)
        .arg(repo().join("tests/tools/kazoo_do.py"))
        .arg(c.client.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run.sh creates the venv with kazoo)", python.display()));
    assert!(out.status.success(), "kazoo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn api(c: &Corral, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", c.api());
    let auth = format!("Bearer {}", c.token());
    let resp = match (method, body) {
        ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
        ("POST", Some(b)) => agent.post(&url).header("authorization", &auth).send_json(b),
        ("PUT", Some(b)) => agent.put(&url).header("authorization", &auth).send_json(b),
        _ => unreachable!(),
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn kazoo_spawn(c: &Corral, args: &[&str]) -> Child {
    Command::new(repo().join("tests/.work/venv/bin/python"))
        .arg(repo().join("tests/tools/kazoo_do.py"))
        .arg(c.client.to_string())
        .args(args)
        .spawn()
        .expect("the tests' venv")
}

/// Runs `script` (a function body) in the page until it returns true.
async fn until(b: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.execute(script, vec![]).await {
            Ok(Value::Bool(true)) => return,
            Ok(_) => {}
            Err(e) => panic!("{what}: the script failed: {e}"),
        }
        if Instant::now() > deadline {
            let shot = repo().join("target/console-failure.png");
            if let Ok(png) = b.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            let text: String = b
                .execute("return document.body.innerText", vec![])
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            panic!("timed out waiting for {what}; screenshot in {}; page text:\n{text}", shot.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Replaces an input's value, as a user who selected all and typed.
async fn fill(b: &Client, css: &str, text: &str) {
    let e = b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

async fn screenshot(b: &Client, name: &str) {
    // Let charts and fades settle; toasts would cover the view.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.execute("document.querySelectorAll('.toast').forEach(t => t.remove())", vec![]).await.unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(repo().join(format!("docs/console-{name}.png")), png).unwrap();
}

/// A script: does the events view show a `kind` change of `path`?
fn has_event(kind: &str, path: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#events tr')]\
         .some(r => r.cells.length === 4 && r.cells[2].textContent === '{kind}' && r.cells[3].textContent === '{path}')"
    )
}

fn row(path: &str) -> String {
    format!("#tree .row[data-path=\"{path}\"]")
}

async fn log_in(b: &Client, c: &Corral, token: &str) {
    b.goto(&c.api()).await.unwrap();
    until(b, "the login form", "return !document.getElementById('login').hidden").await;
    fill(b, "#login-token", token).await;
    click(b, "#login-submit").await;
    until(b, "the console after logging in", "return !document.getElementById('app').hidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    kazoo(&c, &["tree"]);
    let br = browser().await;
    let b = &br.client;

    // Log in: a wrong token is refused with a message, the printed admin
    // token is accepted.
    b.goto(&c.api()).await.unwrap();
    until(b, "the login form", "return !document.getElementById('login').hidden").await;
    screenshot(b, "login").await;
    fill(b, "#login-token", "corral_wrong").await;
    click(b, "#login-submit").await;
    until(b, "the refusal", "return document.getElementById('login-error').textContent.includes('unknown or revoked')")
        .await;
    fill(b, "#login-token", c.token()).await;
    click(b, "#login-submit").await;
    until(b, "the tree", "return !document.getElementById('app').hidden").await;

    // Browse the tree kazoo made, and open a JSON node.
    until(b, "/app in the tree", &format!("return !!document.querySelector('{}')", row("/app"))).await;
    click(b, &row("/app")).await;
    until(b, "/app's children", &format!("return !!document.querySelector('{}')", row("/app/config"))).await;
    click(b, &row("/app/config")).await;
    until(b, "/app/config's data", "return document.getElementById('data')?.textContent.includes('checkout_v2')").await;
    assert!(text(b, "#data-kind").await.starts_with("JSON (valid) · "));
    assert!(text(b, "#data").await.contains("\"max_connections\": 64"), "pretty JSON");
    assert_eq!(text(b, "#detail-version").await, "version 0");
    let stat = text(b, "#stat").await;
    assert!(stat.contains("ctime") && stat.contains("UTC") && stat.contains("ago"), "{stat}");
    assert!(text(b, "#acl").await.contains("world anyone cdrwa"));
    screenshot(b, "tree").await;

    // Edit it: the version goes from 0 to 1, and the server has the data.
    click(b, "#edit").await;
    fill(b, "#editor", r#"{"max_connections": 128}"#).await;
    click(b, "#save").await;
    until(b, "version 1", "return document.getElementById('detail-version')?.textContent === 'version 1'").await;
    let (_, node) = api(&c, "GET", "/api/v1/node?path=/app/config", None);
    assert_eq!(node["data_utf8"], r#"{"max_connections": 128}"#);
    // Invalid JSON is not saved.
    click(b, "#edit").await;
    fill(b, "#editor", "{not json").await;
    click(b, "#save").await;
    until(b, "the JSON error", "return document.getElementById('edit-box').textContent.includes('not valid JSON')")
        .await;
    let (_, node) = api(&c, "GET", "/api/v1/node?path=/app/config", None);
    assert_eq!(node["stat"]["version"], 1);

    // Another client's change appears live, with its zxid.
    kazoo(&c, &["set", "/app/config", r#"{"max_connections": 256}"#]);
    until(
        b,
        "the live change",
        "return document.getElementById('edit-box')?.textContent.includes('Someone else changed')",
    )
    .await;
    click(b, "#edit-box .actions button:last-child").await; // Cancel
    kazoo(&c, &["set", "/app/config", r#"{"max_connections": 300}"#]);
    until(
        b,
        "the change shown",
        "return document.getElementById('changed')?.textContent.includes('another client') \
         && document.getElementById('detail-version').textContent === 'version 3' \
         && document.getElementById('data').textContent.includes('300')",
    )
    .await;

    // A version conflict: someone writes while we edit. It is shown, and
    // nothing is overwritten until we say so.
    click(b, "#edit").await;
    fill(b, "#editor", r#"{"max_connections": 512}"#).await;
    kazoo(&c, &["set", "/app/config", r#"{"max_connections": 1000}"#]);
    click(b, "#save").await;
    until(b, "the conflict", "return document.getElementById('conflict')?.textContent.includes('it is now version 4')")
        .await;
    assert!(text(b, "#theirs").await.contains("1000"));
    let (_, node) = api(&c, "GET", "/api/v1/node?path=/app/config", None);
    assert_eq!(
        (node["stat"]["version"].as_i64(), node["data_utf8"].as_str()),
        (Some(4), Some(r#"{"max_connections": 1000}"#))
    );
    screenshot(b, "conflict").await;
    click(b, "#overwrite").await;
    until(b, "version 5", "return document.getElementById('detail-version')?.textContent === 'version 5'").await;
    let (_, node) = api(&c, "GET", "/api/v1/node?path=/app/config", None);
    assert_eq!(node["data_utf8"], r#"{"max_connections": 512}"#);

    // Binary data is shown as hex.
    click(b, &row("/app/raw")).await;
    until(b, "the hex dump", "return document.getElementById('data')?.textContent.startsWith('00000000  00 01 02')")
        .await;

    // Create an ephemeral: it belongs to the console's own session.
    click(b, &row("/app")).await;
    until(b, "/app selected", "return document.getElementById('detail-path')?.textContent === '/app'").await;
    click(b, "#create").await;
    fill(b, "#new-name", "console-lease").await;
    b.find(Locator::Css("#new-mode option[value=ephemeral]")).await.unwrap().click().await.unwrap();
    fill(b, "#new-data", "held by the console").await;
    click(b, "#dialog-ok").await;
    until(b, "the new ephemeral", "return document.getElementById('owner')?.textContent.startsWith('0x')").await;
    let owner = text(b, "#owner").await;
    let (_, sessions) = api(&c, "GET", "/api/v1/sessions", None);
    let console_session = sessions.as_array().unwrap().iter().find(|s| s["id"] == owner.as_str()).expect("its session");
    assert_eq!(console_session["kind"], "http");
    assert_eq!(console_session["ephemerals"], json!(["/app/console-lease"]));

    // Copy a subtree (export, then import elsewhere), then delete the copy
    // recursively, with confirmation.
    click(b, &row("/app/services")).await;
    until(b, "/app/services", "return document.getElementById('detail-path')?.textContent === '/app/services'").await;
    b.find(Locator::XPath("//button[text()='Copy to…']")).await.unwrap().click().await.unwrap();
    fill(b, "#copy-dest", "/services-copy").await;
    click(b, "#dialog-ok").await;
    until(b, "the copy", "return document.getElementById('detail-path')?.textContent === '/services-copy'").await;
    let (status, node) = api(&c, "GET", "/api/v1/node?path=/services-copy/payments/instance-2", None);
    assert_eq!((status, node["data_utf8"].as_str()), (200, Some(r#"{"host": "10.0.0.2", "port": 8082}"#)));
    click(b, "#delete").await;
    fill(b, "#confirm-name", "wrong").await;
    click(b, "#dialog-ok").await;
    until(
        b,
        "the refusal to delete",
        "return document.querySelector('#dialog .error')?.textContent.includes('to confirm')",
    )
    .await;
    fill(b, "#confirm-name", "services-copy").await;
    click(b, "#dialog-ok").await;
    until(b, "the parent selected", "return document.getElementById('detail-path')?.textContent === '/'").await;
    assert_eq!(api(&c, "GET", "/api/v1/node?path=/services-copy", None).0, 404);

    // The live events view shows committed changes with zxid and kind.
    b.goto(&format!("{}#/events", c.api())).await.unwrap();
    until(b, "the events", "return document.querySelectorAll('#events tr').length >= 5").await;
    until(b, "the recursive delete's events", &has_event("deleted", "/services-copy/payments/instance-1")).await;
    // Paused, it shows nothing new; resumed, it replays what it missed.
    click(b, "#events-pause").await;
    until(b, "paused", "return document.getElementById('live-badge').textContent.includes('paused')").await;
    kazoo(&c, &["set", "/app/motd", "changed while paused"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = b.execute(&has_event("data", "/app/motd"), vec![]).await.unwrap();
    assert_eq!(seen, Value::Bool(false), "a paused stream shows nothing new");
    click(b, "#events-pause").await;
    until(b, "the missed change", &has_event("data", "/app/motd")).await;
    screenshot(b, "events").await;

    // Sessions and connections, and the cluster with its live charts.
    b.goto(&format!("{}#/sessions", c.api())).await.unwrap();
    until(
        b,
        "the console's session",
        "return document.getElementById('sessions').textContent.includes('this console')",
    )
    .await;
    screenshot(b, "sessions").await;
    let mut load = kazoo_spawn(&c, &["load", "8"]);
    b.goto(&format!("{}#/cluster", c.api())).await.unwrap();
    until(b, "the cluster view", "return document.getElementById('cluster-state')?.textContent.includes('leader')")
        .await;
    until(
        b,
        "requests in the live chart",
        "return /requests [1-9]/.test(document.getElementById('chart-throughput').getAttribute('aria-label'))",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    screenshot(b, "cluster").await;
    assert!(load.wait().unwrap().success());

    // Plugins: deploy two versions of a .wasm file, roll back, disable.
    b.goto(&format!("{}#/plugins", c.api())).await.unwrap();
    for version in ["versioned_v1", "versioned_v2"] {
        click(b, "#deploy").await;
        let file = repo().join(format!("plugins/target/components/current/{version}.wasm"));
        let file =
            file.canonicalize().unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", file.display()));
        b.find(Locator::Css("#deploy-file")).await.unwrap().send_keys(&file.display().to_string()).await.unwrap();
        fill(b, "#deploy-name", "versioned").await;
        click(b, "#dialog-ok").await;
        until(
            b,
            "the deploy",
            &format!("return !!document.querySelector('.toast')?.textContent.includes('Deployed versioned')"),
        )
        .await;
        b.execute("document.querySelectorAll('.toast').forEach(t => t.remove())", vec![]).await.unwrap();
    }
    click(b, "#plugins tr[data-plugin=versioned] a").await;
    until(
        b,
        "two versions, the second active",
        "return document.querySelectorAll('#versions tr').length === 3 \
        && document.querySelectorAll('#versions tr')[2].textContent.startsWith('active')",
    )
    .await;
    screenshot(b, "plugins").await;
    click(b, "#rollback").await;
    until(
        b,
        "the first version active",
        "return document.querySelectorAll('#versions tr')[1]?.textContent.startsWith('active')",
    )
    .await;
    let (_, p) = api(&c, "GET", "/api/v1/plugins/versioned", None);
    assert_eq!(p["active"], p["versions"][0]["sha256"], "{p}");
    click(b, "#toggle").await;
    click(b, "#dialog-ok").await;
    until(
        b,
        "disabled",
        "return document.querySelector('#plugins tr[data-plugin=versioned]')?.textContent.endsWith('disabled')",
    )
    .await;
    let (_, p) = api(&c, "GET", "/api/v1/plugins/versioned", None);
    assert_eq!(p["disabled"], true);
    let (status, v) = api(&c, "POST", "/api/v1/plugins/versioned/call", Some(json!({})));
    assert_eq!((status, v["code"].as_str()), (422, Some("plugin_trap")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("disabled by an operator"), "{v}");
    click(b, "#toggle").await;
    until(
        b,
        "enabled",
        "return document.querySelector('#plugins tr[data-plugin=versioned]')?.textContent.endsWith('enabled')",
    )
    .await;

    // A node with 100,000 children: paged, virtually scrolled, searchable.
    let children: Vec<Value> = (0..100_000).map(|i| json!({ "path": format!("/c{i:05}") })).collect();
    let started = Instant::now();
    let (status, v) = api(&c, "POST", "/api/v1/import", Some(json!({ "path": "/big", "nodes": children })));
    assert_eq!(status, 200, "{v}");
    eprintln!("imported 100k children in {:?}", started.elapsed());
    b.goto(&format!("{}#/tree?path=/big", c.api())).await.unwrap();
    until(b, "/big", "return document.getElementById('detail-path')?.textContent === '/big'").await;
    click(b, &row("/big")).await;
    until(b, "the first page", &format!("return !!document.querySelector('{}')", row("/big/c00000"))).await;
    let started = Instant::now();
    until(
        b,
        "the last child after scrolling to the end",
        &format!(
            "const l = document.getElementById('tree'); l.scrollTop = l.scrollHeight; \
             return !!document.querySelector('{}')",
            row("/big/c99999")
        ),
    )
    .await;
    eprintln!("scrolled through 100k children in {:?}", started.elapsed());
    let rendered = b.execute("return document.querySelectorAll('#tree .row').length", vec![]).await.unwrap();
    assert!(rendered.as_u64().unwrap() < 200, "only the rows in view are in the page: {rendered}");
    fill(b, "#search-prefix", "/big/c0999").await;
    click(b, "form.toolbar button[type=submit]").await;
    until(b, "10 matches", "return document.querySelectorAll('#search-results .row[data-path]').length === 10").await;
    click(b, "#search-results .row[data-path=\"/big/c09995\"]").await;
    until(b, "the match opened", "return document.getElementById('detail-path')?.textContent === '/big/c09995'").await;
    until(b, "the match in the tree", &format!("return !!document.querySelector('{}.selected')", row("/big/c09995")))
        .await;

    // A narrow window: the tree above the node, both usable.
    b.set_window_size(420, 860).await.unwrap();
    b.goto(&format!("{}#/tree?path=/app/config", c.api())).await.unwrap();
    until(b, "/app/config", "return document.getElementById('data')?.textContent.includes('max_connections')").await;
    let stacked = b
        .execute(
            "const t = document.getElementById('tree').getBoundingClientRect(); \
             const d = document.getElementById('detail').getBoundingClientRect(); \
             return t.bottom <= d.top && d.width > 300 && t.width > 300",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stacked, Value::Bool(true), "tree and detail stack in a narrow window");
    screenshot(b, "narrow").await;
    br.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_gives_a_read_only_console() {
    let dir = tempfile::tempdir().unwrap();
    let c = Corral::start(dir.path());
    kazoo(&c, &["tree"]);
    let (status, t) = api(&c, "POST", "/api/v1/tokens", Some(json!({ "name": "viewer", "scopes": ["read"] })));
    assert_eq!(status, 201, "{t}");
    let br = browser().await;
    let b = &br.client;
    log_in(b, &c, t["token"].as_str().unwrap()).await;
    assert!(text(b, "#who").await.contains("read-only"));
    until(b, "/app", &format!("return !!document.querySelector('{}')", row("/app"))).await;
    click(b, &row("/app")).await;
    until(b, "/app/config", &format!("return !!document.querySelector('{}')", row("/app/config"))).await;
    click(b, &row("/app/config")).await;
    until(b, "/app/config", "return document.getElementById('data')?.textContent.includes('checkout_v2')").await;
    for control in ["#edit", "#create", "#delete", "#import"] {
        assert!(b.find(Locator::Css(control)).await.is_err(), "{control} is offered to a read token");
    }
    // Export is a read, and stays.
    assert!(b.find(Locator::Css("#export")).await.is_ok());
    // No session was opened for it: it cannot own ephemerals.
    let (_, sessions) = api(&c, "GET", "/api/v1/sessions", None);
    assert!(sessions.as_array().unwrap().iter().all(|s| s["kind"] != "http"), "{sessions}");
    b.goto(&format!("{}#/plugins", c.api())).await.unwrap();
    until(b, "the plugins view", "return !!document.getElementById('plugins')").await;
    assert!(b.find(Locator::Css("#deploy")).await.is_err());
    // Logging out forgets the token.
    click(b, "#logout").await;
    until(b, "the login form", "return !document.getElementById('login').hidden").await;
    let saved = b.execute("return sessionStorage.getItem('corral.token')", vec![]).await.unwrap();
    assert_eq!(saved, Value::Null);
    br.quit().await;
}
