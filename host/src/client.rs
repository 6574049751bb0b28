//! A lean asynchronous ZooKeeper client, for `corral bench` and the CLI.
//!
//! One connection, one session. Requests are pipelined: [`Client::call`]
//! sends at once and resolves when the reply with its xid arrives (the server
//! answers in order, so pending requests form a FIFO queue). Watch
//! notifications go to the channel [`Client::connect`] returns. A background
//! task pings when the connection is idle for a third of the session
//! timeout. The client never reconnects: losing the connection fails every
//! pending and later call with [`ClientError::Closed`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::proto::jute::{DecodeError, Reader};
use crate::proto::request::Request;
use crate::proto::response::Response;
use crate::proto::{ConnectRequest, split_frame, xid};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {err}")]
    Connect { addr: SocketAddr, err: std::io::Error },
    #[error("{0}: the server refused the session")]
    Refused(SocketAddr),
    #[error("the connection closed")]
    Closed,
    #[error("malformed reply: {0}")]
    Decode(#[from] DecodeError),
    #[error("the server answered error {0}")]
    Server(i32),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// What a plugin call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginReply {
    /// The result bytes.
    Ok(Vec<u8>),
    /// The plugin's own error; its writes were discarded.
    Error(String),
    /// The plugin trapped (fuel, a limit, a panic) or is disabled.
    Trap(String),
    /// A validator or trigger refused the call's writes, or the plugin
    /// cannot be called this way.
    Rejected(String),
}

/// A reply: the header's zxid and error, and the raw body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub zxid: i64,
    pub err: i32,
    pub body: Bytes,
}

/// A watch notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: i32,
    pub path: String,
    pub zxid: i64,
    /// When this client read it off the socket.
    pub received: Instant,
}

type Pending = VecDeque<(i32, oneshot::Sender<Reply>)>;

struct Outgoing {
    xid: i32,
    frame: BytesMut,
    reply: Option<oneshot::Sender<Reply>>,
}

/// A connected session.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Outgoing>,
    next_xid: Arc<Mutex<i32>>,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub timeout_ms: i32,
    pub addr: SocketAddr,
}

impl Client {
    /// Opens a new session.
    pub async fn connect(
        addr: SocketAddr,
        timeout_ms: i32,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Event>), ClientError> {
        Self::connect_with(addr, timeout_ms, 0, &[0; 16]).await
    }

    /// Opens `session` (0 for a new one) with its password.
    pub async fn connect_with(
        addr: SocketAddr,
        timeout_ms: i32,
        session: i64,
        password: &[u8],
    ) -> Result<(Client, mpsc::UnboundedReceiver<Event>), ClientError> {
        let stream = TcpStream::connect(addr).await.map_err(|err| ClientError::Connect { addr, err })?;
        stream.set_nodelay(true).map_err(|err| ClientError::Connect { addr, err })?;
        let (rd, wr) = stream.into_split();
        Self::over((rd, wr), addr, timeout_ms, (session, password), 0).await
    }

    /// Opens `session` (0 for a new one, with its password) over a
    /// connection's two halves, to the server at `addr`, as a client that
    /// has seen `last_zxid`.
    pub async fn over(
        (mut rd, mut wr): (impl AsyncRead + Unpin + Send + 'static, impl AsyncWrite + Unpin + Send + 'static),
        addr: SocketAddr,
        timeout_ms: i32,
        (session, password): (i64, &[u8]),
        last_zxid: i64,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Event>), ClientError> {
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: last_zxid,
            timeout_ms,
            session_id: session,
            password: password.to_vec(),
            read_only: Some(false),
        };
        let mut frame = BytesMut::new();
        let mut body = BytesMut::new();
        req.encode(&mut body);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        let io = |err| ClientError::Connect { addr, err };
        wr.write_all(&frame).await.map_err(io)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let reply = loop {
            if let Some(f) = split_frame(&mut buf, usize::MAX >> 1).map_err(|_| ClientError::Closed)? {
                break f;
            }
            if rd.read_buf(&mut buf).await.map_err(io)? == 0 {
                // Closed without an answer: the server could not serve it
                // (no leader, or it is behind the client).
                return Err(ClientError::Closed);
            }
        };
        let mut r = Reader::new(&reply);
        let _protocol = r.i32()?;
        let timeout = r.i32()?;
        let session_id = r.i64()?;
        let password = r.buffer()?.unwrap_or_default().to_vec();
        if timeout <= 0 {
            return Err(ClientError::Refused(addr));
        }
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(wr, rx, pending.clone(), Duration::from_millis(timeout as u64 / 3)));
        tokio::spawn(read_loop(rd, buf, pending, events_tx));
        let client = Client { tx, next_xid: Arc::new(Mutex::new(1)), session_id, password, timeout_ms: timeout, addr };
        Ok((client, events))
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, ClientError> {
        let rx = self.send(req)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Sends a request; the receiver resolves with its reply. Requests are
    /// answered in the order they were sent.
    pub fn send(&self, req: &Request) -> Result<oneshot::Receiver<Reply>, ClientError> {
        let opcode = req.opcode();
        let x = match req {
            Request::Auth { .. } => xid::AUTH,
            Request::SetWatches(_) => xid::SET_WATCHES,
            _ => {
                let mut n = self.next_xid.lock();
                *n = n.wrapping_add(1).max(1);
                *n
            }
        };
        let mut frame = BytesMut::with_capacity(64);
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&x.to_be_bytes());
        frame.extend_from_slice(&opcode.to_be_bytes());
        req.encode(&mut frame);
        let len = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Outgoing { xid: x, frame, reply: Some(reply) }).map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    /// Calls and decodes a successful reply; a server error becomes
    /// [`ClientError::Server`].
    pub async fn request(&self, req: &Request) -> Result<Response, ClientError> {
        let reply = self.call(req).await?;
        if reply.err != 0 {
            return Err(ClientError::Server(reply.err));
        }
        Ok(Response::decode(req.opcode(), &reply.body)?)
    }

    /// Calls a Corral plugin through the extension opcodes, as this
    /// session: a recipe through the log (`op::CALL`), or with `query` a
    /// query plugin on the server's state (`op::QUERY`). An unknown plugin
    /// is [`ClientError::Server`] with NoNode (-101).
    pub async fn call_plugin(&self, plugin: &str, args: &[u8], query: bool) -> Result<PluginReply, ClientError> {
        use crate::proto::response::call_status;
        let opcode = if query { crate::proto::op::QUERY } else { crate::proto::op::CALL };
        let req = Request::Call { opcode, plugin: plugin.to_owned(), args: args.to_vec() };
        let Response::Called { status, payload } = self.request(&req).await? else {
            unreachable!("plugin calls decode as Called")
        };
        let text = || String::from_utf8_lossy(&payload).into_owned();
        Ok(match status {
            call_status::OK => PluginReply::Ok(payload),
            call_status::DOMAIN_ERROR => PluginReply::Error(text()),
            call_status::TRAP => PluginReply::Trap(text()),
            _ => PluginReply::Rejected(text()),
        })
    }

    /// Closes the session (closeSession) and waits for the server's reply.
    pub async fn close(&self) -> Result<(), ClientError> {
        let reply = self.call(&Request::CloseSession).await?;
        if reply.err != 0 { Err(ClientError::Server(reply.err)) } else { Ok(()) }
    }
}

async fn write_loop(
    mut wr: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    ping_every: Duration,
) {
    let mut out = BytesMut::new();
    loop {
        let first = match tokio::time::timeout(ping_every, rx.recv()).await {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(_) => {
                // Idle: ping. The reply is matched by its xid, not queued.
                let ping = [0, 0, 0, 8, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 11];
                if wr.write_all(&ping).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while let Ok(o) = rx.try_recv() {
            batch.push(o);
            if batch.len() >= 256 {
                break;
            }
        }
        {
            let mut p = pending.lock();
            for o in &mut batch {
                out.extend_from_slice(&o.frame);
                if let Some(r) = o.reply.take() {
                    p.push_back((o.xid, r));
                }
            }
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

async fn read_loop(
    mut rd: impl AsyncRead + Unpin,
    mut buf: BytesMut,
    pending: Arc<Mutex<Pending>>,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        while let Ok(Some(frame)) = split_frame(&mut buf, usize::MAX >> 1) {
            let mut r = Reader::new(&frame);
            let (Ok(x), Ok(zxid), Ok(err)) = (r.i32(), r.i64(), r.i32()) else { return };
            match x {
                xid::NOTIFICATION => {
                    let (Ok(kind), Ok(_state), Ok(path)) = (r.i32(), r.i32(), r.string()) else { return };
                    let _ = events.send(Event { kind, path, zxid, received: Instant::now() });
                }
                xid::PING => {}
                _ => {
                    // Ordinary replies come in request order; auth replies
                    // (xid -4) are answered at once, out of turn.
                    let next = {
                        let mut p = pending.lock();
                        if x < 0 {
                            p.iter().position(|(want, _)| *want == x).and_then(|i| p.remove(i))
                        } else {
                            p.pop_front()
                        }
                    };
                    let Some((want, reply)) = next else { return };
                    if want != x {
                        tracing::warn!("reply xid {x}, expected {want}: closing");
                        return;
                    }
                    let _ = reply.send(Reply { zxid, err, body: frame.slice(16..) });
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                pending.lock().clear();
                return;
            }
            Ok(_) => {}
        }
    }
}
