"""The secure client port (TLS) with real clients: kazoo with its TLS
options, and the Java client (zkCli.sh over Netty with PEM stores).
Certificates come from the openssl command line, made for each test."""

import os
import socket
import ssl
import subprocess
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import make_acl

from conftest import FAST, Corral, free_port, zkcli


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/O=Corral tests/CN=Test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)


def make_cert(d, name, subject, san=None):
    """A key and a certificate signed by the test CA; PEM, PKCS#8 key."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", f"{name}.pem", cwd=d)
    # The Java client's PEM key store: the key, then the certificate.
    (d / f"{name}.keystore.pem").write_text((d / f"{name}.key").read_text() + (d / f"{name}.pem").read_text())
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d)
    make_cert(d, "server", "/O=Corral tests/CN=corral", san="IP:127.0.0.1")
    make_cert(d, "alice", "/O=Corral tests/CN=alice")
    make_cert(d, "bob", "/O=Corral tests/CN=bob")
    return d


@pytest.fixture
def secure(tmp_path, pki, request):
    port = free_port()
    settings = dict(FAST)
    settings.update({
        "secure_client_addr": "127.0.0.1:%d" % port,
        "tls_cert_file": str(pki / "server.pem"),
        "tls_key_file": str(pki / "server.key"),
        "tls_ca_file": str(pki / "ca.pem"),
        "tls_client_auth": "need",
        "tls_reload_interval_ms": "100",
        "tls_superuser_dn": "CN=admin,O=Corral tests",
    })
    c = Corral(tmp_path / "corral", settings)
    c.secure_hosts = "127.0.0.1:%d" % port
    yield c
    c.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("---- corral log ----\n" + c.log())


def tls_client(corral, pki, who):
    zk = KazooClient(hosts=corral.secure_hosts, use_ssl=True, verify_certs=True, ca=str(pki / "ca.pem"),
                     certfile=str(pki / f"{who}.pem"), keyfile=str(pki / f"{who}.key"), timeout=10)
    zk.start(timeout=15)
    return zk


def test_kazoo_over_tls_with_x509_acls(secure, pki):
    alice = tls_client(secure, pki, "alice")
    bob = tls_client(secure, pki, "bob")
    try:
        # Only alice's certificate subject may read and write it.
        acl = make_acl("x509", "CN=alice,O=Corral tests", all=True)
        alice.create("/tls-secret", b"for alice", acl=[acl])
        assert alice.get("/tls-secret")[0] == b"for alice"
        with pytest.raises(NoAuthError):
            bob.get("/tls-secret")
        with pytest.raises(NoAuthError):
            bob.set("/tls-secret", b"bob was here")
        # Clients on the plain port share the tree; x509 ids are not theirs.
        plain = KazooClient(hosts=secure.hosts, timeout=10)
        plain.start(timeout=15)
        try:
            assert plain.exists("/tls-secret") is not None
            with pytest.raises(NoAuthError):
                plain.get("/tls-secret")
        finally:
            plain.stop()
    finally:
        alice.stop()
        bob.stop()


def test_the_configured_subject_is_the_superuser(secure, pki):
    make_cert(pki, "admin", "/O=Corral tests/CN=admin")
    alice = tls_client(secure, pki, "alice")
    admin = tls_client(secure, pki, "admin")
    try:
        alice.create("/alice-only", b"x", acl=[make_acl("x509", "CN=alice,O=Corral tests", all=True)])
        assert admin.get("/alice-only")[0] == b"x"
    finally:
        alice.stop()
        admin.stop()


def handshake(corral, pki, who=None):
    """A raw TLS handshake; returns the server certificate it presented."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if who:
        ctx.load_cert_chain(str(pki / f"{who}.pem"), str(pki / f"{who}.key"))
    host, port = corral.secure_hosts.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            cert = s.getpeercert(binary_form=True)
            # TLS 1.3 reports a refused client certificate after the
            # handshake: a request and a read show it.
            s.sendall(b"\0\0\0\x2c" + bytes(44))
            s.settimeout(5)
            s.recv(1)
            return cert


def test_a_client_without_a_certificate_is_refused(secure, pki):
    handshake(secure, pki, "alice")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(secure, pki)


def test_a_renewed_certificate_is_used_without_a_restart(secure, pki):
    before = handshake(secure, pki, "alice")
    # Renew: a new key and certificate written over the old files.
    make_cert(pki, "server", "/O=Corral tests/CN=corral renewed", san="IP:127.0.0.1")
    deadline = time.time() + 10
    after = before
    while after == before and time.time() < deadline:
        time.sleep(0.2)
        after = handshake(secure, pki, "alice")
    assert after != before, "the server still presents the old certificate"
    assert b"corral renewed" in after
    assert secure.proc.poll() is None
    assert "TLS certificate files changed" in secure.log()


def test_zkcli_over_tls(secure, pki):
    # Debian's zookeeper.jar lists netty's jars in its manifest but not
    # netty-resolver and netty-codec, which the Netty client socket needs.
    classpath = ":".join(["/etc/zookeeper/conf", "/usr/share/java/zookeeper.jar",
                          "/usr/share/java/netty-resolver.jar", "/usr/share/java/netty-codec.jar"])
    flags = " ".join([
        "-cp", classpath,
        "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty",
        "-Dzookeeper.client.secure=true",
        "-Dzookeeper.ssl.keyStore.location=%s" % (pki / "alice.keystore.pem"),
        "-Dzookeeper.ssl.keyStore.type=PEM",
        "-Dzookeeper.ssl.trustStore.location=%s" % (pki / "ca.pem"),
        "-Dzookeeper.ssl.trustStore.type=PEM",
    ])
    env = dict(os.environ, CLIENT_JVMFLAGS=flags)
    script = "create /java-tls hello\ngetAcl /java-tls\nget /java-tls\nquit\n"
    out = subprocess.run([zkcli(), "-server", secure.secure_hosts], input=script.encode(), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90).stdout.decode()
    assert "Created /java-tls" in out, out
    assert "\nhello\n" in out, out
