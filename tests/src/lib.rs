//! Test harness for the cross-process tests: start the real `corral` binary,
//! kill it, restart it, and talk to it over raw sockets.
//!
//! The binary is `$TEST_CORRAL_BIN`, or `target/debug/corral` of this
//! workspace (the test command builds it first). Each server gets its own
//! data directory and free loopback ports, and writes its log next to its
//! data (`<dir>/node.log`), which a failing test prints.
//!
//! The raw client here encodes frames itself, byte by byte, independently of
//! Corral's own `proto` module, so protocol tests do not test the server's
//! encoder against itself.

pub mod checker;
pub mod cluster;
pub mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Settings every test server gets: short timers, so tests are quick.
pub const FAST: &[(&str, &str)] = &[
    ("tick_time_ms", "200"),
    ("session_check_ms", "50"),
    ("election_timeout_min_ms", "150"),
    ("election_timeout_max_ms", "300"),
    ("heartbeat_interval_ms", "50"),
    ("state_sync_interval_ms", "200"),
];

pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TEST_CORRAL_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/corral")
}

/// A free loopback port for a server to listen on. It is picked below the
/// kernel's ephemeral range (32768 and up), so that no outgoing connection
/// can take it between this check and the server's bind; random, so that
/// tests do not pick the same one.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(10_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One `corral serve` process.
pub struct Corral {
    child: Option<Child>,
    /// Lines of its stdout, while it starts.
    stdout: Option<mpsc::Receiver<String>>,
    pub dir: PathBuf,
    pub client: SocketAddr,
    pub http: SocketAddr,
    pub raft: SocketAddr,
    /// The bootstrap admin token, printed once when the cluster was created.
    pub admin_token: Option<String>,
    settings: Vec<(String, String)>,
    /// Extra environment (an `LD_PRELOAD` fault shim, faketime's settings).
    env: Vec<(String, String)>,
}

impl Corral {
    /// Starts a server on a fresh data directory inside `dir`.
    pub fn start(dir: &Path) -> Corral {
        Self::start_with(dir, &[])
    }

    /// Starts a server with extra configuration keys (on top of [`FAST`]).
    pub fn start_with(dir: &Path, extra: &[(&str, &str)]) -> Corral {
        let mut c = Self::configure(dir, extra);
        c.launch();
        c
    }

    /// A server with its own ports and data directory, not started yet.
    pub fn configure(dir: &Path, extra: &[(&str, &str)]) -> Corral {
        let mut settings: Vec<(String, String)> =
            FAST.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let addr = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (client, http, raft) = (addr(), addr(), addr());
        settings.push(("client_addr".into(), client.to_string()));
        settings.push(("http_addr".into(), http.to_string()));
        settings.push(("raft_addr".into(), raft.to_string()));
        Corral {
            child: None,
            stdout: None,
            dir: dir.to_path_buf(),
            client,
            http,
            raft,
            admin_token: None,
            settings,
            env: Vec::new(),
        }
    }

    /// Sets a configuration key for the next start.
    pub fn set(&mut self, key: &str, value: &str) {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.to_owned(), value.to_owned()));
    }

    /// Sets an environment variable for the next start.
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("serve").arg("--data-dir").arg(self.dir.join("data"));
        for (k, v) in &self.settings {
            cmd.env(format!("CORRAL_{}", k.to_uppercase()), v);
        }
        // A test's own RUST_LOG (set with `env`) wins over this default.
        cmd.env("RUST_LOG", "info,openraft=error");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdout(Stdio::piped()).stderr(log).stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.stdout = Some(rx);
    }

    /// Waits until the process started by [`Corral::spawn`] serves clients.
    pub fn wait_ready(&mut self) {
        let rx = self.stdout.take().expect("spawned");
        let mut child = self.child.take().expect("spawned");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("serving ZooKeeper clients") => break,
                Ok(line) if line.starts_with("corral: admin token: ") => {
                    self.admin_token = Some(line["corral: admin token: ".len()..].trim().to_owned());
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("corral exited with {status} during start-up:\n{}", self.log());
                    }
                    assert!(Instant::now() < deadline, "corral did not start in time:\n{}", self.log());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("corral closed stdout:\n{}", self.log()),
            }
        }
        self.child = Some(child);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "corral exited with {status} on SIGTERM:\n{}", self.log());
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("corral did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A four-letter word's answer.
    pub fn four(&self, word: &str) -> String {
        four_letter(self.client, word)
    }

    /// The admin API's base URL.
    pub fn api(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The bootstrap admin token.
    pub fn token(&self) -> &str {
        self.admin_token.as_deref().expect("this server created the cluster and printed its token")
    }

    /// GET on the HTTP port: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http_get_as(path, None)
    }

    /// GET on the HTTP port with a bearer token: (status, body).
    pub fn http_get_as(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// The `corral_digest` line of `mntr`.
    pub fn digest(&self) -> String {
        self.four("mntr").lines().find_map(|l| l.strip_prefix("corral_digest\t")).unwrap_or_default().to_owned()
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- corral log ({}) ----\n{}", self.dir.display(), self.log());
        }
    }
}

pub fn four_letter(addr: SocketAddr, word: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(word.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Jute encoding, written out by hand for the raw client.
#[derive(Default)]
pub struct Jute(pub Vec<u8>);

impl Jute {
    pub fn int(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn long(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(mut self, v: bool) -> Self {
        self.0.push(v as u8);
        self
    }
    pub fn buf(self, v: Option<&[u8]>) -> Self {
        match v {
            None => self.int(-1),
            Some(b) => {
                let mut s = self.int(b.len() as i32);
                s.0.extend_from_slice(b);
                s
            }
        }
    }
    pub fn str(self, v: &str) -> Self {
        self.buf(Some(v.as_bytes()))
    }
    /// The ACL `world:anyone:cdrwa`.
    pub fn open_acl(self) -> Self {
        self.int(1).int(31).str("world").str("anyone")
    }
}

/// A decoded reply: xid, zxid, err and the body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

/// A hand-driven ZooKeeper connection.
pub struct Raw {
    pub stream: TcpStream,
    pub session: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
}

impl Raw {
    pub fn tcp(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Connects and opens a new session with a 45-byte ConnectRequest.
    pub fn connect(addr: SocketAddr, timeout_ms: i32) -> Raw {
        Self::resume(addr, timeout_ms, 0, &[0; 16], 0).expect("session established")
    }

    /// Opens a new session like a real client does after a leader change:
    /// while the cluster elects, the server has no leader to open the
    /// session with and closes the connection, so it tries again for up to
    /// `within`.
    pub fn connect_once_led(addr: SocketAddr, timeout_ms: i32, within: Duration) -> Raw {
        let deadline = Instant::now() + within;
        loop {
            if let Some(raw) = Self::resume(addr, timeout_ms, 0, &[0; 16], 0) {
                return raw;
            }
            assert!(Instant::now() < deadline, "no session opened at {addr} within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects with a given session; `None` if the server refused it.
    pub fn resume(addr: SocketAddr, timeout_ms: i32, session: i64, password: &[u8], last_zxid: i64) -> Option<Raw> {
        let mut stream = Self::tcp(addr);
        let req = Jute::default().int(0).long(last_zxid).int(timeout_ms).long(session).buf(Some(password)).bool(false);
        send_frame(&mut stream, &req.0);
        let body = read_frame(&mut stream)?;
        assert_eq!(body.len(), 37, "ConnectResponse to a 45-byte request is 37 bytes");
        let timeout = i32::from_be_bytes(body[4..8].try_into().unwrap());
        let session = i64::from_be_bytes(body[8..16].try_into().unwrap());
        let password = body[20..36].to_vec();
        if timeout <= 0 {
            return None;
        }
        Some(Raw { stream, session, password, timeout_ms: timeout })
    }

    pub fn send(&mut self, xid: i32, opcode: i32, body: Jute) {
        let req = Jute::default().int(xid).int(opcode);
        let mut bytes = req.0;
        bytes.extend_from_slice(&body.0);
        send_frame(&mut self.stream, &bytes);
    }

    /// The next frame, or `None` when the server closed the connection.
    pub fn recv(&mut self) -> Option<Frame> {
        let b = read_frame(&mut self.stream)?;
        Some(Frame {
            xid: i32::from_be_bytes(b[0..4].try_into().unwrap()),
            zxid: i64::from_be_bytes(b[4..12].try_into().unwrap()),
            err: i32::from_be_bytes(b[12..16].try_into().unwrap()),
            body: b[16..].to_vec(),
        })
    }

    /// Sends a request and returns the next frame that is not a
    /// notification.
    pub fn call(&mut self, xid: i32, opcode: i32, body: Jute) -> Frame {
        self.send(xid, opcode, body);
        loop {
            let f = self.recv().expect("reply");
            if f.xid != -1 {
                return f;
            }
        }
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
            || matches!(self.stream.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

pub fn send_frame(s: &mut TcpStream, body: &[u8]) {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    s.write_all(&f).unwrap();
}

pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut b = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

/// Polls `f` until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
