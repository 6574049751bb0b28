//! `corral bench`: a ZooKeeper-protocol load generator.
//!
//! It speaks only the ZooKeeper protocol (through [`crate::client`]), so it
//! drives Corral and Apache ZooKeeper alike. Many sessions each keep a fixed
//! number of requests in flight; after a warm-up, it measures for a fixed
//! duration or op count, then prints throughput and latency percentiles and
//! writes them, with a latency CDF, to a JSON file.
//!
//! Workloads: `create`, `set`, `get`, `exists`, `children`, `multi` and
//! `mixed` (a read/write mix) measure request throughput; `watch` measures
//! fan-out (one change, N watching sessions, delivery latency); `churn`
//! measures session open/create-ephemeral/close cycles.
//!
//! Limits are explicit: loopback targets only, and bounded sessions,
//! durations, op counts and sizes, so a run always ends by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::proto::data::Acl;
use crate::proto::op;
use crate::proto::request::{CreateRequest, MultiOp, Request};

const MAX_SESSIONS: u32 = 20_000;
const MAX_INFLIGHT: u32 = 1_000;
const MAX_SECONDS: f64 = 3_600.0;
const MAX_OPS: u64 = 100_000_000;
const MAX_KEYS: u32 = 10_000_000;
const MAX_VALUE: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Create,
    Set,
    Get,
    Exists,
    Children,
    Multi,
    Mixed,
    Watch,
    Churn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeMode {
    Persistent,
    Ephemeral,
    Sequential,
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct BenchArgs {
    /// Servers to drive, comma-separated; sessions are spread over them.
    /// Loopback addresses only.
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    pub servers: Vec<SocketAddr>,
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: Workload,
    /// Concurrent sessions (connections).
    #[arg(long, default_value_t = 16)]
    pub sessions: u32,
    /// Requests each session keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub inflight: u32,
    /// Percentage of reads in the `mixed` workload.
    #[arg(long, default_value_t = 90)]
    pub read_pct: u8,
    /// Bytes of data per write.
    #[arg(long, default_value_t = 1024)]
    pub value_size: u32,
    /// Write JSON objects (`{"v":"xx…"}`, `--value-size` bytes) instead of
    /// raw bytes: for servers that validate JSON (a schema plugin).
    #[arg(long)]
    pub json_values: bool,
    /// Key space of set/get/exists/mixed/multi (znodes created up front);
    /// children of the node `children` lists.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u32,
    /// Znode mode of the `create` workload.
    #[arg(long, value_enum, default_value = "persistent")]
    pub mode: NodeMode,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured ops instead (still bounded by
    /// --duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Watching sessions of the `watch` workload.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: u32,
    /// Changes of the `watch` workload.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Parent of everything the bench creates.
    #[arg(long, default_value = "/bench")]
    pub prefix: String,
    #[arg(long, default_value_t = 30_000)]
    pub session_timeout_ms: i32,
    /// Write the result here as JSON.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// A name for this run in the result.
    #[arg(long)]
    pub label: Option<String>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Keep going when a connection breaks (a member failed): the session
    /// reconnects, with a new session, to the next server in the list, and
    /// the requests it had in flight count as `connection` errors. Without
    /// it, a broken connection ends the run. For failure experiments.
    #[arg(long)]
    pub reconnect: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("writing {path}: {err}")]
    Output { path: PathBuf, err: std::io::Error },
}

impl BenchArgs {
    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Args(m));
        if self.servers.is_empty() {
            return bad("--servers is empty".into());
        }
        if let Some(a) = self.servers.iter().find(|a| !a.ip().is_loopback()) {
            return bad(format!("{a} is not a loopback address: the bench only targets this machine"));
        }
        if !(1..=MAX_SESSIONS).contains(&self.sessions) {
            return bad(format!("--sessions must be in 1..={MAX_SESSIONS}"));
        }
        if !(1..=MAX_INFLIGHT).contains(&self.inflight) {
            return bad(format!("--inflight must be in 1..={MAX_INFLIGHT}"));
        }
        if self.read_pct > 100 {
            return bad("--read-pct must be at most 100".into());
        }
        if self.value_size > MAX_VALUE {
            return bad(format!("--value-size must be at most {MAX_VALUE}"));
        }
        if !(1..=MAX_KEYS).contains(&self.keys) {
            return bad(format!("--keys must be in 1..={MAX_KEYS}"));
        }
        for (name, v) in [("--warmup", self.warmup), ("--duration", self.duration)] {
            if !(0.0..=MAX_SECONDS).contains(&v) {
                return bad(format!("{name} must be in 0..={MAX_SECONDS} seconds"));
            }
        }
        if self.duration == 0.0 && self.ops.is_none() {
            return bad("give --duration above 0 or --ops".into());
        }
        if self.ops.is_some_and(|n| n == 0 || n > MAX_OPS) {
            return bad(format!("--ops must be in 1..={MAX_OPS}"));
        }
        if !(1..=MAX_SESSIONS).contains(&self.watchers) || !(1..=10_000).contains(&self.rounds) {
            return bad("--watchers and --rounds must be positive and bounded".into());
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 || self.prefix.ends_with('/') {
            return bad("--prefix must be an absolute path other than /".into());
        }
        Ok(())
    }

    fn server(&self, i: u32) -> SocketAddr {
        self.servers[i as usize % self.servers.len()]
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What a run produced; written as JSON.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub label: Option<String>,
    pub args: BenchArgs,
    pub started_unix_ms: i64,
    /// Seconds measured.
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    /// Error replies by ZooKeeper code, plus "connection" for lost sessions.
    pub errors: BTreeMap<String, u64>,
    pub latency: Latency,
    pub reads: Option<Latency>,
    pub writes: Option<Latency>,
    /// (latency ms, fraction of ops at or below it).
    pub cdf: Vec<(f64, f64)>,
    /// `watch`: when each watcher got the event, from the write's send.
    pub delivery: Option<Latency>,
    /// `watch`: when the last watcher of a change got it.
    pub fanout_complete: Option<Latency>,
    /// Throughput over time: (seconds since the measurement began, ops/s
    /// answered in the 100 ms before), warm-up excluded.
    pub timeline: Vec<(f64, f64)>,
}

/// How often the timeline samples throughput.
const TIMELINE_STEP: Duration = Duration::from_millis(100);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for q in (0..=1000).map(|i| i as f64 / 1000.0) {
        let v = h.value_at_quantile(q) as f64 / 1000.0;
        if out.last().is_none_or(|&(last, _): &(f64, f64)| v > last) {
            out.push((v, q));
        }
    }
    out
}

/// Runs a benchmark and returns its result; prints progress unless quiet.
pub async fn run(args: BenchArgs) -> Result<BenchResult, BenchError> {
    args.validate()?;
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("could not raise the open-file limit: {e}");
    }
    let started_unix_ms = crate::server::now_ms();
    let mut result = match args.workload {
        Workload::Watch => watch(&args).await?,
        Workload::Churn => load(&args, true).await?,
        _ => load(&args, false).await?,
    };
    result.started_unix_ms = started_unix_ms;
    if let Some(path) = &args.json_out {
        let text = serde_json::to_string_pretty(&result).expect("results serialize");
        std::fs::write(path, text).map_err(|err| BenchError::Output { path: path.clone(), err })?;
    }
    Ok(result)
}

fn key(args: &BenchArgs, i: u32) -> String {
    format!("{}/keys/k{i:08}", args.prefix)
}

fn create_req(path: String, data: Option<Vec<u8>>, flags: i32) -> Request {
    Request::Create { opcode: op::CREATE, req: CreateRequest { path, data, acl: Acl::open(), flags, ttl: None } }
}

/// The data the bench writes: `value_size` bytes of `fill`, or a JSON
/// object of that size with `--json-values`.
fn bench_value(args: &BenchArgs, fill: u8) -> Vec<u8> {
    let n = args.value_size as usize;
    if !args.json_values {
        return vec![fill; n];
    }
    let mut v = br#"{"v":""#.to_vec();
    v.resize(n.saturating_sub(2).max(v.len()), fill);
    v.extend_from_slice(br#""}"#);
    v
}

/// Creates the bench's parents and, when the workload reads or updates
/// them, the key space, pipelined.
async fn setup(args: &BenchArgs) -> Result<(), BenchError> {
    let (c, _) = Client::connect(args.servers[0], args.session_timeout_ms).await?;
    for p in [args.prefix.clone(), format!("{}/keys", args.prefix), format!("{}/c", args.prefix)] {
        let r = c.call(&create_req(p.clone(), Some(Vec::new()), 0)).await?;
        if r.err != 0 && r.err != -110 {
            return Err(BenchError::Setup(format!("create {p}: error {}", r.err)));
        }
    }
    let needs_keys = matches!(
        args.workload,
        Workload::Set | Workload::Get | Workload::Exists | Workload::Mixed | Workload::Multi | Workload::Children
    );
    if needs_keys {
        let value = bench_value(args, b'v');
        let mut inflight = FuturesUnordered::new();
        for i in 0..args.keys {
            inflight.push(c.send(&create_req(key(args, i), Some(value.clone()), 0))?);
            if inflight.len() >= 512 {
                check_setup(inflight.next().await)?;
            }
        }
        while let Some(r) = inflight.next().await {
            check_setup(Some(r))?;
        }
    }
    c.close().await?;
    Ok(())
}

fn check_setup(
    r: Option<Result<crate::client::Reply, tokio::sync::oneshot::error::RecvError>>,
) -> Result<(), BenchError> {
    match r {
        Some(Ok(reply)) if reply.err == 0 || reply.err == -110 => Ok(()),
        Some(Ok(reply)) => Err(BenchError::Setup(format!("creating the key space: error {}", reply.err))),
        _ => Err(BenchError::Client(ClientError::Closed)),
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Shared by the session tasks and the progress printer.
struct Progress {
    phase: AtomicU8,
    measured: AtomicU64,
    total: AtomicU64,
    errors: AtomicU64,
    lost: AtomicBool,
}

/// One session's measurements.
struct Tally {
    all: Histogram<u64>,
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally { all: histogram(), reads: histogram(), writes: histogram(), errors: BTreeMap::new() }
    }
}

/// The throughput workloads, and `churn`.
async fn load(args: &BenchArgs, churn: bool) -> Result<BenchResult, BenchError> {
    setup(args).await?;
    let progress = Arc::new(Progress {
        phase: AtomicU8::new(WARMUP),
        measured: AtomicU64::new(0),
        total: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        lost: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for s in 0..args.sessions {
        let args = Arc::new(args.clone());
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            if churn { churn_session(&args, s, &progress).await } else { session(&args, s, &progress).await }
        }));
    }
    let printer = (!args.quiet).then(|| tokio::spawn(print_progress(progress.clone())));
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    progress.phase.store(MEASURE, Ordering::Release);
    let measure_start = Instant::now();
    let deadline =
        measure_start + Duration::from_secs_f64(if args.duration > 0.0 { args.duration } else { MAX_SECONDS });
    let mut timeline = Vec::new();
    let mut sample = (measure_start, progress.measured.load(Ordering::Relaxed));
    loop {
        let done = args.ops.is_some_and(|n| progress.measured.load(Ordering::Relaxed) >= n);
        if done || Instant::now() >= deadline || progress.lost.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if sample.0.elapsed() >= TIMELINE_STEP {
            let measured = progress.measured.load(Ordering::Relaxed);
            let rate = (measured - sample.1) as f64 / sample.0.elapsed().as_secs_f64();
            sample = (Instant::now(), measured);
            timeline.push((measure_start.elapsed().as_secs_f64(), rate));
        }
    }
    progress.phase.store(STOP, Ordering::Release);
    let seconds = measure_start.elapsed().as_secs_f64();
    let mut total = Tally::new();
    for t in tasks {
        let tally = t.await.map_err(|e| BenchError::Setup(format!("session task: {e}")))??;
        total.all.add(&tally.all).expect("same bounds");
        total.reads.add(&tally.reads).expect("same bounds");
        total.writes.add(&tally.writes).expect("same bounds");
        for (k, v) in tally.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    if let Some(p) = printer {
        p.abort();
    }
    let ops = total.all.len();
    let mixed = args.workload == Workload::Mixed;
    Ok(BenchResult {
        label: args.label.clone(),
        args: args.clone(),
        started_unix_ms: 0,
        seconds,
        ops,
        ops_per_sec: ops as f64 / seconds,
        errors: total.errors,
        latency: Latency::of(&total.all),
        reads: mixed.then(|| Latency::of(&total.reads)),
        writes: mixed.then(|| Latency::of(&total.writes)),
        cdf: cdf(&total.all),
        delivery: None,
        fanout_complete: None,
        timeline,
    })
}

async fn print_progress(p: Arc<Progress>) {
    let start = Instant::now();
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let total = p.total.load(Ordering::Relaxed);
        let rate = (total - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (total, Instant::now());
        let phase = match p.phase.load(Ordering::Relaxed) {
            WARMUP => "warm-up",
            MEASURE => "measuring",
            _ => "stopping",
        };
        eprintln!(
            "[{:6.1}s] {phase:9} {rate:10.0} ops/s  measured {:>10}  errors {}",
            start.elapsed().as_secs_f64(),
            p.measured.load(Ordering::Relaxed),
            p.errors.load(Ordering::Relaxed)
        );
    }
}

/// The next request of a throughput workload, and whether it is a read.
fn next_request(args: &BenchArgs, s: u32, seq: &mut u64, rng: &mut SmallRng, value: &[u8]) -> (Request, bool) {
    let k = rng.random_range(0..args.keys);
    match args.workload {
        Workload::Create => {
            *seq += 1;
            let (path, flags) = match args.mode {
                NodeMode::Persistent => (format!("{}/c/s{s}-{seq}", args.prefix), 0),
                NodeMode::Ephemeral => (format!("{}/c/s{s}-{seq}", args.prefix), 1),
                NodeMode::Sequential => (format!("{}/c/q-", args.prefix), 2),
            };
            (create_req(path, Some(value.to_vec()), flags), false)
        }
        Workload::Set => (Request::SetData { path: key(args, k), data: Some(value.to_vec()), version: -1 }, false),
        Workload::Get => (Request::GetData { path: key(args, k), watch: false }, true),
        Workload::Exists => (Request::Exists { path: key(args, k), watch: false }, true),
        Workload::Children => (Request::GetChildren { path: format!("{}/keys", args.prefix), watch: false }, true),
        Workload::Multi => {
            let (a, b) = (rng.random_range(0..args.keys), rng.random_range(0..args.keys));
            let ops = vec![
                MultiOp::Check { path: key(args, k), version: -1 },
                MultiOp::SetData { path: key(args, a), data: Some(value.to_vec()), version: -1 },
                MultiOp::SetData { path: key(args, b), data: Some(value.to_vec()), version: -1 },
            ];
            (Request::Multi(ops), false)
        }
        Workload::Mixed => {
            if rng.random_range(0..100) < args.read_pct as u32 {
                (Request::GetData { path: key(args, k), watch: false }, true)
            } else {
                (Request::SetData { path: key(args, k), data: Some(value.to_vec()), version: -1 }, false)
            }
        }
        Workload::Watch | Workload::Churn => unreachable!("not a request workload"),
    }
}

fn record(tally: &mut Tally, progress: &Progress, started: Instant, measured: bool, read: bool, err: Option<i32>) {
    progress.total.fetch_add(1, Ordering::Relaxed);
    if !measured {
        return;
    }
    if let Some(e) = err {
        progress.errors.fetch_add(1, Ordering::Relaxed);
        *tally.errors.entry(e.to_string()).or_default() += 1;
        return;
    }
    let us = (started.elapsed().as_micros() as u64).max(1);
    tally.all.saturating_record(us);
    if read {
        tally.reads.saturating_record(us);
    } else {
        tally.writes.saturating_record(us);
    }
    progress.measured.fetch_add(1, Ordering::Relaxed);
}

/// One session keeping `inflight` requests outstanding until STOP; with
/// `--reconnect`, over as many connections as failures make it need.
async fn session(args: &BenchArgs, s: u32, progress: &Progress) -> Result<Tally, BenchError> {
    let mut rng = SmallRng::seed_from_u64(s as u64);
    let mut seq = 0u64;
    let mut tally = Tally::new();
    let mut server = s;
    let (mut client, _events) = Client::connect(args.server(server), args.session_timeout_ms).await?;
    while !connection(args, s, progress, &client, &mut rng, &mut seq, &mut tally).await {
        if !args.reconnect {
            progress.lost.store(true, Ordering::Relaxed);
            return Ok(tally);
        }
        // Next server, until one takes a new session or the run stops.
        loop {
            if progress.phase.load(Ordering::Acquire) == STOP {
                return Ok(tally);
            }
            server += 1;
            match Client::connect(args.server(server), args.session_timeout_ms).await {
                Ok((c, _)) => {
                    client = c;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
    Ok(tally)
}

/// Runs requests on one connection until STOP (true) or until it breaks
/// (false).
async fn connection(
    args: &BenchArgs,
    s: u32,
    progress: &Progress,
    client: &Client,
    rng: &mut SmallRng,
    seq: &mut u64,
    tally: &mut Tally,
) -> bool {
    let value = bench_value(args, b'x');
    let mut inflight = FuturesUnordered::new();
    loop {
        let phase = progress.phase.load(Ordering::Acquire);
        while phase != STOP && inflight.len() < args.inflight as usize {
            let (req, read) = next_request(args, s, seq, rng, &value);
            let Ok(rx) = client.send(&req) else {
                *tally.errors.entry("connection".into()).or_default() += inflight.len() as u64 + 1;
                return false;
            };
            let started = Instant::now();
            let measured = phase == MEASURE;
            inflight.push(async move { (rx.await, started, measured, read) });
        }
        let Some((reply, started, measured, read)) = inflight.next().await else { return true };
        match reply {
            Ok(r) => record(tally, progress, started, measured, read, (r.err != 0).then_some(r.err)),
            Err(_) => {
                *tally.errors.entry("connection".into()).or_default() += inflight.len() as u64 + 1;
                return false;
            }
        }
    }
}

/// One loop of open session, create an ephemeral, close, until STOP.
async fn churn_session(args: &BenchArgs, s: u32, progress: &Progress) -> Result<Tally, BenchError> {
    let mut tally = Tally::new();
    let mut n = 0u64;
    while progress.phase.load(Ordering::Acquire) != STOP {
        let measured = progress.phase.load(Ordering::Acquire) == MEASURE;
        let started = Instant::now();
        let outcome = async {
            let (c, _) = Client::connect(args.server(s), args.session_timeout_ms).await?;
            n += 1;
            let r = c.call(&create_req(format!("{}/c/churn-{s}-{n}", args.prefix), None, 1)).await?;
            c.close().await?;
            Ok::<i32, ClientError>(r.err)
        }
        .await;
        match outcome {
            Ok(err) => record(&mut tally, progress, started, measured, false, (err != 0).then_some(err)),
            Err(_) => {
                *tally.errors.entry("connection".into()).or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(tally)
}

/// Fan-out: every watcher sets a data watch on one node, one write changes
/// it, and each watcher's event is timed from the write's send.
async fn watch(args: &BenchArgs) -> Result<BenchResult, BenchError> {
    setup(args).await?;
    let node = format!("{}/fan", args.prefix);
    let (writer, _) = Client::connect(args.servers[0], args.session_timeout_ms).await?;
    let r = writer.call(&create_req(node.clone(), Some(vec![0]), 0)).await?;
    if r.err != 0 && r.err != -110 {
        return Err(BenchError::Setup(format!("create {node}: error {}", r.err)));
    }
    let mut watchers = Vec::with_capacity(args.watchers as usize);
    let mut connecting = FuturesUnordered::new();
    for i in 0..args.watchers {
        connecting.push(Client::connect(args.server(i), args.session_timeout_ms));
        if connecting.len() >= 64 {
            watchers.push(connecting.next().await.expect("pending connect")?);
        }
    }
    while let Some(c) = connecting.next().await {
        watchers.push(c?);
    }
    if !args.quiet {
        eprintln!("{} watchers connected", watchers.len());
    }
    let warmup_rounds = 2;
    let mut delivery = histogram();
    let mut complete = histogram();
    let mut errors = BTreeMap::new();
    let started = Instant::now();
    for round in 0..warmup_rounds + args.rounds {
        let mut arming = FuturesUnordered::new();
        for (c, _) in &watchers {
            arming.push(c.send(&Request::GetData { path: node.clone(), watch: true })?);
        }
        while let Some(r) = arming.next().await {
            if r.map_err(|_| ClientError::Closed)?.err != 0 {
                return Err(BenchError::Setup("arming a watch failed".into()));
            }
        }
        let sent = Instant::now();
        let r = writer
            .call(&Request::SetData { path: node.clone(), data: Some(round.to_be_bytes().to_vec()), version: -1 })
            .await?;
        if r.err != 0 {
            *errors.entry(r.err.to_string()).or_default() += 1;
            continue;
        }
        let mut last = Duration::ZERO;
        for (_, events) in &mut watchers {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Some(e)) => {
                    let d = e.received.saturating_duration_since(sent);
                    last = last.max(d);
                    if round >= warmup_rounds {
                        delivery.saturating_record((d.as_micros() as u64).max(1));
                    }
                }
                _ => *errors.entry("missed event".to_string()).or_default() += 1,
            }
        }
        if round >= warmup_rounds {
            complete.saturating_record((last.as_micros() as u64).max(1));
        }
        if !args.quiet {
            eprintln!(
                "round {round}: last of {} watchers notified after {:.2} ms",
                watchers.len(),
                last.as_secs_f64() * 1e3
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for (c, _) in &watchers {
        let _ = c.send(&Request::CloseSession);
    }
    Ok(BenchResult {
        label: args.label.clone(),
        args: args.clone(),
        started_unix_ms: 0,
        seconds,
        ops: delivery.len(),
        ops_per_sec: delivery.len() as f64 / seconds,
        errors,
        latency: Latency::of(&delivery),
        reads: None,
        writes: None,
        cdf: cdf(&delivery),
        delivery: Some(Latency::of(&delivery)),
        fanout_complete: Some(Latency::of(&complete)),
        timeline: Vec::new(),
    })
}

/// The human-readable summary.
pub fn summary(r: &BenchResult) -> String {
    let l = &r.latency;
    let a = &r.args;
    let shape = match a.workload {
        Workload::Watch => format!("{} watchers, {} changes", a.watchers, a.rounds),
        Workload::Churn => format!("{} sessions opening and closing", a.sessions),
        _ => format!("{} sessions x {} in flight", a.sessions, a.inflight),
    };
    let workload = serde_json::to_value(a.workload).expect("serializes");
    let mut s = format!(
        "{} on {:?}: {shape}, {:.1} s\n  {:.0} ops/s ({} ops)  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
        workload.as_str().unwrap_or("?"),
        a.servers,
        r.seconds,
        r.ops_per_sec,
        r.ops,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    for (name, lat) in [("reads", &r.reads), ("writes", &r.writes), ("fan-out complete", &r.fanout_complete)] {
        if let Some(l) = lat {
            s += &format!("  {name}: p50 {:.3}  p99 {:.3}  max {:.3} ms ({} samples)\n", l.p50, l.p99, l.max, l.count);
        }
    }
    if !r.errors.is_empty() {
        s += &format!("  errors: {:?}\n", r.errors);
    }
    s
}
