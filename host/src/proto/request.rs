//! Client requests: `RequestHeader` plus one record per opcode.
//!
//! [`decode_request`] turns one frame (without its length prefix) into a
//! typed [`Request`]. It separates three failures, because ZooKeeper answers
//! them differently:
//! - the header itself is short: the frame is garbage, close the connection;
//! - the opcode is unknown: reply `Unimplemented` (-6), then close;
//! - the body does not decode: reply `MarshallingError` (-5), then close.

use serde::{Deserialize, Serialize};

use super::data::Acl;
use bytes::BytesMut;

use super::jute::{DecodeError, JuteWrite, Reader};
use super::op;

/// `RequestHeader`: the client's transaction id and the opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub opcode: i32,
}

/// One create, in any of its four opcodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub path: String,
    /// `None` is a null buffer, distinct from empty data.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// Only for `createTTL` (opcode 21).
    pub ttl: Option<i64>,
}

/// A write inside a `multi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiOp {
    /// opcode 1, 15, 19 or 21; the opcode decides the result's shape.
    Create {
        opcode: i32,
        req: CreateRequest,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

/// A read inside a `multiRead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    GetData { path: String },
    GetChildren { path: String },
}

/// `SetWatches` / `SetWatches2`: the watches a client re-registers after a
/// reconnect, with the last zxid it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

/// Every request a ZooKeeper 3.9 client can send after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create {
        opcode: i32,
        req: CreateRequest,
    },
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
    },
    GetChildren2 {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    Ping,
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<MultiOp>),
    MultiRead(Vec<ReadOp>),
    Reconfig {
        joining: Option<String>,
        leaving: Option<String>,
        new_members: Option<String>,
        config_id: i64,
    },
    CheckWatches {
        path: String,
        watcher_type: i32,
    },
    RemoveWatches {
        path: String,
        watcher_type: i32,
    },
    DeleteContainer {
        path: String,
    },
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    SetWatches(SetWatches),
    Sasl {
        token: Vec<u8>,
    },
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    AddWatch {
        path: String,
        mode: i32,
    },
    WhoAmI,
    CloseSession,
    /// Corral's extension opcodes: a recipe (`op::CALL`) or a query
    /// (`op::QUERY`) plugin call.
    Call {
        opcode: i32,
        plugin: String,
        args: Vec<u8>,
    },
}

/// Why a request frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request header: {0}")]
    Header(DecodeError),
    #[error("unknown opcode {opcode} (xid {xid})")]
    UnknownOpcode { xid: i32, opcode: i32 },
    #[error("opcode {} body: {err}", header.opcode)]
    Body { header: RequestHeader, err: DecodeError },
}

/// Decodes one request frame (the bytes after the 4-byte length).
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request), RequestError> {
    let mut r = Reader::new(frame);
    let header =
        RequestHeader { xid: r.i32().map_err(RequestError::Header)?, opcode: r.i32().map_err(RequestError::Header)? };
    // An unknown opcode's body is not read: it is refused as unknown.
    let body = decode_body(header, &mut r).and_then(|req| {
        if req.is_some() {
            r.finish()?;
        }
        Ok(req)
    });
    match body {
        Ok(Some(req)) => Ok((header, req)),
        Ok(None) => Err(RequestError::UnknownOpcode { xid: header.xid, opcode: header.opcode }),
        Err(err) => Err(RequestError::Body { header, err }),
    }
}

fn path_watch(r: &mut Reader<'_>) -> Result<(String, bool), DecodeError> {
    Ok((r.string()?, r.bool()?))
}

fn data(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
    Ok(r.buffer()?.map(<[u8]>::to_vec))
}

fn create(r: &mut Reader<'_>, opcode: i32) -> Result<CreateRequest, DecodeError> {
    let path = r.string()?;
    let data = data(r)?;
    let acl = Acl::decode_list(r)?;
    let flags = r.i32()?;
    let ttl = if opcode == op::CREATE_TTL { Some(r.i64()?) } else { None };
    Ok(CreateRequest { path, data, acl, flags, ttl })
}

/// Reads `MultiHeader{type, done, err}` records until the terminator.
fn multi<T>(
    r: &mut Reader<'_>,
    mut item: impl FnMut(i32, &mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let kind = r.i32()?;
        let done = r.bool()?;
        let _err = r.i32()?;
        if done {
            return Ok(ops);
        }
        ops.push(item(kind, r)?);
    }
}

fn multi_op(kind: i32, r: &mut Reader<'_>) -> Result<MultiOp, DecodeError> {
    Ok(match kind {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            MultiOp::Create { opcode: kind, req: create(r, kind)? }
        }
        op::DELETE => MultiOp::Delete { path: r.string()?, version: r.i32()? },
        op::SET_DATA => MultiOp::SetData { path: r.string()?, data: data(r)?, version: r.i32()? },
        op::CHECK => MultiOp::Check { path: r.string()?, version: r.i32()? },
        value => {
            return Err(DecodeError::BadEnum { field: "multi op type", value });
        }
    })
}

fn read_op(kind: i32, r: &mut Reader<'_>) -> Result<ReadOp, DecodeError> {
    Ok(match kind {
        op::GET_DATA => {
            let (path, _watch) = path_watch(r)?;
            ReadOp::GetData { path }
        }
        op::GET_CHILDREN => {
            let (path, _watch) = path_watch(r)?;
            ReadOp::GetChildren { path }
        }
        value => {
            return Err(DecodeError::BadEnum { field: "multiRead op type", value });
        }
    })
}

/// `Ok(None)` means the opcode is unknown.
fn decode_body(h: RequestHeader, r: &mut Reader<'_>) -> Result<Option<Request>, DecodeError> {
    let req = match h.opcode {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            Request::Create { opcode: h.opcode, req: create(r, h.opcode)? }
        }
        op::DELETE => Request::Delete { path: r.string()?, version: r.i32()? },
        op::EXISTS => {
            let (path, watch) = path_watch(r)?;
            Request::Exists { path, watch }
        }
        op::GET_DATA => {
            let (path, watch) = path_watch(r)?;
            Request::GetData { path, watch }
        }
        op::SET_DATA => Request::SetData { path: r.string()?, data: data(r)?, version: r.i32()? },
        op::GET_ACL => Request::GetAcl { path: r.string()? },
        op::SET_ACL => Request::SetAcl { path: r.string()?, acl: Acl::decode_list(r)?, version: r.i32()? },
        op::GET_CHILDREN => {
            let (path, watch) = path_watch(r)?;
            Request::GetChildren { path, watch }
        }
        op::GET_CHILDREN2 => {
            let (path, watch) = path_watch(r)?;
            Request::GetChildren2 { path, watch }
        }
        op::SYNC => Request::Sync { path: r.string()? },
        op::PING => Request::Ping,
        op::CHECK => Request::Check { path: r.string()?, version: r.i32()? },
        op::MULTI => Request::Multi(multi(r, multi_op)?),
        op::MULTI_READ => Request::MultiRead(multi(r, read_op)?),
        op::RECONFIG => Request::Reconfig {
            joining: r.ustring()?,
            leaving: r.ustring()?,
            new_members: r.ustring()?,
            config_id: r.i64()?,
        },
        op::CHECK_WATCHES => Request::CheckWatches { path: r.string()?, watcher_type: r.i32()? },
        op::REMOVE_WATCHES => Request::RemoveWatches { path: r.string()?, watcher_type: r.i32()? },
        op::DELETE_CONTAINER => {
            let path = r.buffer()?.unwrap_or_default();
            Request::DeleteContainer { path: String::from_utf8_lossy(path).into_owned() }
        }
        op::AUTH => {
            let _type = r.i32()?;
            Request::Auth { scheme: r.string()?, auth: data(r)?.unwrap_or_default() }
        }
        op::SET_WATCHES | op::SET_WATCHES2 => {
            let mut w = SetWatches {
                relative_zxid: r.i64()?,
                data: r.strings()?,
                exist: r.strings()?,
                child: r.strings()?,
                ..SetWatches::default()
            };
            if h.opcode == op::SET_WATCHES2 {
                w.persistent = r.strings()?;
                w.persistent_recursive = r.strings()?;
            }
            Request::SetWatches(w)
        }
        op::SASL => Request::Sasl { token: data(r)?.unwrap_or_default() },
        op::GET_EPHEMERALS => Request::GetEphemerals { prefix: r.string()? },
        op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber { path: r.string()? },
        op::ADD_WATCH => Request::AddWatch { path: r.string()?, mode: r.i32()? },
        op::WHO_AM_I => Request::WhoAmI,
        op::CLOSE_SESSION => Request::CloseSession,
        op::CALL | op::QUERY => {
            Request::Call { opcode: h.opcode, plugin: r.string()?, args: r.buffer()?.unwrap_or_default().to_vec() }
        }
        _ => return Ok(None),
    };
    Ok(Some(req))
}

impl CreateRequest {
    fn encode(&self, opcode: i32, b: &mut BytesMut) {
        b.write_string(&self.path);
        b.write_buffer(self.data.as_deref());
        Acl::encode_list(&self.acl, b);
        b.write_i32(self.flags);
        if opcode == op::CREATE_TTL {
            b.write_i64(self.ttl.unwrap_or(0));
        }
    }
}

fn encode_multi_header(b: &mut BytesMut, kind: i32, done: bool) {
    b.write_i32(kind);
    b.write_bool(done);
    b.write_i32(-1);
}

impl Request {
    /// The opcode this request is sent with.
    pub fn opcode(&self) -> i32 {
        match self {
            Request::Create { opcode, .. } => *opcode,
            Request::Delete { .. } => op::DELETE,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetAcl { .. } => op::GET_ACL,
            Request::SetAcl { .. } => op::SET_ACL,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::GetChildren2 { .. } => op::GET_CHILDREN2,
            Request::Sync { .. } => op::SYNC,
            Request::Ping => op::PING,
            Request::Check { .. } => op::CHECK,
            Request::Multi(_) => op::MULTI,
            Request::MultiRead(_) => op::MULTI_READ,
            Request::Reconfig { .. } => op::RECONFIG,
            Request::CheckWatches { .. } => op::CHECK_WATCHES,
            Request::RemoveWatches { .. } => op::REMOVE_WATCHES,
            Request::DeleteContainer { .. } => op::DELETE_CONTAINER,
            Request::Auth { .. } => op::AUTH,
            Request::SetWatches(w) if w.persistent.is_empty() && w.persistent_recursive.is_empty() => op::SET_WATCHES,
            Request::SetWatches(_) => op::SET_WATCHES2,
            Request::Sasl { .. } => op::SASL,
            Request::GetEphemerals { .. } => op::GET_EPHEMERALS,
            Request::GetAllChildrenNumber { .. } => op::GET_ALL_CHILDREN_NUMBER,
            Request::AddWatch { .. } => op::ADD_WATCH,
            Request::WhoAmI => op::WHO_AM_I,
            Request::CloseSession => op::CLOSE_SESSION,
            Request::Call { opcode, .. } => *opcode,
        }
    }

    /// Appends the request record (the body after the header): what a
    /// client sends. `decode_request` reads it back.
    pub fn encode(&self, b: &mut BytesMut) {
        match self {
            Request::Create { opcode, req } => req.encode(*opcode, b),
            Request::Delete { path, version } | Request::Check { path, version } => {
                b.write_string(path);
                b.write_i32(*version);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch }
            | Request::GetChildren2 { path, watch } => {
                b.write_string(path);
                b.write_bool(*watch);
            }
            Request::SetData { path, data, version } => {
                b.write_string(path);
                b.write_buffer(data.as_deref());
                b.write_i32(*version);
            }
            Request::GetAcl { path }
            | Request::Sync { path }
            | Request::GetAllChildrenNumber { path }
            | Request::GetEphemerals { prefix: path } => b.write_string(path),
            Request::SetAcl { path, acl, version } => {
                b.write_string(path);
                Acl::encode_list(acl, b);
                b.write_i32(*version);
            }
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
            Request::Call { plugin, args, .. } => {
                b.write_string(plugin);
                b.write_buffer(Some(args));
            }
            Request::Multi(ops) => {
                for o in ops {
                    match o {
                        MultiOp::Create { opcode, req } => {
                            encode_multi_header(b, *opcode, false);
                            req.encode(*opcode, b);
                        }
                        MultiOp::Delete { path, version } | MultiOp::Check { path, version } => {
                            let kind = if matches!(o, MultiOp::Delete { .. }) { op::DELETE } else { op::CHECK };
                            encode_multi_header(b, kind, false);
                            b.write_string(path);
                            b.write_i32(*version);
                        }
                        MultiOp::SetData { path, data, version } => {
                            encode_multi_header(b, op::SET_DATA, false);
                            b.write_string(path);
                            b.write_buffer(data.as_deref());
                            b.write_i32(*version);
                        }
                    }
                }
                encode_multi_header(b, -1, true);
            }
            Request::MultiRead(ops) => {
                for o in ops {
                    let (kind, path) = match o {
                        ReadOp::GetData { path } => (op::GET_DATA, path),
                        ReadOp::GetChildren { path } => (op::GET_CHILDREN, path),
                    };
                    encode_multi_header(b, kind, false);
                    b.write_string(path);
                    b.write_bool(false);
                }
                encode_multi_header(b, -1, true);
            }
            Request::Reconfig { joining, leaving, new_members, config_id } => {
                for s in [joining, leaving, new_members] {
                    b.write_buffer(s.as_deref().map(str::as_bytes));
                }
                b.write_i64(*config_id);
            }
            Request::CheckWatches { path, watcher_type } | Request::RemoveWatches { path, watcher_type } => {
                b.write_string(path);
                b.write_i32(*watcher_type);
            }
            Request::DeleteContainer { path } => b.write_buffer(Some(path.as_bytes())),
            Request::Auth { scheme, auth } => {
                b.write_i32(0);
                b.write_string(scheme);
                b.write_buffer(Some(auth));
            }
            Request::SetWatches(w) => {
                b.write_i64(w.relative_zxid);
                b.write_strings(&w.data);
                b.write_strings(&w.exist);
                b.write_strings(&w.child);
                if self.opcode() == op::SET_WATCHES2 {
                    b.write_strings(&w.persistent);
                    b.write_strings(&w.persistent_recursive);
                }
            }
            Request::Sasl { token } => b.write_buffer(Some(token)),
            Request::AddWatch { path, mode } => {
                b.write_string(path);
                b.write_i32(*mode);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;
    use crate::proto::jute::JuteWrite;

    fn frame(xid: i32, opcode: i32, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        b.write_i32(xid);
        b.write_i32(opcode);
        body(&mut b);
        b
    }

    #[test]
    fn decodes_create_with_null_data() {
        let f = frame(1, op::CREATE, |b| {
            b.write_string("/a");
            b.write_buffer(None);
            Acl::encode_list(&Acl::open(), b);
            b.write_i32(1);
        });
        let (h, req) = decode_request(&f).unwrap();
        assert_eq!(h, RequestHeader { xid: 1, opcode: op::CREATE });
        let Request::Create { req, .. } = req else { panic!("{req:?}") };
        assert_eq!(req.data, None);
        assert_eq!(req.flags, 1);
        assert_eq!(req.acl, Acl::open());
    }

    #[test]
    fn decodes_multi_and_its_terminator() {
        let f = frame(3, op::MULTI, |b| {
            for (kind, path) in [(op::CHECK, "/a"), (op::DELETE, "/b")] {
                b.write_i32(kind);
                b.write_bool(false);
                b.write_i32(-1);
                b.write_string(path);
                b.write_i32(-1);
            }
            b.write_i32(-1);
            b.write_bool(true);
            b.write_i32(-1);
        });
        let (_, req) = decode_request(&f).unwrap();
        assert_eq!(
            req,
            Request::Multi(vec![
                MultiOp::Check { path: "/a".into(), version: -1 },
                MultiOp::Delete { path: "/b".into(), version: -1 },
            ])
        );
    }

    #[test]
    fn separates_unknown_opcodes_from_bad_bodies() {
        let f = frame(5, 999, |_| {});
        assert_eq!(decode_request(&f), Err(RequestError::UnknownOpcode { xid: 5, opcode: 999 }));
        let f = frame(5, op::GET_DATA, |b| b.write_string("/a"));
        assert!(matches!(decode_request(&f), Err(RequestError::Body { .. })));
        let f = frame(5, op::PING, |b| b.write_i32(0));
        assert!(matches!(decode_request(&f), Err(RequestError::Body { err: DecodeError::Trailing(4), .. })));
        assert!(matches!(decode_request(&[0, 0]), Err(RequestError::Header(_))));
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[a-z/]{0,12}"
    }

    fn arb_create() -> impl Strategy<Value = CreateRequest> {
        (arb_string(), prop::option::of(prop::collection::vec(any::<u8>(), 0..8)), 0..7i32)
            .prop_map(|(path, data, flags)| CreateRequest { path, data, acl: Acl::open(), flags, ttl: None })
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            arb_create().prop_map(|req| Request::Create { opcode: op::CREATE2, req }),
            (arb_string(), any::<i32>()).prop_map(|(path, version)| Request::Delete { path, version }),
            (arb_string(), any::<bool>()).prop_map(|(path, watch)| Request::GetData { path, watch }),
            (arb_string(), any::<i32>()).prop_map(|(path, version)| Request::SetData { path, data: None, version }),
            prop::collection::vec(
                prop_oneof![
                    arb_create().prop_map(|req| MultiOp::Create { opcode: op::CREATE, req }),
                    (arb_string(), any::<i32>()).prop_map(|(path, version)| MultiOp::Check { path, version }),
                ],
                0..4
            )
            .prop_map(Request::Multi),
            Just(Request::Ping),
            (arb_string(), 0..2i32).prop_map(|(path, mode)| Request::AddWatch { path, mode }),
        ]
    }

    proptest! {
        /// What a client encodes, the server decodes back to the same request.
        #[test]
        fn encode_decode_round_trip(req in arb_request(), xid in any::<i32>()) {
            let mut f = frame(xid, req.opcode(), |_| {});
            req.encode(&mut f);
            let (h, back) = decode_request(&f).unwrap();
            prop_assert_eq!(h, RequestHeader { xid, opcode: req.opcode() });
            prop_assert_eq!(back, req);
        }

        /// The decoder never panics, whatever the bytes.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(&bytes);
        }

        /// Nor when the header names a real opcode and only the body is random.
        #[test]
        fn body_decoder_never_panics(
            opcode in prop::sample::select(op::ALL.to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut f = frame(1, opcode, |_| {});
            f.extend_from_slice(&body);
            let _ = decode_request(&f);
        }
    }
}
