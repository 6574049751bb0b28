//! The ZooKeeper wire protocol: framing, jute records, opcodes, error codes.
//!
//! Pure code: bytes in, typed values out, and back. Nothing here knows about
//! sockets, sessions or the tree, so all of it can be unit-tested and fuzzed
//! on its own.
//!
//! A connection carries length-prefixed frames in both directions. The first
//! client frame is a [`ConnectRequest`] (or a four-letter word, see
//! [`four_letter_word`]); every later one is a request header plus a record
//! ([`request`]). The server answers each with a reply header plus a record
//! ([`response`]), in request order, interleaved with watch notifications.

pub mod data;
pub mod error;
pub mod jute;
pub mod request;
pub mod response;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use jute::{DecodeError, JuteWrite, Reader};

/// Opcodes (`ZooDefs.OpCode`).
pub mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CLOSE_SESSION: i32 = -11;
    /// Corral's extension: call a recipe plugin in the log, as the
    /// connection's session. Body: `ustring plugin, buffer args`; reply:
    /// `int status, buffer payload` (see docs/plugins.md).
    pub const CALL: i32 = 4096;
    /// Corral's extension: call a query plugin on this member's state,
    /// outside the log (a read). Same body and reply as [`CALL`].
    pub const QUERY: i32 = 4097;
    /// The "type" of an error result inside a multi reply.
    pub const ERROR: i32 = -1;

    /// Every opcode a client may send.
    pub const ALL: [i32; 31] = [
        CREATE,
        DELETE,
        EXISTS,
        GET_DATA,
        SET_DATA,
        GET_ACL,
        SET_ACL,
        GET_CHILDREN,
        SYNC,
        PING,
        GET_CHILDREN2,
        CHECK,
        MULTI,
        CREATE2,
        RECONFIG,
        CHECK_WATCHES,
        REMOVE_WATCHES,
        CREATE_CONTAINER,
        DELETE_CONTAINER,
        CREATE_TTL,
        MULTI_READ,
        AUTH,
        SET_WATCHES,
        SASL,
        GET_EPHEMERALS,
        GET_ALL_CHILDREN_NUMBER,
        SET_WATCHES2,
        ADD_WATCH,
        WHO_AM_I,
        CALL,
        QUERY,
    ];

    /// A short name for logs and metrics.
    pub fn name(opcode: i32) -> &'static str {
        match opcode {
            CREATE => "create",
            DELETE => "delete",
            EXISTS => "exists",
            GET_DATA => "getData",
            SET_DATA => "setData",
            GET_ACL => "getACL",
            SET_ACL => "setACL",
            GET_CHILDREN => "getChildren",
            SYNC => "sync",
            PING => "ping",
            GET_CHILDREN2 => "getChildren2",
            CHECK => "check",
            MULTI => "multi",
            CREATE2 => "create2",
            RECONFIG => "reconfig",
            CHECK_WATCHES => "checkWatches",
            REMOVE_WATCHES => "removeWatches",
            CREATE_CONTAINER => "createContainer",
            DELETE_CONTAINER => "deleteContainer",
            CREATE_TTL => "createTTL",
            MULTI_READ => "multiRead",
            AUTH => "auth",
            SET_WATCHES => "setWatches",
            SASL => "sasl",
            GET_EPHEMERALS => "getEphemerals",
            GET_ALL_CHILDREN_NUMBER => "getAllChildrenNumber",
            SET_WATCHES2 => "setWatches2",
            ADD_WATCH => "addWatch",
            WHO_AM_I => "whoAmI",
            CLOSE_SESSION => "closeSession",
            CALL => "call",
            QUERY => "query",
            _ => "unknown",
        }
    }
}

/// Reserved xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// Why the byte stream could not be split into frames. The connection is
/// closed without a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is outside 0..={max} (max_frame_bytes)")]
    BadLength { len: i32, max: usize },
}

/// Splits one length-prefixed frame off the front of `buf`, if it is all
/// there. A length that is negative or above `max` is refused before any
/// byte of the body is buffered.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 || len as usize > max {
        return Err(FrameError::BadLength { len, max });
    }
    let len = len as usize;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The four-letter words. ZooKeeper recognises one when the first four bytes
/// of a fresh connection, read as a frame length, spell a known command.
pub const FOUR_LETTER_WORDS: [&str; 18] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "hash", "isro", "mntr", "ruok", "srst", "srvr", "stat",
    "stmk", "wchc", "wchp", "wchs",
];

/// The four-letter word that `first4` spells, if any.
pub fn four_letter_word(first4: &[u8]) -> Option<&'static str> {
    FOUR_LETTER_WORDS.iter().copied().find(|w| w.as_bytes() == first4)
}

/// The session handshake request (44 bytes, or 45 with `read_only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    /// `None` for old clients that omit the byte; the reply then omits it too.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(frame: &[u8]) -> Result<ConnectRequest, DecodeError> {
        let mut r = Reader::new(frame);
        let req = ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            password: r.buffer()?.unwrap_or_default().to_vec(),
            read_only: if r.remaining() > 0 { Some(r.bool()?) } else { None },
        };
        r.finish()?;
        Ok(req)
    }

    pub fn encode(&self, b: &mut BytesMut) {
        b.write_i32(self.protocol_version);
        b.write_i64(self.last_zxid_seen);
        b.write_i32(self.timeout_ms);
        b.write_i64(self.session_id);
        b.write_buffer(Some(&self.password));
        if let Some(ro) = self.read_only {
            b.write_bool(ro);
        }
    }
}

/// The handshake reply. A `timeout_ms` of 0 tells the client its session
/// expired (or its password was wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: [u8; 16],
    /// Written only when the request carried the byte.
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    /// The reply to a wrong password or an expired session.
    pub fn expired(read_only: Option<bool>) -> ConnectResponse {
        ConnectResponse { timeout_ms: 0, session_id: 0, password: [0; 16], read_only }
    }

    /// Appends the framed reply.
    pub fn put_frame(&self, out: &mut BytesMut) {
        let len = 4 + 4 + 8 + 4 + 16 + self.read_only.map_or(0, |_| 1);
        out.put_i32(len);
        out.write_i32(0);
        out.write_i32(self.timeout_ms);
        out.write_i64(self.session_id);
        out.write_buffer(Some(&self.password));
        if let Some(ro) = self.read_only {
            out.write_bool(ro);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_old_and_new_forms() {
        let mut req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 9,
            timeout_ms: 30_000,
            session_id: 0,
            password: vec![0; 16],
            read_only: Some(false),
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(b.len(), 45);
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req);
        req.read_only = None;
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(b.len(), 44);
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req);
    }

    #[test]
    fn connect_response_sizes_follow_the_request() {
        for (ro, size) in [(Some(false), 37), (None, 36)] {
            let mut b = BytesMut::new();
            ConnectResponse::expired(ro).put_frame(&mut b);
            assert_eq!(b.len(), 4 + size);
            assert_eq!(i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, size);
        }
    }

    #[test]
    fn frames_split_and_oversize_is_refused() {
        let mut b = BytesMut::from(&[0, 0, 0, 2, 7, 8, 0, 0][..]);
        assert_eq!(split_frame(&mut b, 10).unwrap().unwrap().as_ref(), &[7, 8]);
        assert_eq!(split_frame(&mut b, 10).unwrap(), None);
        let mut b = BytesMut::from(&[0, 0, 0, 11][..]);
        assert_eq!(split_frame(&mut b, 10), Err(FrameError::BadLength { len: 11, max: 10 }));
        let mut b = BytesMut::from(&b"ruok"[..]);
        assert!(split_frame(&mut b, 1 << 20).is_err());
        assert_eq!(four_letter_word(b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word(b"xyzw"), None);
    }
}
