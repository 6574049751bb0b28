//! Jute, ZooKeeper's binary serialization: the primitive types.
//!
//! A jute record is its fields concatenated in schema order, with no tags and
//! no lengths except inside `buffer`, `ustring` and `vector`:
//!
//! | jute type   | bytes on the wire                                  |
//! |-------------|----------------------------------------------------|
//! | `boolean`   | 1 byte, 0 or 1                                     |
//! | `int`       | 4 bytes, big-endian, signed                        |
//! | `long`      | 8 bytes, big-endian, signed                        |
//! | `buffer`    | `int` length, then the bytes; length -1 means null |
//! | `ustring`   | like `buffer`, holding UTF-8                       |
//! | `vector<T>` | `int` count (-1 = null), then the elements         |
//!
//! [`Reader`] never panics and never allocates more than the input could
//! hold: every length is checked against the bytes that remain, so a hostile
//! frame that claims a 2 GiB buffer fails with [`DecodeError`] instead of
//! reserving memory.

use bytes::{BufMut, BytesMut};

/// Why a frame could not be decoded. The connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame ended early: wanted {wanted} more bytes at offset {offset}")]
    Truncated { offset: usize, wanted: usize },
    #[error("negative length {0} where null is not allowed")]
    BadLength(i32),
    #[error("string at offset {0} is not valid UTF-8")]
    BadUtf8(usize),
    #[error("boolean byte {0} is neither 0 nor 1")]
    BadBool(u8),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("unknown value {value} for {field}")]
    BadEnum { field: &'static str, value: i32 },
}

/// Reads jute primitives from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { offset: self.pos, wanted: n - self.remaining() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::BadBool(b)),
        }
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A `buffer`; `None` when the length is -1 (null).
    pub fn buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.i32()?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::BadLength(n)),
            n => self.take(n as usize).map(Some),
        }
    }

    /// A `ustring`; `None` when null.
    pub fn ustring(&mut self) -> Result<Option<String>, DecodeError> {
        let offset = self.pos;
        match self.buffer()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b).map(|s| Some(s.to_owned())).map_err(|_| DecodeError::BadUtf8(offset)),
        }
    }

    /// A `ustring` where null reads as the empty string, as the Java server
    /// treats a null path.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.ustring()?.unwrap_or_default())
    }

    /// A `vector<T>`, each element read by `item`. Null reads as empty.
    ///
    /// `min_item_bytes` is the smallest encoding of one element; the count is
    /// checked against it so that a forged count cannot reserve memory the
    /// frame could not fill.
    pub fn vector<T>(
        &mut self,
        min_item_bytes: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.i32()?;
        if count == -1 {
            return Ok(Vec::new());
        }
        if count < 0 {
            return Err(DecodeError::BadLength(count));
        }
        let count = count as usize;
        if count.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                wanted: count * min_item_bytes.max(1) - self.remaining(),
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    pub fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        self.vector(4, |r| r.string())
    }
}

/// Appends jute primitives to a buffer.
pub trait JuteWrite {
    fn write_bool(&mut self, v: bool);
    fn write_i32(&mut self, v: i32);
    fn write_i64(&mut self, v: i64);
    fn write_buffer(&mut self, v: Option<&[u8]>);
    fn write_string(&mut self, v: &str);
    fn write_strings<S: AsRef<str>>(&mut self, v: &[S]);
}

impl JuteWrite for BytesMut {
    fn write_bool(&mut self, v: bool) {
        self.put_u8(v as u8);
    }
    fn write_i32(&mut self, v: i32) {
        self.put_i32(v);
    }
    fn write_i64(&mut self, v: i64) {
        self.put_i64(v);
    }
    fn write_buffer(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.put_i32(-1),
            Some(b) => {
                self.put_i32(b.len() as i32);
                self.put_slice(b);
            }
        }
    }
    fn write_string(&mut self, v: &str) {
        self.write_buffer(Some(v.as_bytes()));
    }
    fn write_strings<S: AsRef<str>>(&mut self, v: &[S]) {
        self.put_i32(v.len() as i32);
        for s in v {
            self.write_string(s.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut b = BytesMut::new();
        b.write_bool(true);
        b.write_i32(-7);
        b.write_i64(1 << 40);
        b.write_buffer(None);
        b.write_buffer(Some(b""));
        b.write_string("/a");
        b.write_strings(&["x", "yz"]);
        let mut r = Reader::new(&b);
        assert!(r.bool().unwrap());
        assert_eq!(r.i32().unwrap(), -7);
        assert_eq!(r.i64().unwrap(), 1 << 40);
        assert_eq!(r.buffer().unwrap(), None);
        assert_eq!(r.buffer().unwrap(), Some(&b""[..]));
        assert_eq!(r.string().unwrap(), "/a");
        assert_eq!(r.strings().unwrap(), vec!["x".to_string(), "yz".to_string()]);
        r.finish().unwrap();
    }

    #[test]
    fn forged_lengths_fail_without_allocating() {
        // A buffer that claims 2^31-1 bytes in a 4-byte frame.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(r.buffer(), Err(DecodeError::Truncated { .. })));
        // A vector that claims 2^31-1 elements.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(r.strings(), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(r.buffer(), Err(DecodeError::BadLength(-2)));
        let mut r = Reader::new(&[2]);
        assert_eq!(r.bool(), Err(DecodeError::BadBool(2)));
    }
}
