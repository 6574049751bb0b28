"""Fixtures: a real `corral serve`, and a real Apache ZooKeeper 3.8.

Servers listen on free loopback ports and keep their data and logs under
pytest's temporary directory. A failing test prints the server's log.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

from apache_zookeeper import ApacheZooKeeper  # noqa: E402

# Short timers for tests, as in the Rust harness.
FAST = {
    "tick_time_ms": "200",
    "session_check_ms": "50",
    "election_timeout_min_ms": "150",
    "election_timeout_max_ms": "300",
    "heartbeat_interval_ms": "50",
    "state_sync_interval_ms": "200",
}

# What apache-zk.sh configures, so that differential runs compare like with like.
LIKE_APACHE = {
    "tick_time_ms": "2000",
    "extended_types": "true",
    "superuser_digest": "super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
    "four_letter_words": '["*"]',
}


def free_port():
    """A free port below the kernel's ephemeral range (32768 and up), so that
    no outgoing connection takes it before the server binds it."""
    while True:
        port = random.randrange(10000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def binary():
    return os.environ.get("TEST_CORRAL_BIN", str(ROOT / "target" / "debug" / "corral"))


class Corral:
    def __init__(self, workdir, settings, start=True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port()
        self.raft_port = free_port()
        self.settings = dict(settings)
        self.proc = None
        if start:
            self.start()

    @property
    def hosts(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.spawn()
        self.wait_ready()

    def spawn(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        for k, v in self.settings.items():
            env["CORRAL_" + k.upper()] = v
        env["CORRAL_CLIENT_ADDR"] = self.hosts
        env["CORRAL_HTTP_ADDR"] = "127.0.0.1:%d" % self.http_port
        env["CORRAL_RAFT_ADDR"] = "127.0.0.1:%d" % self.raft_port
        env["RUST_LOG"] = os.environ.get("CORRAL_TEST_LOG", "info,openraft=error")
        log = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen([binary(), "serve", "--data-dir", str(self.dir / "data")], env=env,
                                     stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)

    def wait_ready(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if "serving ZooKeeper clients" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("corral did not start:\n" + self.log())

    def log(self):
        try:
            return (self.dir / "node.log").read_text()
        except OSError:
            return ""

    def kill9(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=20) == 0, self.log()
            self.proc = None

    def restart(self):
        self.start()


@pytest.fixture
def corral(tmp_path, request):
    c = Corral(tmp_path, FAST)
    yield c
    c.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("---- corral log ----\n" + c.log())


CLUSTER_SECRET = "python-cluster-secret-0123456789"
CLUSTER_TOKEN = "corral_python_token_0123456789abcdef"


class Cluster:
    """Three `corral serve` members on loopback, started together."""

    def __init__(self, workdir, settings, n=3):
        self.nodes = [Corral(Path(workdir) / ("node-%d" % (i + 1)), settings, start=False) for i in range(n)]
        members = ",".join('"%d=127.0.0.1:%d"' % (i + 1, c.raft_port) for i, c in enumerate(self.nodes))
        for i, c in enumerate(self.nodes):
            c.settings.update(node_id=str(i + 1), initial_cluster="[%s]" % members, cluster_secret=CLUSTER_SECRET,
                              initial_admin_token=CLUSTER_TOKEN)
            c.spawn()
        for c in self.nodes:
            c.wait_ready()

    @property
    def hosts(self):
        return ",".join(c.hosts for c in self.nodes)

    def kill9(self):
        for c in self.nodes:
            c.kill9()


@pytest.fixture
def corral_cluster(tmp_path, request):
    c = Cluster(tmp_path, {**FAST, **LIKE_APACHE, "reconfig_enabled": "true", "tick_time_ms": "200"})
    yield c
    c.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for n in c.nodes:
            print("---- corral log %s ----\n%s" % (n.dir, n.log()))


@pytest.fixture
def corral_like_apache(tmp_path):
    c = Corral(tmp_path, LIKE_APACHE)
    yield c
    c.kill9()


@pytest.fixture
def apache_zk(tmp_path):
    z = ApacheZooKeeper.standalone(tmp_path / "apache-zk", free_port())
    yield z
    z.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def zkcli():
    path = shutil.which("zkCli.sh") or "/usr/share/zookeeper/bin/zkCli.sh"
    assert Path(path).exists(), "zkCli.sh is missing: apt-get install zookeeper"
    return path
