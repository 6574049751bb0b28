//! One client connection: handshake, then requests in, replies out, in
//! order.
//!
//! A connection is a single task that owns its socket and a queue of the
//! requests it has accepted but not answered (`pending`). The queue enforces
//! ZooKeeper's per-session order:
//! - a write is proposed to Raft as soon as no read is ahead of it, and
//!   answered when the dispatcher delivers its applied outcome;
//! - a read runs once everything ahead of it is answered, so it sees the
//!   session's own writes and never a later one.
//!
//! Reads run under the state's visibility gate, and any watch events already
//! queued in the inbox are written before their replies: a client never sees
//! new data before the event that announces it. Short reads run in the
//! connection's task; the rest on a blocking thread.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::RwLockReadGuard;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::dispatch::{ConnMsg, ConnStats};
use super::fourlw;
use super::watches::{ConnId, WatchKind};
use crate::machine::acl;
use crate::machine::apply::session_password;
use crate::machine::command::{Command, Identity, Op, Origin, Write};
use crate::machine::plugins::{self, QueryError};
use crate::machine::{ReadView, Reply, WriteResult};
use crate::plugin::CallError;
use crate::proto::data::{Id, perms};
use crate::proto::error::ErrorCode;
use crate::proto::request::{MultiOp, ReadOp, Request, RequestError, SetWatches, decode_request};
use crate::proto::response::{EventType, MultiResult, ReadResult, Response, call_status, put_notification, put_reply};
use crate::proto::{ConnectRequest, ConnectResponse, FrameError, four_letter_word, op, split_frame, xid};
use crate::tree::StoreError;

/// Why a connection ended. Logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("bad connect request: {0}")]
    Connect(crate::proto::jute::DecodeError),
    #[error("{0}")]
    Request(RequestError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Closed(&'static str),
}

/// Most consecutive reads run under one gate hold.
const READ_BATCH_MAX: usize = 64;

/// At most this many short reads run inline in the connection's task.
const INLINE_READS_MAX: usize = 8;

/// A children list is a short read up to this many children.
const INLINE_CHILDREN_MAX: i32 = 256;

/// Messages handled from the inbox before the output is written out.
const INBOX_DRAIN_MAX: usize = 64;

/// Output that is written out before more messages are handled.
const OUT_FLUSH_BYTES: usize = 64 * 1024;

/// A connection's two directions: a TCP socket's halves, or a TLS
/// stream's.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The halves of a plain TCP connection.
pub fn plain(stream: TcpStream) -> (Reader, Writer) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    (Box::new(rd), Box::new(wr))
}

/// Serves one accepted connection until it closes. `ids` are identities
/// the transport proved (a TLS client certificate's `x509` subject).
pub async fn serve(shared: Arc<Shared>, (rd, wr): (Reader, Writer), peer: SocketAddr, ids: Vec<Id>) {
    let id = shared.next_conn_id();
    let kill = CancellationToken::new();
    let (inbox, stats) = shared.dispatch.register(id, peer, shared.config.connection_queue as usize, kill.clone());
    metrics::gauge!("corral_connections").increment(1.0);
    let mut identity = Identity { ids: vec![Id::new("ip", &peer.ip().to_string())], token: None };
    identity.ids.extend(ids);
    let mut conn = Conn {
        shared: shared.clone(),
        id,
        peer,
        rd,
        wr,
        inbuf: BytesMut::with_capacity(8192),
        out: BytesMut::with_capacity(8192),
        inbox,
        stash: None,
        kill,
        stats,
        session: 0,
        timeout_ms: 0,
        identity,
        pending: VecDeque::new(),
        audited: HashMap::new(),
        acks: FuturesUnordered::new(),
        closing: None,
    };
    *conn.stats.identity.lock() = conn.identity.clone();
    match conn.run().await {
        Ok(()) => {
            tracing::debug!(conn = id, %peer, session = format!("0x{:x}", conn.session), "connection closed")
        }
        Err(e) => {
            tracing::info!(conn = id, %peer, session = format!("0x{:x}", conn.session), "connection closed: {e}")
        }
    }
    shared.dispatch.unregister(id);
    metrics::gauge!("corral_connections").decrement(1.0);
}

/// A request accepted and not answered yet.
enum Work {
    Read {
        xid: i32,
        opcode: i32,
        req: Request,
        started: Instant,
    },
    Write {
        xid: i32,
        opcode: i32,
        ops: Vec<i32>,
        write: Option<Op>,
        started: Instant,
    },
    /// Answer an error in turn, then close (unknown opcode, bad body).
    Fail {
        xid: i32,
        code: ErrorCode,
    },
    /// ZooKeeper's `reconfig`: membership changes, run in turn.
    Reconfig {
        xid: i32,
        req: Request,
        started: Instant,
    },
}

struct Conn {
    shared: Arc<Shared>,
    id: ConnId,
    peer: SocketAddr,
    rd: Reader,
    wr: Writer,
    inbuf: BytesMut,
    out: BytesMut,
    inbox: mpsc::Receiver<ConnMsg>,
    /// An inbox message taken while draining events, handled next.
    stash: Option<ConnMsg>,
    kill: CancellationToken,
    stats: Arc<ConnStats>,
    session: i64,
    timeout_ms: i32,
    identity: Identity,
    pending: VecDeque<Work>,
    /// Paths of `setACL` requests in flight, by xid, for the audit log.
    audited: HashMap<i32, String>,
    /// Raft's verdicts on our proposals: only failures matter, the replies
    /// come from the dispatcher.
    acks: FuturesUnordered<futures::future::BoxFuture<'static, (i32, bool)>>,
    /// Set when the connection must close once `out` is flushed.
    closing: Option<&'static str>,
}

impl Conn {
    async fn run(&mut self) -> Result<(), ConnError> {
        if !self.handshake().await? {
            return Ok(());
        }
        self.stats.session.store(self.session, Ordering::Relaxed);
        loop {
            self.flush().await?;
            if let Some(why) = self.closing {
                tracing::debug!(conn = self.id, "closing: {why}");
                return Ok(());
            }
            if let Some(msg) = self.stash.take() {
                self.on_msg(msg).await?;
                continue;
            }
            let can_read = self.pending.len() < self.shared.config.max_outstanding_requests as usize;
            tokio::select! {
                biased;
                _ = self.kill.cancelled() => return Err(ConnError::Closed("dropped by the server")),
                msg = self.inbox.recv() => match msg {
                    Some(msg) => {
                        self.on_msg(msg).await?;
                        self.drain_inbox().await?;
                    }
                    None => return Err(ConnError::Closed("server shutting down")),
                },
                Some((xid, committed)) = self.acks.next(), if !self.acks.is_empty() => {
                    // A write still unanswered whose outcome is unknown: like
                    // a ZooKeeper follower that lost its leader, close, and
                    // the client sees ConnectionLoss. Nothing later from
                    // this connection can overtake it: see `peers` on
                    // forwarding. (A verdict may arrive after the reply.)
                    let unanswered = self.pending.iter().any(|w| matches!(w, Work::Write { xid: x, .. } if *x == xid));
                    if !committed && unanswered {
                        return Err(ConnError::Closed("a write could not be committed (leadership changed)"));
                    }
                }
                n = self.rd.read_buf(&mut self.inbuf), if can_read => {
                    if n? == 0 {
                        return Ok(());
                    }
                    self.on_bytes().await?;
                }
            }
        }
    }

    /// Handles the messages already waiting in the inbox, so that the
    /// replies of one applied batch leave in one socket write: up to
    /// [`INBOX_DRAIN_MAX`] messages or [`OUT_FLUSH_BYTES`] of output.
    async fn drain_inbox(&mut self) -> Result<(), ConnError> {
        for _ in 0..INBOX_DRAIN_MAX {
            if self.stash.is_some() || self.closing.is_some() || self.out.len() >= OUT_FLUSH_BYTES {
                break;
            }
            match self.inbox.try_recv() {
                Ok(msg) => self.on_msg(msg).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Writes `out` to the socket. A client that does not read blocks only
    /// its own connection, until the dispatcher drops it.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            tokio::select! {
                biased;
                _ = self.kill.cancelled() => return Err(ConnError::Closed("dropped by the server")),
                r = self.wr.write_all(&self.out) => r?,
            }
            self.out.clear();
        }
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
        loop {
            if let Some(f) = split_frame(&mut self.inbuf, self.shared.config.max_frame_bytes as usize)? {
                return Ok(Some(f));
            }
            if self.rd.read_buf(&mut self.inbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads the first frame: a four-letter word or a ConnectRequest, and
    /// sets up the session. Returns false if the connection is done.
    async fn handshake(&mut self) -> Result<bool, ConnError> {
        let deadline = Duration::from_millis(self.shared.config.handshake_timeout_ms);
        let first = tokio::time::timeout(deadline, async {
            while self.inbuf.len() < 4 {
                if self.rd.read_buf(&mut self.inbuf).await? == 0 {
                    return Ok::<_, ConnError>(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|_| ConnError::Closed("no connect request in time"))??;
        if !first {
            return Ok(false);
        }
        if let Some(word) = four_letter_word(&self.inbuf[..4]) {
            let text = fourlw::answer(&self.shared, word).await;
            self.wr.write_all(text.as_bytes()).await?;
            self.wr.shutdown().await?;
            return Ok(false);
        }
        let Some(frame) = tokio::time::timeout(deadline, self.read_frame())
            .await
            .map_err(|_| ConnError::Closed("no connect request in time"))??
        else {
            return Ok(false);
        };
        let req = ConnectRequest::decode(&frame).map_err(ConnError::Connect)?;
        let applied = self.shared.dispatch.applied() as i64;
        if req.last_zxid_seen > applied {
            // The client has seen more than this server: it must find a
            // server that is caught up. ZooKeeper closes without a reply.
            return Err(ConnError::Closed("client's last zxid is ahead of this server"));
        }
        if req.read_only != Some(true) && self.shared.read_only() {
            return Err(ConnError::Closed("read-only server refuses a client that needs writes"));
        }
        let op = if req.session_id == 0 {
            Op::CreateSession { timeout_ms: req.timeout_ms, http: false }
        } else {
            // Whether the session still lives is the log's to say, not this
            // member's state: a member behind the log may not have applied
            // the session's creation yet (a client that opened it on another
            // member and came here at once), and refusing it here would end
            // a live session. The apply of the resume refuses a session that
            // is gone. The password needs no log: it derives from the id and
            // the cluster's secret.
            let secret = self.shared.state.meta().init.map(|i| i.secret);
            let genuine = secret.is_some_and(|s| session_password(&s, req.session_id)[..] == req.password[..]);
            if !genuine {
                self.refuse(req.read_only).await?;
                return Ok(false);
            }
            Op::ResumeSession { session: req.session_id }
        };
        tracing::trace!(conn = self.id, ?op, "proposing the session set-up");
        self.propose(0, op).await?;
        let expires = tokio::time::Instant::now() + deadline;
        let reply = loop {
            let msg = tokio::select! {
                biased;
                msg = self.inbox.recv() => msg,
                // A set-up that cannot commit (the leader changed as it was
                // proposed) fails now, not at the deadline: the client
                // retries at once.
                Some((_, false)) = self.acks.next() => {
                    return Err(ConnError::Closed("session set-up not committed: the leader changed"));
                }
                _ = tokio::time::sleep_until(expires) => {
                    return Err(ConnError::Closed("session set-up not committed in time"));
                }
            };
            match msg {
                Some(ConnMsg::Reply { reply, .. }) => break reply,
                Some(ConnMsg::Event(..)) => continue,
                Some(ConnMsg::Close(why)) => return Err(ConnError::Closed(why)),
                None => return Err(ConnError::Closed("server shutting down")),
            }
        };
        match reply {
            Reply::Connected { session, password, timeout_ms } => {
                self.session = session;
                self.timeout_ms = timeout_ms;
                ConnectResponse {
                    timeout_ms,
                    session_id: session,
                    password,
                    read_only: req.read_only.map(|_| self.shared.read_only()),
                }
                .put_frame(&mut self.out);
                tracing::debug!(conn = self.id, peer = %self.peer, session = format!("0x{session:x}"), timeout_ms, "session established");
                Ok(true)
            }
            _ => {
                self.refuse(req.read_only).await?;
                Ok(false)
            }
        }
    }

    async fn refuse(&mut self, read_only: Option<bool>) -> Result<(), ConnError> {
        ConnectResponse::expired(read_only).put_frame(&mut self.out);
        self.flush().await
    }

    /// Proposes a command from this connection. Order of calls is order in
    /// the log.
    async fn propose(&mut self, xid: i32, op: Op) -> Result<(), ConnError> {
        let cmd = Command {
            time_ms: self.shared.now_ms(),
            origin: Some(Origin { node: self.shared.node, conn: self.id, xid }),
            op,
        };
        let ack = super::peers::submit(&self.shared, cmd).await.map_err(|e| {
            tracing::debug!(conn = self.id, "cannot propose: {e}");
            ConnError::Closed("no leader to take the write")
        })?;
        self.acks.push(Box::pin(async move { (xid, ack.await) }));
        Ok(())
    }

    async fn on_bytes(&mut self) -> Result<(), ConnError> {
        let max = self.shared.config.max_frame_bytes as usize;
        while let Some(frame) = split_frame(&mut self.inbuf, max)? {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
            self.shared.dispatch.liveness.touch(self.session, Instant::now());
            self.on_frame(&frame).await?;
            if self.closing.is_some() {
                break;
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        let started = Instant::now();
        let (h, req) = match decode_request(frame) {
            Ok(r) => r,
            Err(RequestError::Header(e)) => {
                return Err(ConnError::Request(RequestError::Header(e)));
            }
            Err(RequestError::UnknownOpcode { xid, opcode }) => {
                tracing::info!(conn = self.id, opcode, "unknown opcode");
                return self.enqueue(Work::Fail { xid, code: ErrorCode::Unimplemented }).await;
            }
            Err(e @ RequestError::Body { .. }) => {
                let RequestError::Body { header, .. } = &e else { unreachable!() };
                tracing::info!(conn = self.id, "{e}");
                return self.enqueue(Work::Fail { xid: header.xid, code: ErrorCode::MarshallingError }).await;
            }
        };
        let (xid, opcode) = (h.xid, h.opcode);
        let session = self.session;
        let write = |w: Write| Op::Write { session: Some(session), identity: self.identity.clone(), write: w };
        let work = match req {
            Request::Auth { scheme, auth } => return self.auth(xid, &scheme, &auth).await,
            Request::Check { .. } => Work::Fail { xid, code: ErrorCode::Unimplemented },
            Request::Create { opcode: op_code, req } => Work::Write {
                xid,
                opcode: op_code,
                ops: vec![],
                write: Some(write(Write::Create { opcode: op_code, req })),
                started,
            },
            Request::Delete { path, version } => {
                Work::Write { xid, opcode, ops: vec![], write: Some(write(Write::Delete { path, version })), started }
            }
            Request::SetData { path, data, version } => Work::Write {
                xid,
                opcode,
                ops: vec![],
                write: Some(write(Write::SetData { path, data, version })),
                started,
            },
            Request::SetAcl { path, acl, version } => {
                self.audited.insert(xid, path.clone());
                Work::Write {
                    xid,
                    opcode,
                    ops: vec![],
                    write: Some(write(Write::SetAcl { path, acl, version })),
                    started,
                }
            }
            Request::Sync { path } => {
                Work::Write { xid, opcode, ops: vec![], write: Some(write(Write::Sync { path })), started }
            }
            Request::Multi(ops) => {
                let codes = ops
                    .iter()
                    .map(|o| match o {
                        MultiOp::Create { opcode, .. } => *opcode,
                        MultiOp::Delete { .. } => op::DELETE,
                        MultiOp::SetData { .. } => op::SET_DATA,
                        MultiOp::Check { .. } => op::CHECK,
                    })
                    .collect();
                Work::Write { xid, opcode, ops: codes, write: Some(write(Write::Multi(ops))), started }
            }
            Request::CloseSession => Work::Write {
                xid,
                opcode,
                ops: vec![],
                write: Some(Op::CloseSession { session: self.session }),
                started,
            },
            Request::DeleteContainer { path } => {
                Work::Write { xid, opcode, ops: vec![], write: Some(write(Write::DeleteContainer { path })), started }
            }
            req @ Request::Reconfig { .. } => Work::Reconfig { xid, req, started },
            Request::Call { opcode: op::CALL, plugin, args } => Work::Write {
                xid,
                opcode,
                ops: vec![],
                write: Some(Op::Call { session: Some(session), identity: self.identity.clone(), plugin, args }),
                started,
            },
            req => Work::Read { xid, opcode, req, started },
        };
        self.enqueue(work).await
    }

    async fn enqueue(&mut self, work: Work) -> Result<(), ConnError> {
        self.pending.push_back(work);
        self.advance().await
    }

    /// Runs what can run: reads at the front of the queue, and writes not
    /// yet proposed that have no read ahead of them.
    async fn advance(&mut self) -> Result<(), ConnError> {
        loop {
            match self.pending.front() {
                Some(Work::Read { .. }) => {
                    let mut batch = Vec::new();
                    while batch.len() < READ_BATCH_MAX && matches!(self.pending.front(), Some(Work::Read { .. })) {
                        batch.push(self.pending.pop_front().expect("front exists"));
                    }
                    self.run_reads(batch).await?;
                }
                Some(Work::Reconfig { .. }) => {
                    let Some(Work::Reconfig { xid, req, started }) = self.pending.pop_front() else {
                        unreachable!("front is a reconfig")
                    };
                    let result = self.reconfig(&req).await?;
                    self.shared.stats.record(op::RECONFIG, started);
                    match result {
                        Ok((zxid, response)) => self.reply_at(xid, zxid, Ok(&response)),
                        Err(code) => self.reply(xid, Err(code.code())),
                    }
                }
                Some(Work::Fail { xid, code }) => {
                    let (xid, code) = (*xid, *code);
                    self.pending.pop_front();
                    self.reply(xid, Err(code.code()));
                    self.closing = Some("refused request");
                    return Ok(());
                }
                _ => break,
            }
        }
        let mut proposals = Vec::new();
        for w in self.pending.iter_mut() {
            match w {
                Work::Write { xid, write, .. } => {
                    if let Some(op) = write.take() {
                        proposals.push((*xid, op));
                    }
                }
                _ => break,
            }
        }
        for (xid, op) in proposals {
            self.propose(xid, op).await?;
        }
        Ok(())
    }

    fn reply(&mut self, xid: i32, result: Result<&Response, i32>) {
        let zxid = self.shared.dispatch.applied() as i64;
        self.reply_at(xid, zxid, result);
    }

    fn reply_at(&mut self, xid: i32, zxid: i64, result: Result<&Response, i32>) {
        put_reply(&mut self.out, xid, zxid, result);
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
    }

    async fn on_msg(&mut self, msg: ConnMsg) -> Result<(), ConnError> {
        match msg {
            ConnMsg::Event(_, frame) => {
                self.out.extend_from_slice(&frame);
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            ConnMsg::Close(why) => self.closing = Some(why),
            ConnMsg::Reply { xid, zxid, reply } => {
                let Some(Work::Write { xid: want, opcode, ops, write: None, started }) = self.pending.pop_front()
                else {
                    return Err(ConnError::Closed("reply for a request that is not in flight"));
                };
                if want != xid {
                    return Err(ConnError::Closed("replies out of order"));
                }
                self.shared.stats.record(opcode, started);
                if let Some(path) = self.audited.remove(&xid) {
                    let outcome = match &reply {
                        Reply::Write(Ok(_)) => Ok(()),
                        Reply::Write(Err(code)) | Reply::Rejected { code, .. } => Err(code.to_string()),
                        other => Err(format!("{other:?}")),
                    };
                    crate::audit::record("setACL", &self.actor(), &path, outcome);
                }
                match reply {
                    Reply::Write(Err(ErrorCode::SessionMoved)) => {
                        // ZooKeeper closes such a connection without a reply.
                        return Err(ConnError::Closed("session moved to another connection"));
                    }
                    Reply::Write(Err(code)) => {
                        self.reply_at(xid, zxid, Err(code.code()));
                        if code == ErrorCode::SessionExpired {
                            self.closing = Some("session expired");
                        }
                    }
                    Reply::Write(Ok(result)) => {
                        let body = encode_write(opcode, &ops, result);
                        self.reply_at(xid, zxid, Ok(&body));
                    }
                    // A recipe call tells why its writes were refused.
                    Reply::Rejected { message, .. } if opcode == op::CALL => {
                        let body = Response::Called { status: call_status::REJECTED, payload: message.into_bytes() };
                        self.reply_at(xid, zxid, Ok(&body));
                    }
                    // Plain ZooKeeper replies carry only a code: the
                    // message goes to the log.
                    Reply::Rejected { code, message } => {
                        tracing::info!(
                            conn = self.id,
                            session = format_args!("0x{:x}", self.session),
                            "write rejected: {message}"
                        );
                        self.reply_at(xid, zxid, Err(code.code()));
                    }
                    Reply::Closed => {
                        self.reply_at(xid, zxid, Ok(&Response::Empty));
                        self.closing = Some("client closed its session");
                    }
                    other => {
                        tracing::error!(conn = self.id, "unexpected reply {other:?} to xid {xid}");
                        return Err(ConnError::Closed("unexpected reply"));
                    }
                }
                self.advance().await?;
            }
        }
        Ok(())
    }

    /// Moves to `out` the watch events waiting in the inbox for changes up
    /// to `zxid`, the state a read saw: they must precede its reply. Stops at
    /// the first later event or other message, which is kept for later.
    fn drain_events(&mut self, zxid: i64) {
        while self.stash.is_none() {
            match self.inbox.try_recv() {
                Ok(ConnMsg::Event(at, frame)) if at <= zxid => {
                    self.out.extend_from_slice(&frame);
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => self.stash = Some(other),
                Err(_) => break,
            }
        }
    }

    async fn run_reads(&mut self, batch: Vec<Work>) -> Result<(), ConnError> {
        let shared = self.shared.clone();
        let ctx = ReadCtx { conn: self.id, session: self.session, identity: self.identity.clone() };
        // A few short reads run in this task when the state is not in the
        // middle of making a batch visible; the rest, and any read that
        // would wait for that, go to a blocking thread (the thread hop
        // costs more than the read it carries).
        let done = match if batch.len() <= INLINE_READS_MAX { self.shared.state.try_read()? } else { None } {
            Some((gate, view)) if is_short(&view, &batch)? => {
                Some(run_reads_in(&self.shared, &ctx, &batch, gate, view)?)
            }
            _ => None,
        };
        let (zxid, out, timings) = match done {
            Some(done) => done,
            None => crate::raft::runtime::blocking(move || run_reads(&shared, &ctx, &batch))
                .await
                .map_err(|_| ConnError::Closed("read task failed"))??,
        };
        // Events of changes the reads saw must precede their replies.
        self.drain_events(zxid);
        self.out.extend_from_slice(&out);
        let replies = timings.len() as u64;
        self.stats.sent.fetch_add(replies, Ordering::Relaxed);
        self.shared.stats.sent.fetch_add(replies, Ordering::Relaxed);
        for (opcode, started) in timings {
            self.shared.stats.record(opcode, started);
        }
        Ok(())
    }

    /// `reconfig`: changes the membership as asked, then answers with the
    /// new `/zookeeper/config` as this node has applied it.
    async fn reconfig(&mut self, req: &Request) -> Result<Result<(i64, Response), ErrorCode>, ConnError> {
        let (_, node) = config_node(self.shared.clone()).await?;
        let done = self.reconfig_as(req, &node.acl).await;
        let (zxid, node) = config_node(self.shared.clone()).await?;
        Ok(done.map(|()| (zxid, Response::Data { data: node.data.clone(), stat: node.stat() })))
    }

    async fn reconfig_as(&mut self, req: &Request, config_acl: &[crate::proto::data::Acl]) -> Result<(), ErrorCode> {
        let Request::Reconfig { joining, leaving, new_members, config_id } = req else {
            unreachable!("only reconfig requests")
        };
        if !self.shared.config.reconfig_enabled {
            return Err(ErrorCode::ReconfigDisabled);
        }
        let meta = self.shared.state.meta();
        if !self.identity.is_super() && !acl::allowed(config_acl, &self.identity, perms::WRITE) {
            return Err(ErrorCode::NoAuth);
        }
        if *config_id != -1 && *config_id != meta.config_version as i64 {
            return Err(ErrorCode::BadVersion);
        }
        let current = meta.members.iter().map(|(id, m)| (*id, (m.raft_addr.clone(), m.voter))).collect();
        let mut ops =
            super::peers::plan_reconfig(&current, joining.as_deref(), leaving.as_deref(), new_members.as_deref())
                .map_err(|e| {
                    tracing::info!(conn = self.id, "reconfig refused: {e}");
                    ErrorCode::BadArguments
                })?;
        let leader = self.shared.raft.current_leader().await;
        super::peers::leader_changes_last(&mut ops, leader);
        let mut index = 0;
        for op in ops {
            tracing::info!(conn = self.id, ?op, "reconfig");
            index = super::peers::change_members(&self.shared, op).await.map_err(|e| {
                tracing::warn!(conn = self.id, "reconfig failed: {e}");
                ErrorCode::ReconfigInProgress
            })?;
        }
        while self.shared.dispatch.applied() < index {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Who this connection is, for the audit log.
    fn actor(&self) -> String {
        format!("session:0x{:x} from {}", self.session, self.peer)
    }

    /// `addauth`: answered at once, not queued, so that the identity of
    /// every later request includes it.
    async fn auth(&mut self, xid: i32, scheme: &str, auth: &[u8]) -> Result<(), ConnError> {
        let ok = match scheme {
            "digest" => match std::str::from_utf8(auth) {
                Ok(user_password) if user_password.contains(':') => {
                    let id = acl::digest_id(user_password);
                    let superuser = self.shared.state.meta().init.and_then(|i| i.config.superuser_digest);
                    if superuser.as_deref() == Some(id.as_str()) {
                        self.identity.ids.push(Id::new("super", ""));
                    }
                    let id = Id::new("digest", &id);
                    if !self.identity.ids.contains(&id) {
                        self.identity.ids.push(id);
                    }
                    true
                }
                _ => false,
            },
            // ZooKeeper's ip provider authenticates the peer address, which
            // the identity already holds.
            "ip" => true,
            _ => false,
        };
        let user = String::from_utf8_lossy(auth).split(':').next().unwrap_or_default().to_owned();
        let outcome = if ok { Ok(()) } else { Err("authentication failed".to_owned()) };
        crate::audit::record("addauth", &self.actor(), &format!("{scheme}:{user}"), outcome);
        if ok {
            *self.stats.identity.lock() = self.identity.clone();
            // The reply echoes the request's xid: -4 from most clients.
            put_reply(&mut self.out, xid, 0, Ok(&Response::Empty));
        } else {
            tracing::info!(conn = self.id, scheme, "authentication failed");
            put_reply(&mut self.out, xid, 0, Err(ErrorCode::AuthFailed.code()));
            self.closing = Some("authentication failed");
        }
        Ok(())
    }
}

/// `/zookeeper/config` as applied here, and the zxid it was read at.
async fn config_node(shared: Arc<Shared>) -> Result<(i64, crate::tree::Node), ConnError> {
    let read = crate::raft::runtime::blocking(move || -> Result<_, StoreError> {
        let (_gate, view) = shared.state.read()?;
        let zxid = shared.dispatch.applied() as i64;
        let node = view.node("/zookeeper/config")?.expect("every tree has /zookeeper/config");
        Ok((zxid, node))
    });
    Ok(read.await.map_err(|_| ConnError::Closed("read task failed"))??)
}

/// Turns a write outcome into the reply shape of the opcode the client
/// used (`create` vs `create2`, the per-op shapes of a multi).
fn encode_write(opcode: i32, ops: &[i32], result: WriteResult) -> Response {
    match result {
        WriteResult::Created { path, stat } => {
            if opcode == op::CREATE {
                Response::Create { path }
            } else {
                Response::Create2 { path, stat }
            }
        }
        // Token changes come only from the admin API.
        WriteResult::Deleted | WriteResult::Checked | WriteResult::Token { .. } => Response::Empty,
        WriteResult::SetData { stat } | WriteResult::SetAcl { stat } => Response::Stat(stat),
        WriteResult::Synced { path } => Response::Path(path),
        WriteResult::Called(result) => called(result),
        // Deploys come only from the admin API.
        WriteResult::Plugin { .. } => Response::Empty,
        WriteResult::Multi(Err(codes)) => Response::Multi(codes.into_iter().map(MultiResult::Error).collect()),
        WriteResult::Multi(Ok(results)) => Response::Multi(
            results
                .into_iter()
                .zip(ops)
                .map(|(r, &code)| match r {
                    WriteResult::Created { path, .. } if code == op::CREATE => MultiResult::Create { path },
                    WriteResult::Created { path, stat } => MultiResult::Create2 { path, stat },
                    WriteResult::Deleted => MultiResult::Delete,
                    WriteResult::SetData { stat } => MultiResult::SetData { stat },
                    _ => MultiResult::Check,
                })
                .collect(),
        ),
    }
}

/// The reply to a plugin call.
fn called(result: Result<Vec<u8>, CallError>) -> Response {
    match result {
        Ok(payload) => Response::Called { status: call_status::OK, payload },
        Err(CallError::Domain(m)) => Response::Called { status: call_status::DOMAIN_ERROR, payload: m.into_bytes() },
        Err(e @ CallError::Trap(_)) => {
            Response::Called { status: call_status::TRAP, payload: e.to_string().into_bytes() }
        }
    }
}

struct ReadCtx {
    conn: ConnId,
    session: i64,
    identity: Identity,
}

/// Runs a batch of reads against one view, under the gate, registering
/// their watches. Returns the zxid the view is at, the encoded replies and,
/// per request, its opcode and start time.
type ReadsDone = (i64, BytesMut, Vec<(i32, Instant)>);

fn run_reads(shared: &Shared, ctx: &ReadCtx, batch: &[Work]) -> Result<ReadsDone, StoreError> {
    let (gate, view) = shared.state.read()?;
    run_reads_in(shared, ctx, batch, gate, view)
}

/// Whether every read of `batch` is short in `view`: one node or none, or
/// the children of a node that has at most [`INLINE_CHILDREN_MAX`].
fn is_short(view: &ReadView, batch: &[Work]) -> Result<bool, StoreError> {
    for w in batch {
        let short = match w {
            Work::Read {
                req: Request::Ping | Request::Exists { .. } | Request::GetData { .. } | Request::GetAcl { .. },
                ..
            } => true,
            Work::Read { req: Request::GetChildren { path, .. } | Request::GetChildren2 { path, .. }, .. } => {
                view.node(path)?.is_none_or(|n| n.num_children <= INLINE_CHILDREN_MAX)
            }
            _ => false,
        };
        if !short {
            return Ok(false);
        }
    }
    Ok(true)
}

fn run_reads_in(
    shared: &Shared,
    ctx: &ReadCtx,
    batch: &[Work],
    gate: RwLockReadGuard<'_, ()>,
    view: ReadView,
) -> Result<ReadsDone, StoreError> {
    let mut out = BytesMut::new();
    let mut timings = Vec::with_capacity(batch.len());
    let zxid = shared.dispatch.applied() as i64;
    for w in batch {
        let Work::Read { xid, opcode, req, started } = w else { unreachable!("only reads are batched") };
        let result = read_one(shared, ctx, &view, zxid, req, &mut out)?;
        let xid = match req {
            Request::Ping => xid::PING,
            _ => *xid,
        };
        put_reply(&mut out, xid, zxid, result.as_ref().map_err(|e| e.code()));
        timings.push((*opcode, *started));
    }
    drop(gate);
    Ok((zxid, out, timings))
}

fn read_one(
    shared: &Shared,
    ctx: &ReadCtx,
    view: &ReadView,
    zxid: i64,
    req: &Request,
    out: &mut BytesMut,
) -> Result<Result<Response, ErrorCode>, StoreError> {
    let watch = |kind, path: &str| shared.dispatch.watches.lock().add(kind, path, ctx.conn);
    Ok(match req {
        Request::Ping => Ok(Response::Empty),
        Request::Exists { path, watch: w } => {
            let r = view.exists(path)?;
            // An exists watch is set whether or not the node exists.
            if *w && matches!(r, Ok(_) | Err(ErrorCode::NoNode)) {
                watch(WatchKind::Data, path);
            }
            r.map(Response::Stat)
        }
        Request::GetData { path, watch: w } => {
            let r = view.get_data(path, &ctx.identity)?;
            if *w && r.is_ok() {
                watch(WatchKind::Data, path);
            }
            r.map(|(data, stat)| Response::Data { data, stat })
        }
        Request::GetChildren { path, watch: w } | Request::GetChildren2 { path, watch: w } => {
            let r = view.get_children(path, &ctx.identity)?;
            if r.as_ref().is_ok_and(|(c, _)| c.len() > shared.config.max_children_listed as usize) {
                tracing::info!(conn = ctx.conn, path = ?path, "getChildren refused: over max_children_listed");
                return Ok(Err(ErrorCode::BadArguments));
            }
            if *w && r.is_ok() {
                watch(WatchKind::Child, path);
            }
            let two = matches!(req, Request::GetChildren2 { .. });
            r.map(
                |(children, stat)| {
                    if two { Response::Children2 { children, stat } } else { Response::Children { children } }
                },
            )
        }
        Request::GetAcl { path } => view.get_acl(path, &ctx.identity)?.map(|(acl, stat)| Response::Acl { acl, stat }),
        Request::GetEphemerals { prefix } => Ok(Response::Strings(view.ephemerals_of(ctx.session, prefix)?)),
        Request::GetAllChildrenNumber { path } => view.all_children_number(path, &ctx.identity)?.map(Response::Int),
        Request::MultiRead(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for o in ops {
                results.push(match o {
                    ReadOp::GetData { path } => match view.get_data(path, &ctx.identity)? {
                        Ok((data, stat)) => ReadResult::Data { data, stat },
                        Err(e) => ReadResult::Error(e.code()),
                    },
                    ReadOp::GetChildren { path } => match view.get_children(path, &ctx.identity)? {
                        Ok((children, _)) => ReadResult::Children { children },
                        Err(e) => ReadResult::Error(e.code()),
                    },
                });
            }
            Ok(Response::MultiRead(results))
        }
        Request::Call { plugin, args, .. } => {
            let env = shared.state.plugins();
            match plugins::query(view, env, Some(ctx.session), &ctx.identity, plugin, args) {
                Ok(result) => Ok(called(result)),
                Err(QueryError::Store(e)) => return Err(e),
                Err(QueryError::NoPlugin(_)) => Err(ErrorCode::NoNode),
                Err(e @ QueryError::NotQuery(..)) => {
                    Ok(Response::Called { status: call_status::REJECTED, payload: e.to_string().into_bytes() })
                }
                Err(e @ QueryError::Unavailable(_)) => {
                    tracing::warn!(conn = ctx.conn, "query {plugin}: {e}");
                    Err(ErrorCode::SystemError)
                }
            }
        }
        Request::WhoAmI => Ok(Response::WhoAmI(
            ctx.identity
                .ids
                .iter()
                .filter(|id| id.scheme != "super")
                .map(|id| {
                    let user = if id.scheme == "digest" { id.id.split(':').next().unwrap_or_default() } else { &id.id };
                    (id.scheme.clone(), user.to_owned())
                })
                .collect(),
        )),
        Request::SetWatches(w) => {
            set_watches(shared, ctx, view, zxid, w, out)?;
            Ok(Response::Empty)
        }
        Request::AddWatch { path, mode } => {
            let kind = match mode {
                0 => WatchKind::Persistent,
                1 => WatchKind::PersistentRecursive,
                _ => return Ok(Err(ErrorCode::BadArguments)),
            };
            if crate::tree::path::validate(path).is_err() {
                return Ok(Err(ErrorCode::BadArguments));
            }
            // Watching a node needs READ on it, if it exists.
            if let Some(node) = view.node(path)?
                && !acl::allowed(&node.acl, &ctx.identity, perms::READ)
            {
                return Ok(Err(ErrorCode::NoAuth));
            }
            watch(kind, path);
            Ok(Response::Int(0))
        }
        Request::CheckWatches { path, watcher_type } | Request::RemoveWatches { path, watcher_type } => {
            let Some(kinds) = WatchKind::of_watcher_type(*watcher_type) else {
                return Ok(Err(ErrorCode::BadArguments));
            };
            let mut watches = shared.dispatch.watches.lock();
            let found = if matches!(req, Request::RemoveWatches { .. }) {
                watches.remove(ctx.conn, path, kinds)
            } else {
                watches.has(ctx.conn, path, kinds)
            };
            if found { Ok(Response::Empty) } else { Err(ErrorCode::NoWatcher) }
        }
        // No SASL mechanism is configured.
        Request::Sasl { .. } => Err(ErrorCode::Unimplemented),
        _ => Err(ErrorCode::Unimplemented),
    })
}

/// `setWatches` after a reconnect: fire at once what changed since the
/// client's last zxid, and re-register the rest (ZooKeeper's
/// `DataTree.setWatches`).
fn set_watches(
    shared: &Shared,
    ctx: &ReadCtx,
    view: &ReadView,
    zxid: i64,
    w: &SetWatches,
    out: &mut BytesMut,
) -> Result<(), StoreError> {
    let rel = w.relative_zxid;
    let mut watches = shared.dispatch.watches.lock();
    // Catch-up events, like every event, go only to callers that may READ
    // the node: a replayed watch must not reveal what a getData could not.
    let readable = |n: &crate::tree::Node| acl::allowed(&n.acl, &ctx.identity, perms::READ);
    for path in &w.data {
        match view.node(path)? {
            None => put_notification(out, zxid, EventType::NodeDeleted, path),
            Some(n) if n.mzxid > rel && readable(&n) => put_notification(out, zxid, EventType::NodeDataChanged, path),
            Some(_) => watches.add(WatchKind::Data, path, ctx.conn),
        }
    }
    for path in &w.exist {
        match view.node(path)? {
            Some(n) if readable(&n) => put_notification(out, zxid, EventType::NodeCreated, path),
            _ => watches.add(WatchKind::Data, path, ctx.conn),
        }
    }
    for path in &w.child {
        match view.node(path)? {
            None => put_notification(out, zxid, EventType::NodeDeleted, path),
            Some(n) if n.pzxid > rel && readable(&n) => {
                put_notification(out, zxid, EventType::NodeChildrenChanged, path)
            }
            Some(_) => watches.add(WatchKind::Child, path, ctx.conn),
        }
    }
    // Persistent watches are simply re-added.
    for path in &w.persistent {
        watches.add(WatchKind::Persistent, path, ctx.conn);
    }
    for path in &w.persistent_recursive {
        watches.add(WatchKind::PersistentRecursive, path, ctx.conn);
    }
    Ok(())
}
