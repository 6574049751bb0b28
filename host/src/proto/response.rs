//! Server replies: `ReplyHeader` plus a body whose shape depends on the
//! opcode, and watch notifications.
//!
//! Every frame is written with its 4-byte length prefix. An error reply is the
//! header alone: ZooKeeper clients only read a body when `err == 0`.

use bytes::{BufMut, BytesMut};

use super::data::{Acl, Stat};
use super::jute::{DecodeError, JuteWrite, Reader};
use super::op;

/// One result inside a `multi` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// opcode 1: the path only.
    Create {
        path: String,
    },
    /// opcodes 15, 19, 21 (3.9 form): path and stat.
    Create2 {
        path: String,
        stat: Stat,
    },
    Delete,
    SetData {
        stat: Stat,
    },
    Check,
    Error(i32),
}

/// One result inside a `multiRead` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Data { data: Option<Vec<u8>>, stat: Stat },
    Children { children: Vec<String> },
    Error(i32),
}

/// The body of a successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// delete, ping, auth, setWatches, removeWatches, checkWatches, closeSession.
    Empty,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    /// exists, setData, setACL.
    Stat(Stat),
    Data {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    Acl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    Children {
        children: Vec<String>,
    },
    Children2 {
        children: Vec<String>,
        stat: Stat,
    },
    /// sync echoes its path.
    Path(String),
    Multi(Vec<MultiResult>),
    MultiRead(Vec<ReadResult>),
    Strings(Vec<String>),
    Int(i32),
    WhoAmI(Vec<(String, String)>),
    Buffer(Vec<u8>),
    /// A plugin call (`op::CALL`, `op::QUERY`): `status` is one of
    /// [`call_status`]; `payload` is the result or the error message.
    Called {
        status: i32,
        payload: Vec<u8>,
    },
}

/// The `status` of a [`Response::Called`].
pub mod call_status {
    /// The call returned; the payload is its result.
    pub const OK: i32 = 0;
    /// The plugin returned an error; the payload is its message. Its
    /// writes were discarded.
    pub const DOMAIN_ERROR: i32 = 1;
    /// The plugin trapped (fuel, a limit, a panic) or is disabled; the
    /// payload says why. Its writes were discarded.
    pub const TRAP: i32 = 2;
    /// A validator or trigger rejected the call's writes; the payload
    /// says which and why.
    pub const REJECTED: i32 = 3;
}

fn put_multi_header(b: &mut BytesMut, kind: i32, done: bool, err: i32) {
    b.write_i32(kind);
    b.write_bool(done);
    b.write_i32(err);
}

impl Response {
    pub fn encode(&self, b: &mut BytesMut) {
        match self {
            Response::Empty => {}
            Response::Create { path } | Response::Path(path) => b.write_string(path),
            Response::Create2 { path, stat } => {
                b.write_string(path);
                stat.encode(b);
            }
            Response::Stat(stat) => stat.encode(b),
            Response::Data { data, stat } => {
                b.write_buffer(data.as_deref());
                stat.encode(b);
            }
            Response::Acl { acl, stat } => {
                Acl::encode_list(acl, b);
                stat.encode(b);
            }
            Response::Children { children } | Response::Strings(children) => b.write_strings(children),
            Response::Children2 { children, stat } => {
                b.write_strings(children);
                stat.encode(b);
            }
            Response::Multi(results) => {
                for r in results {
                    match r {
                        MultiResult::Create { path } => {
                            put_multi_header(b, op::CREATE, false, 0);
                            b.write_string(path);
                        }
                        MultiResult::Create2 { path, stat } => {
                            put_multi_header(b, op::CREATE2, false, 0);
                            b.write_string(path);
                            stat.encode(b);
                        }
                        MultiResult::Delete => put_multi_header(b, op::DELETE, false, 0),
                        MultiResult::SetData { stat } => {
                            put_multi_header(b, op::SET_DATA, false, 0);
                            stat.encode(b);
                        }
                        MultiResult::Check => put_multi_header(b, op::CHECK, false, 0),
                        MultiResult::Error(err) => {
                            put_multi_header(b, op::ERROR, false, *err);
                            b.write_i32(*err);
                        }
                    }
                }
                put_multi_header(b, -1, true, -1);
            }
            Response::MultiRead(results) => {
                for r in results {
                    match r {
                        ReadResult::Data { data, stat } => {
                            put_multi_header(b, op::GET_DATA, false, 0);
                            b.write_buffer(data.as_deref());
                            stat.encode(b);
                        }
                        ReadResult::Children { children } => {
                            put_multi_header(b, op::GET_CHILDREN, false, 0);
                            b.write_strings(children);
                        }
                        ReadResult::Error(err) => {
                            put_multi_header(b, op::ERROR, false, *err);
                            b.write_i32(*err);
                        }
                    }
                }
                put_multi_header(b, -1, true, -1);
            }
            Response::Int(v) => b.write_i32(*v),
            Response::WhoAmI(ids) => {
                b.write_i32(ids.len() as i32);
                for (scheme, user) in ids {
                    b.write_string(scheme);
                    b.write_string(user);
                }
            }
            Response::Buffer(v) => b.write_buffer(Some(v)),
            Response::Called { status, payload } => {
                b.write_i32(*status);
                b.write_buffer(Some(payload));
            }
        }
    }
}

impl Response {
    /// Reads the body of a successful reply to `opcode`: what a client does.
    pub fn decode(opcode: i32, body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let resp = match opcode {
            op::CREATE => Response::Create { path: r.string()? },
            op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                Response::Create2 { path: r.string()?, stat: Stat::decode(&mut r)? }
            }
            op::EXISTS | op::SET_DATA | op::SET_ACL => Response::Stat(Stat::decode(&mut r)?),
            op::GET_DATA => Response::Data { data: r.buffer()?.map(<[u8]>::to_vec), stat: Stat::decode(&mut r)? },
            op::GET_ACL => Response::Acl { acl: Acl::decode_list(&mut r)?, stat: Stat::decode(&mut r)? },
            op::GET_CHILDREN => Response::Children { children: r.strings()? },
            op::GET_CHILDREN2 => Response::Children2 { children: r.strings()?, stat: Stat::decode(&mut r)? },
            op::SYNC => Response::Path(r.string()?),
            op::GET_EPHEMERALS => Response::Strings(r.strings()?),
            op::GET_ALL_CHILDREN_NUMBER | op::ADD_WATCH => Response::Int(r.i32()?),
            op::WHO_AM_I => Response::WhoAmI(r.vector(8, |r| Ok((r.string()?, r.string()?)))?),
            op::CALL | op::QUERY => {
                Response::Called { status: r.i32()?, payload: r.buffer()?.unwrap_or_default().to_vec() }
            }
            op::MULTI => {
                let mut results = Vec::new();
                loop {
                    let (kind, done, err) = (r.i32()?, r.bool()?, r.i32()?);
                    if done {
                        break;
                    }
                    results.push(match kind {
                        op::CREATE => MultiResult::Create { path: r.string()? },
                        op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                            MultiResult::Create2 { path: r.string()?, stat: Stat::decode(&mut r)? }
                        }
                        op::DELETE => MultiResult::Delete,
                        op::SET_DATA => MultiResult::SetData { stat: Stat::decode(&mut r)? },
                        op::CHECK => MultiResult::Check,
                        op::ERROR => {
                            r.i32()?;
                            MultiResult::Error(err)
                        }
                        value => return Err(DecodeError::BadEnum { field: "multi result type", value }),
                    });
                }
                Response::Multi(results)
            }
            _ => Response::Empty,
        };
        r.finish()?;
        Ok(resp)
    }
}

/// Appends one framed reply: length, `ReplyHeader{xid, zxid, err}`, and the
/// body when `err == 0`.
pub fn put_reply(out: &mut BytesMut, xid: i32, zxid: i64, result: Result<&Response, i32>) {
    let start = out.len();
    out.put_i32(0); // length, patched below
    out.write_i32(xid);
    out.write_i64(zxid);
    match result {
        Ok(body) => {
            out.write_i32(0);
            body.encode(out);
        }
        Err(err) => out.write_i32(err),
    }
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Watch event types (`Watcher.Event.EventType`) that travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(i32)]
pub enum EventType {
    NodeCreated = 1,
    NodeDeleted = 2,
    NodeDataChanged = 3,
    NodeChildrenChanged = 4,
}

/// `KeeperState.SyncConnected`: node events always carry it.
pub const STATE_SYNC_CONNECTED: i32 = 3;

/// Appends one framed watch notification (xid -1). `zxid` is the zxid of the
/// change, as ZooKeeper 3.9 sends it (3.8 sent -1).
pub fn put_notification(out: &mut BytesMut, zxid: i64, kind: EventType, path: &str) {
    let start = out.len();
    out.put_i32(0);
    out.write_i32(super::xid::NOTIFICATION);
    out.write_i64(zxid);
    out.write_i32(0);
    out.write_i32(kind as i32);
    out.write_i32(STATE_SYNC_CONNECTED);
    out.write_string(path);
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_header_only() {
        let mut b = BytesMut::new();
        put_reply(&mut b, 7, 42, Err(-101));
        assert_eq!(b.len(), 4 + 16);
        assert_eq!(&b[..4], &16i32.to_be_bytes());
    }

    #[test]
    fn add_watch_reply_is_twenty_bytes() {
        // addWatch answers ErrorResponse{err=0}: a 4-byte body.
        let mut b = BytesMut::new();
        put_reply(&mut b, 1, 5, Ok(&Response::Int(0)));
        assert_eq!(b.len(), 4 + 20);
    }

    #[test]
    fn replies_decode_back() {
        let stat = Stat { czxid: 5, num_children: 2, ..Stat::default() };
        for (opcode, resp) in [
            (op::CREATE2, Response::Create2 { path: "/a".into(), stat }),
            (op::GET_DATA, Response::Data { data: None, stat }),
            (op::GET_CHILDREN2, Response::Children2 { children: vec!["x".into()], stat }),
            (op::MULTI, Response::Multi(vec![MultiResult::Create { path: "/b".into() }, MultiResult::Error(-101)])),
            (op::WHO_AM_I, Response::WhoAmI(vec![("ip".into(), "127.0.0.1".into())])),
            (op::CALL, Response::Called { status: call_status::DOMAIN_ERROR, payload: b"no".to_vec() }),
        ] {
            let mut b = BytesMut::new();
            resp.encode(&mut b);
            assert_eq!(Response::decode(opcode, &b).unwrap(), resp);
        }
    }

    #[test]
    fn empty_multi_is_just_the_terminator() {
        let mut b = BytesMut::new();
        Response::Multi(vec![]).encode(&mut b);
        assert_eq!(b.len(), 9);
    }
}
