//! The transport between members: framed TCP with a shared-secret
//! handshake.
//!
//! Why framed TCP: Raft traffic here is a few message types between a
//! handful of known peers; a length-prefixed postcard frame over a
//! persistent TCP connection is all it needs, adds no dependency, and keeps
//! every byte of the protocol in this file. (tonic would bring protobuf
//! code generation; HTTP/2 adds framing we would not use.)
//!
//! ## Wire
//!
//! Every frame is a `u32` big-endian length, then a postcard [`Frame`]. A
//! connection starts with a handshake: the accepting side sends a random
//! `Challenge`, the connecting side answers `Hello { from, mac }` where
//! `mac = HMAC-SHA256(cluster secret, nonce ++ from)`, and only then
//! `Welcome`. A process without the secret cannot join or send entries
//! (ZooKeeper's CVE-2018-8012 and CVE-2023-44981 class). After it, the
//! connecting side sends `Request { id, .. }` frames and the other answers
//! `Response { id, .. }`; several requests may be in flight.
//!
//! ## Limits
//!
//! - AppendEntries are capped in bytes (`max_append_bytes`), not only in
//!   entries: an over-large request is cut and the follower's success is
//!   reported as partial, so openraft sends the rest next.
//! - Snapshots stream in chunks of `snapshot_chunk_bytes`.
//! - Every call has a timeout; a broken connection is re-dialled on the
//!   next call, and openraft backs off from an unreachable peer.
//!
//! ## Both sides
//!
//! The dialling side is [`Network`]: one [`Peer`] per member, its calls on
//! [`Link`]s. The accepting side is [`challenge`], then [`RaftService`]
//! for Raft's own requests; the server's requests (forwarded commands,
//! session reports, membership changes) are `server::peers`'. A server's
//! links are TCP; the deterministic simulation dials its own in-memory
//! streams ([`Dialer::Custom`]) and runs this same code over them.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{RaftNetworkV2, entry::RaftEntry};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{NodeInfo, TypeConfig};
use crate::machine::command::Command;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Mutual TLS between members, when configured.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
    pub node: u64,
    pub secret: Arc<[u8]>,
    pub max_frame_bytes: usize,
    pub max_append_bytes: usize,
    pub snapshot_chunk_bytes: usize,
    pub rpc_timeout: Duration,
    /// How links reach a member's address.
    pub dialer: Dialer,
}

/// A byte stream between two members, whatever carries it.
pub trait PeerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> PeerStream for S {}

/// Opens a stream to a member's Raft address.
pub type Dial = dyn Fn(&str) -> BoxFuture<'static, std::io::Result<Box<dyn PeerStream>>> + Send + Sync;

/// How a [`Link`] reaches a member.
#[derive(Clone)]
pub enum Dialer {
    /// TCP: a server's.
    Tcp,
    /// Another carrier of the same frames: the deterministic simulation's
    /// links (`host/tests/sim.rs`), which delay, stall and reset them.
    /// Either carrier gets mutual TLS when [`Settings::tls`] is set.
    Custom(Arc<Dial>),
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialer::Tcp => "Tcp",
            Dialer::Custom(_) => "Custom",
        })
    }
}

/// A membership change, forwarded to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    AddLearner {
        id: u64,
        raft_addr: String,
    },
    Promote {
        id: u64,
    },
    /// A voter becomes a learner.
    Demote {
        id: u64,
    },
    Remove {
        id: u64,
    },
}

/// What one member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Req {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot; the first carries the vote and meta.
    SnapshotChunk {
        start: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        done: bool,
    },
    /// A client's command, for the leader to propose if it still leads in
    /// `term`. Forwarded in order.
    Forward {
        term: u64,
        cmd: Command,
    },
    /// Sessions heard from since the last report, for the leader's expiry.
    Touch(Vec<i64>),
    Member(MemberOp),
}

/// The answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Resp {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    SnapshotChunkOk,
    Snapshot(SnapshotResponse<TypeConfig>),
    /// The forwarded command was proposed (`Ok`) or could not be.
    Forwarded(Result<(), String>),
    Touched,
    /// The index of the membership entry, or why the change failed.
    Member(Result<u64, String>),
    /// The request failed on the other side.
    Error(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Challenge { nonce: [u8; 32] },
    Hello { from: u64, mac: [u8; 32] },
    Welcome,
    Request { id: u64, req: Req },
    Response { id: u64, resp: Resp },
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting to {addr}: {err}")]
    Connect { addr: String, err: std::io::Error },
    #[error("{addr} refused our handshake (is the cluster secret the same?)")]
    Handshake { addr: String },
    #[error("the connection to {addr} closed")]
    Closed { addr: String },
    #[error("no answer from {addr} within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("{0}")]
    Remote(String),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

pub fn mac(secret: &[u8], nonce: &[u8; 32], from: u64) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(nonce);
    m.update(&from.to_be_bytes());
    m.finalize().into_bytes().into()
}

/// Checks a `Hello` in constant time.
pub fn verify(secret: &[u8], nonce: &[u8; 32], from: u64, mac_given: &[u8; 32]) -> bool {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(nonce);
    m.update(&from.to_be_bytes());
    m.verify_slice(mac_given).is_ok()
}

pub async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, f: &Frame) -> std::io::Result<()> {
    let body = postcard::to_allocvec(f).expect("frames encode");
    let mut buf = BytesMut::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await
}

pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R, max: usize) -> Result<Option<Frame>, LinkError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(LinkError::Malformed(e.to_string())),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(LinkError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.map_err(|e| LinkError::Malformed(e.to_string()))?;
    postcard::from_bytes(&body).map(Some).map_err(|e| LinkError::Malformed(e.to_string()))
}

/// The calls waiting for an answer on one connection, by id: when it ends
/// they fail in the order they were made (the simulation replays).
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Resp>>>>;

/// One open, authenticated connection.
struct Conn {
    tx: mpsc::UnboundedSender<(u64, Req)>,
    pending: Pending,
    /// Cancelled when the connection ends, for any reason: every call
    /// still waiting then fails (its sender is dropped).
    closed: CancellationToken,
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.closed.is_cancelled()
    }

    fn close(&self) {
        self.closed.cancel();
        self.pending.lock().clear();
    }
}

/// A connection to one peer for one purpose, dialled on demand. Calls go
/// out in the order they are made.
pub struct Link {
    addr: String,
    /// The member at `addr`: with TLS, its certificate must name it.
    target: u64,
    settings: Settings,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next_id: AtomicU64,
    /// Whether the last dial failed: a peer going away or coming back is
    /// logged once, not at every heartbeat.
    down: std::sync::atomic::AtomicBool,
}

impl Link {
    pub fn new(addr: String, target: u64, settings: Settings) -> Link {
        Link {
            addr,
            target,
            settings,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn dial(&self) -> Result<Conn, LinkError> {
        let addr = self.addr.clone();
        let timeout = |after| LinkError::Timeout { addr: addr.clone(), after };
        let limit = self.settings.rpc_timeout;
        if let Dialer::Custom(dial) = &self.settings.dialer {
            let stream = tokio::time::timeout(limit, dial(&addr))
                .await
                .map_err(|_| timeout(limit))?
                .map_err(|err| LinkError::Connect { addr: addr.clone(), err })?;
            return self.secure(stream).await;
        }
        let stream = tokio::time::timeout(limit, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| timeout(limit))?
            .map_err(|err| LinkError::Connect { addr: addr.clone(), err })?;
        let _ = stream.set_nodelay(true);
        self.secure(stream).await
    }

    /// Mutual TLS over a connected stream, when the members use it, then
    /// [`Link::open`].
    async fn secure<S: PeerStream>(&self, stream: S) -> Result<Conn, LinkError> {
        let Some(tls) = &self.settings.tls else { return self.open(stream).await };
        let addr = self.addr.clone();
        // The member we mean to reach must be the one its certificate names.
        let handshake = tls.connector().connect(crate::tls::member_name(self.target), stream);
        let stream = tokio::time::timeout(self.settings.rpc_timeout, handshake)
            .await
            .map_err(|_| LinkError::Timeout { addr: addr.clone(), after: self.settings.rpc_timeout })?
            .map_err(|err| LinkError::Connect { addr, err })?;
        self.open(stream).await
    }

    /// The cluster-secret handshake on a connected stream, then the tasks
    /// that write requests and read responses.
    async fn open<S: PeerStream>(&self, mut stream: S) -> Result<Conn, LinkError> {
        let addr = self.addr.clone();
        let max = self.settings.max_frame_bytes;
        let handshake = async {
            let Some(Frame::Challenge { nonce }) = read_frame(&mut stream, max).await? else {
                return Err(LinkError::Handshake { addr: addr.clone() });
            };
            let hello =
                Frame::Hello { from: self.settings.node, mac: mac(&self.settings.secret, &nonce, self.settings.node) };
            write_frame(&mut stream, &hello).await.map_err(|_| LinkError::Closed { addr: addr.clone() })?;
            match read_frame(&mut stream, max).await? {
                Some(Frame::Welcome) => Ok(()),
                _ => Err(LinkError::Handshake { addr: addr.clone() }),
            }
        };
        tokio::time::timeout(self.settings.rpc_timeout, handshake)
            .await
            .map_err(|_| LinkError::Timeout { addr: addr.clone(), after: self.settings.rpc_timeout })??;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Req)>();
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = writer_closed.cancelled() => None,
                    n = rx.recv() => n,
                };
                let Some((id, req)) = next else { break };
                if write_frame(&mut wr, &Frame::Request { id, req }).await.is_err() {
                    break;
                }
            }
            writer_closed.cancel();
        });
        let (reader_pending, reader_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = reader_closed.cancelled() => break,
                    f = read_frame(&mut rd, max) => f,
                };
                let Ok(Some(Frame::Response { id, resp })) = frame else { break };
                let waiter = reader_pending.lock().remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            reader_closed.cancel();
            reader_pending.lock().clear();
        });
        Ok(Conn { tx, pending, closed })
    }

    /// Closes the connection, if open: every call waiting on it fails now.
    pub async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.close();
        }
    }

    /// Sends `req` and waits for its answer.
    pub async fn call(&self, req: Req) -> Result<Resp, LinkError> {
        let rx = self.send(req).await?;
        let after = self.settings.rpc_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(Resp::Error(e))) => Err(LinkError::Remote(e)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => {
                self.close().await;
                Err(LinkError::Closed { addr: self.addr.clone() })
            }
            Err(_) => {
                // A connection that let a call time out is suspect: drop it.
                self.close().await;
                Err(LinkError::Timeout { addr: self.addr.clone(), after })
            }
        }
    }

    /// Sends `req`; the receiver gets its answer. Sends are ordered.
    pub async fn send(&self, req: Req) -> Result<oneshot::Receiver<Resp>, LinkError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| !c.is_open()) {
            match self.dial().await {
                Ok(c) => {
                    if self.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(addr = %self.addr, "member reachable again");
                    }
                    *guard = Some(c);
                }
                Err(e) => {
                    if !self.down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(addr = %self.addr, "member unreachable: {e}");
                    }
                    return Err(e);
                }
            }
        }
        let conn = guard.as_ref().expect("dialled");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        // Closing cancels, then clears: checking after the insert catches a
        // close that cleared the map before it.
        if conn.closed.is_cancelled() || conn.tx.send((id, req)).is_err() {
            if let Some(c) = guard.take() {
                c.close()
            }
            return Err(LinkError::Closed { addr: self.addr.clone() });
        }
        Ok(rx)
    }
}

/// Hands openraft one [`Peer`] per remote member.
pub struct Network {
    pub settings: Settings,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        Peer {
            target,
            link: Link::new(node.raft_addr.clone(), target, self.settings.clone()),
            snapshot_link: Link::new(node.raft_addr.clone(), target, self.settings.clone()),
            settings: self.settings.clone(),
        }
    }
}

/// The accepting side of the handshake: a random challenge, then the
/// dialler's answer, checked against the cluster secret. The member's id,
/// or `None` when the dialler went away first (its call was cancelled: not
/// an intrusion). `Welcome` is the caller's to send, once it has checked
/// what else the transport proved (a TLS certificate).
pub async fn challenge<S: PeerStream>(settings: &Settings, stream: &mut S) -> Result<Option<u64>, String> {
    let nonce: [u8; 32] = rand::random();
    if write_frame(stream, &Frame::Challenge { nonce }).await.is_err() {
        return Ok(None);
    }
    let hello = tokio::time::timeout(settings.rpc_timeout, read_frame(stream, settings.max_frame_bytes)).await;
    match hello {
        Ok(Ok(Some(Frame::Hello { from, mac }))) if verify(&settings.secret, &nonce, from, &mac) => Ok(Some(from)),
        Ok(Ok(None)) => Ok(None),
        _ => Err("bad handshake (wrong cluster secret?)".into()),
    }
}

/// A snapshot being received, chunk by chunk.
struct Receiving {
    vote: VoteOf<TypeConfig>,
    meta: SnapshotMetaOf<TypeConfig>,
    path: PathBuf,
    file: File,
}

/// The Raft half of serving one member's connection: entries, votes and
/// snapshot chunks go to this member's `raft`; a snapshot being received
/// is kept in `snapshots` until its last chunk installs it.
pub struct RaftService {
    raft: super::Raft,
    snapshots: PathBuf,
    receiving: Option<Receiving>,
}

impl RaftService {
    pub fn new(raft: super::Raft, snapshots: PathBuf) -> RaftService {
        RaftService { raft, snapshots, receiving: None }
    }

    /// Answers what Raft itself asks. The server's own requests (forwarded
    /// commands, session reports, membership changes) come back as `Err`,
    /// for the caller to answer.
    pub async fn answer(&mut self, req: Req) -> Result<Result<Resp, String>, Req> {
        Ok(match req {
            Req::Append(r) => self.raft.append_entries(r).await.map(Resp::Append).map_err(|e| e.to_string()),
            Req::Vote(r) => self.raft.vote(r).await.map(Resp::Vote).map_err(|e| e.to_string()),
            Req::PreVote(r) => self.raft.pre_vote(r).await.map(Resp::Vote).map_err(|e| e.to_string()),
            Req::SnapshotChunk { start, data, done } => self.receive_chunk(start, data, done).await,
            other => return Err(other),
        })
    }

    async fn receive_chunk(
        &mut self,
        start: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)>,
        data: Vec<u8>,
        done: bool,
    ) -> Result<Resp, String> {
        if let Some((vote, meta)) = start {
            let path = self.snapshots.join(format!("receiving-{}.tmp", rand::random::<u32>()));
            let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(old) = self.receiving.replace(Receiving { vote, meta, path, file }) {
                let _ = std::fs::remove_file(old.path);
            }
        }
        let Some(r) = self.receiving.as_mut() else { return Err("snapshot chunk without a start".into()) };
        r.file.write_all(&data).map_err(|e| e.to_string())?;
        if !done {
            return Ok(Resp::SnapshotChunkOk);
        }
        let r = self.receiving.take().expect("checked above");
        r.file.sync_all().map_err(|e| e.to_string())?;
        let file = File::open(&r.path).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&r.path);
        let snapshot = SnapshotOf::<TypeConfig, File> { meta: r.meta, snapshot: file };
        self.raft.install_full_snapshot(r.vote, snapshot).await.map(Resp::Snapshot).map_err(|e| e.to_string())
    }
}

/// The connections to one member: one for replication and votes, one for
/// snapshots, so that a long transfer does not delay heartbeats.
pub struct Peer {
    target: u64,
    link: Link,
    snapshot_link: Link,
    settings: Settings,
}

fn rpc_error(e: LinkError) -> RPCError<TypeConfig> {
    match e {
        LinkError::Connect { .. } | LinkError::Handshake { .. } | LinkError::Closed { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(resp: Resp) -> LinkError {
    LinkError::Malformed(format!("unexpected answer {resp:?}"))
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = File;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Cap the request in bytes: keep a prefix of entries that fits (at
        // least one), and report the rest as not sent yet.
        let mut size = 0usize;
        let mut keep = rpc.entries.len();
        for (i, e) in rpc.entries.iter().enumerate() {
            size += postcard::experimental::serialized_size(e).unwrap_or(0);
            if size > self.settings.max_append_bytes && i > 0 {
                keep = i;
                break;
            }
        }
        let cut = keep < rpc.entries.len();
        if cut {
            rpc.entries.truncate(keep);
        }
        let last = rpc.entries.last().map(|e| e.log_id());
        match self.link.call(Req::Append(rpc)).await.map_err(rpc_error)? {
            Resp::Append(AppendEntriesResponse::Success) if cut => Ok(AppendEntriesResponse::PartialSuccess(last)),
            Resp::Append(r) => Ok(r),
            other => Err(rpc_error(unexpected(other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.link.call(Req::Vote(rpc)).await.map_err(rpc_error)? {
            Resp::Vote(r) => Ok(r),
            other => Err(rpc_error(unexpected(other))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.link.call(Req::PreVote(rpc)).await.map_err(rpc_error)? {
            Resp::Vote(r) => Ok(r),
            other => Err(rpc_error(unexpected(other))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, File>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let streaming = |e: LinkError| match rpc_error(e) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            _ => StreamingError::Unreachable(Unreachable::new(&std::io::Error::other("snapshot transfer failed"))),
        };
        let chunk = self.settings.snapshot_chunk_bytes;
        let mut file = snapshot.snapshot;
        let mut start = Some((vote, snapshot.meta));
        tokio::pin!(cancel);
        loop {
            let (buf, file_back) = super::runtime::blocking(move || {
                let mut buf = vec![0u8; chunk];
                let mut n = 0;
                while n < buf.len() {
                    match file.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return (Err(e), file),
                    }
                }
                buf.truncate(n);
                (Ok(buf), file)
            })
            .await
            .map_err(|e| streaming(LinkError::Malformed(e.to_string())))?;
            file = file_back;
            let data = buf.map_err(|e| streaming(LinkError::Malformed(format!("reading the snapshot: {e}"))))?;
            let done = data.len() < chunk;
            let req = Req::SnapshotChunk { start: start.take(), data, done };
            let resp = tokio::select! {
                biased;
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                r = self.snapshot_link.call(req) => r.map_err(streaming)?,
            };
            match resp {
                Resp::SnapshotChunkOk if !done => {}
                Resp::Snapshot(r) if done => {
                    tracing::info!(target = self.target, "snapshot sent");
                    return Ok(r);
                }
                other => return Err(streaming(unexpected(other))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_the_secret_the_nonce_and_the_sender() {
        let nonce = [7u8; 32];
        let m = mac(b"secret", &nonce, 2);
        assert!(verify(b"secret", &nonce, 2, &m));
        assert!(!verify(b"other", &nonce, 2, &m));
        assert!(!verify(b"secret", &[8u8; 32], 2, &m));
        assert!(!verify(b"secret", &nonce, 3, &m));
    }
}
