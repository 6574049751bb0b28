"""A small ZooKeeper wire client written from the protocol notes, for tests.

It is deliberately independent of Corral's Rust encoder and of kazoo: the
differential tests drive Apache ZooKeeper and Corral with it, byte for byte,
and compare what comes back. Every frame received is kept in arrival order
(`transcript`), so the order of replies and watch events is compared too.
"""

import socket
import struct
import time

CREATE, DELETE, EXISTS, GET_DATA, SET_DATA, GET_ACL, SET_ACL, GET_CHILDREN = 1, 2, 3, 4, 5, 6, 7, 8
SYNC, PING, GET_CHILDREN2, CHECK, MULTI, CREATE2 = 9, 11, 12, 13, 14, 15
CHECK_WATCHES, REMOVE_WATCHES, CREATE_CONTAINER, CREATE_TTL, MULTI_READ = 17, 18, 19, 21, 22
GET_EPHEMERALS, GET_ALL_CHILDREN_NUMBER, ADD_WATCH, WHO_AM_I = 103, 104, 106, 107
CLOSE_SESSION = -11

OPEN_ACL = [(31, "world", "anyone")]


class Writer:
    def __init__(self):
        self.b = bytearray()

    def int(self, v):
        self.b += struct.pack(">i", v)
        return self

    def long(self, v):
        self.b += struct.pack(">q", v)
        return self

    def bool(self, v):
        self.b += b"\x01" if v else b"\x00"
        return self

    def buf(self, v):
        if v is None:
            return self.int(-1)
        self.int(len(v))
        self.b += v
        return self

    def str(self, v):
        return self.buf(v.encode())

    def acl(self, acl):
        self.int(len(acl))
        for perms, scheme, ident in acl:
            self.int(perms).str(scheme).str(ident)
        return self


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        v = self.b[self.i:self.i + n]
        if len(v) != n:
            raise ValueError("short record")
        self.i += n
        return v

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def long(self):
        return struct.unpack(">q", self.take(8))[0]

    def bool(self):
        return self.take(1) != b"\x00"

    def buf(self):
        n = self.int()
        return None if n < 0 else bytes(self.take(n))

    def str(self):
        v = self.buf()
        return None if v is None else v.decode()

    def strings(self):
        return [self.str() for _ in range(self.int())]

    def stat(self):
        names = ["czxid", "mzxid", "ctime", "mtime", "version", "cversion", "aversion",
                 "ephemeralOwner", "dataLength", "numChildren", "pzxid"]
        kinds = "qqqqiiiqiiq"
        return {n: (self.long() if k == "q" else self.int()) for n, k in zip(names, kinds)}

    def acl(self):
        return [(self.int(), self.str(), self.str()) for _ in range(self.int())]


class Session:
    """One connection with one session. `call` sends a request and waits for
    its reply, collecting watch events that arrive meanwhile."""

    def __init__(self, host, port, timeout_ms=30000, session_id=0, password=b"\0" * 16, last_zxid=0,
                 read_only_byte=True):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.xid = 0
        self.closed = False
        self.transcript = []
        w = Writer().int(0).long(last_zxid).int(timeout_ms).long(session_id).buf(password)
        if read_only_byte:
            w.bool(False)
        self._send(bytes(w.b))
        body = self._recv()
        if body is None:
            raise ConnectionError("closed during handshake")
        r = Reader(body)
        r.int()
        self.timeout_ms = r.int()
        self.session_id = r.long()
        self.password = r.buf()
        self.connect_response_len = len(body)

    def _send(self, payload):
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def _recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out

    def _recv(self):
        head = self._recv_exact(4)
        if head is None:
            return None
        return self._recv_exact(struct.unpack(">i", head)[0])

    def send(self, opcode, body=b"", xid=None):
        if xid is None:
            self.xid += 1
            xid = self.xid
        self._send(struct.pack(">ii", xid, opcode) + body)
        return xid

    def recv_frame(self):
        """(xid, zxid, err, body) or None when closed; events are recorded."""
        body = self._recv()
        if body is None:
            return None
        xid, zxid, err = struct.unpack(">iqi", body[:16])
        rest = body[16:]
        if xid == -1:
            r = Reader(rest)
            ev = ("event", r.int(), r.int(), r.str())
            self.transcript.append(ev)
        return xid, zxid, err, rest

    def call(self, opcode, body=b""):
        xid = self.send(opcode, body)
        while True:
            f = self.recv_frame()
            if f is None:
                raise ConnectionError("closed while waiting for xid %d" % xid)
            if f[0] == -1:
                continue
            if f[0] != xid:
                raise AssertionError("reply xid %d, expected %d" % (f[0], xid))
            return f

    def auth(self, scheme, auth):
        """addauth: xid -4; returns the reply's error code."""
        self.send(100, bytes(Writer().int(0).str(scheme).buf(auth).b), xid=-4)
        while True:
            f = self.recv_frame()
            if f is None:
                return None
            if f[0] == -4:
                return f[2]

    def wait_events(self, seconds=0.3):
        """Collects events for a while (pings keep the session alive)."""
        end = time.time() + seconds
        self.sock.settimeout(0.05)
        try:
            while time.time() < end:
                try:
                    f = self.recv_frame()
                except socket.timeout:
                    continue
                if f is None:
                    break
        finally:
            self.sock.settimeout(10)

    def close(self):
        if self.closed:
            return
        try:
            self.call(CLOSE_SESSION)
        except (ConnectionError, OSError):
            pass
        self.sock.close()
        self.closed = True


def create_body(path, data=b"", flags=0, acl=OPEN_ACL, ttl=None):
    w = Writer().str(path).buf(data).acl(acl).int(flags)
    if ttl is not None:
        w.long(ttl)
    return bytes(w.b)


def path_watch(path, watch=False):
    return bytes(Writer().str(path).bool(watch).b)


def multi_body(ops):
    """ops: (opcode, body) pairs."""
    w = Writer()
    for opcode, body in ops:
        w.int(opcode).bool(False).int(-1)
        w.b += body
    w.int(-1).bool(True).int(-1)
    return bytes(w.b)


def decode_multi(body):
    """Write-multi and multiRead results."""
    r = Reader(body)
    out = []
    while True:
        kind, done, err = r.int(), r.bool(), r.int()
        if done:
            return out
        if kind == -1:
            out.append(("error", r.int()))
        elif kind in (CREATE,):
            out.append(("create", r.str()))
        elif kind in (CREATE2, 19, 21):
            out.append(("create2", r.str(), r.stat()))
        elif kind == SET_DATA:
            out.append(("setData", r.stat()))
        elif kind == DELETE:
            out.append(("delete",))
        elif kind == CHECK:
            out.append(("check",))
        elif kind == GET_DATA:
            out.append(("getData", r.buf(), r.stat()))
        elif kind == GET_CHILDREN:
            out.append(("getChildren", sorted(r.strings())))
        else:
            raise ValueError("multi result type %d" % kind)


def four_letter(host, port, word):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(word.encode())
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()
