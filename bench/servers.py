"""Release `corral serve` processes for the benchmarks: one node, or a
cluster of N members on loopback. The Apache ZooKeeper side is
tests/tools/apache_zookeeper.py.
"""

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORRAL = ROOT / "target" / "release" / "corral"
SECRET = "bench-cluster-secret-0123456789"
TOKEN = "corral_bench_token_0123456789abcdef"


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


def four_letter(port, word, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out.decode()
                out += chunk
    except OSError:
        return ""


def mode(port):
    for line in four_letter(port, "srvr").splitlines():
        if line.startswith("Mode: "):
            return line[6:]
    return None


class Corral:
    """A release `corral serve` on fresh ports and a fresh data dir."""

    def __init__(self, workdir, port=None, settings=None, start=True):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.http = free_port()
        self.raft = free_port()
        self.settings = dict(settings or {})
        self.proc = None
        if start:
            self.start()

    @property
    def hosts(self):
        return "127.0.0.1:%d" % self.port

    def spawn(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env.update(CORRAL_MAX_CONNECTIONS_PER_IP="0", CORRAL_EXTENDED_TYPES="true",
                   RUST_LOG=os.environ.get("CORRAL_BENCH_LOG", "warn"))
        for k, v in self.settings.items():
            env["CORRAL_" + k.upper()] = v
        cmd = [str(CORRAL), "serve", "--data-dir", str(self.dir / "data"), "--client-addr", self.hosts,
               "--http-addr", "127.0.0.1:%d" % self.http, "--raft-addr", "127.0.0.1:%d" % self.raft]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(self.dir / "log", "ab"))

    def wait_ready(self):
        while b"serving ZooKeeper clients" not in self.proc.stdout.readline():
            if self.proc.poll() is not None:
                raise RuntimeError("corral did not start; see %s/log" % self.dir)

    def start(self):
        self.spawn()
        self.wait_ready()

    def pids(self):
        return [self.proc.pid] if self.proc else []

    def kill9(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None


class CorralCluster:
    """N members with one initial_cluster, secret and admin token."""

    def __init__(self, workdir, n=3, settings=None):
        self.nodes = [Corral(Path(workdir) / ("n%d" % (i + 1)), settings=settings, start=False) for i in range(n)]
        members = ",".join('"%d=127.0.0.1:%d"' % (i + 1, c.raft) for i, c in enumerate(self.nodes))
        for i, c in enumerate(self.nodes):
            c.settings.update(NODE_ID=str(i + 1), INITIAL_CLUSTER="[%s]" % members, CLUSTER_SECRET=SECRET,
                              INITIAL_ADMIN_TOKEN=TOKEN)
            c.spawn()
        for c in self.nodes:
            c.wait_ready()

    @property
    def hosts(self):
        return ",".join(c.hosts for c in self.nodes)

    @property
    def ports(self):
        return [c.port for c in self.nodes]

    def pids(self):
        return [p for c in self.nodes for p in c.pids()]

    def leader(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, c in enumerate(self.nodes):
                if c.proc and mode(c.port) == "leader":
                    return i
            time.sleep(0.01)
        raise RuntimeError("no leader")

    def kill_node(self, i):
        self.nodes[i].kill9()

    def restart_node(self, i):
        self.nodes[i].start()

    def stop(self):
        for c in self.nodes:
            c.stop()
