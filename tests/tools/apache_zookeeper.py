"""Starts a real Apache ZooKeeper (Debian's `zookeeper` package, 3.8) on
loopback: one standalone server or a 3-node ensemble, for differential tests
and side-by-side benchmarks.

    zk = ApacheZooKeeper.standalone(workdir, port)
    zk = ApacheZooKeeper.ensemble(workdir, base_port)   # clients on base+1..base+3
    zk.hosts ; zk.pids() ; zk.stop()

Settings match what Corral's differential tests configure on their side:
tickTime 2000, TTL nodes on, the digest superuser `super:test`, every
four-letter word allowed, no admin HTTP server, no client limit. With
`durable=True` (the default) ZooKeeper fsyncs its log, as Corral does.

Run as a script: `python3 apache_zookeeper.py standalone DIR PORT`,
`... ensemble DIR BASE_PORT`, `... stop DIR`.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="  # super:test


def _jar_classpath():
    out = subprocess.run(["dpkg", "-L", "libzookeeper-java"], capture_output=True, text=True, check=True).stdout
    jar = next(l for l in out.splitlines() if l.endswith("/zookeeper.jar"))
    lib = os.path.dirname(jar)
    # zookeeper.jar's manifest brings its dependencies; these give log4j a backend.
    return ":".join([jar, os.path.join(lib, "slf4j-log4j12.jar"), os.path.join(lib, "log4j-1.2.jar")])


def free_base(span=30):
    """A base port with `span` free ports above it (for an ensemble)."""
    for base in range(21000, 60000, 100):
        try:
            for p in range(base, base + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def four_letter(port, word, timeout=2.0):
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


class ApacheZooKeeper:
    def __init__(self, workdir, ports):
        self.dir = Path(workdir)
        self.ports = ports
        self.procs = []
        self.launched = []

    @property
    def hosts(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def pids(self):
        return [p.pid for p in self.procs if p is not None]

    @staticmethod
    def _common(datadir, durable):
        lines = [
            "tickTime=2000", "initLimit=10", "syncLimit=5", "dataDir=%s" % datadir, "maxClientCnxns=0",
            "admin.enableServer=false", "4lw.commands.whitelist=*",
        ]
        if not durable:
            lines.append("forceSync=no")
        return "\n".join(lines) + "\n"

    def _launch(self, name, cfg, heap):
        self.launched.append((name, cfg, heap))
        log4j = self.dir / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n\n")
        cmd = ["java", "-Xmx%s" % heap, "-cp", _jar_classpath(), "-Dlog4j.configuration=file:%s" % log4j,
               "-Dzookeeper.extendedTypesEnabled=true",
               "-Dzookeeper.DigestAuthenticationProvider.superDigest=%s" % SUPER_DIGEST,
               "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)]
        log = open(self.dir / ("%s.log" % name), "ab")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True))

    def _wait(self, modes, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            up = [p for p in self.ports if any("Mode: %s" % m in four_letter(p, "srvr") for m in modes)]
            if len(up) == len(self.ports):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Apache ZooKeeper did not come up; see %s/*.log" % self.dir)

    @classmethod
    def standalone(cls, workdir, port, durable=True, heap="512m"):
        z = cls(workdir, [port])
        data = z.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = z.dir / "zoo.cfg"
        cfg.write_text(cls._common(data, durable) + "clientPort=%d\nclientPortAddress=127.0.0.1\n" % port)
        z._launch("zk", cfg, heap)
        z._wait(["standalone"])
        return z

    @classmethod
    def ensemble(cls, workdir, base_port, durable=True, heap="512m"):
        ports = [base_port + i for i in (1, 2, 3)]
        z = cls(workdir, ports)
        servers = "".join("server.%d=127.0.0.1:%d:%d:participant;127.0.0.1:%d\n"
                          % (i, base_port + 10 + i, base_port + 20 + i, base_port + i) for i in (1, 2, 3))
        for i in (1, 2, 3):
            node = z.dir / ("n%d" % i)
            (node / "data").mkdir(parents=True, exist_ok=True)
            (node / "data" / "myid").write_text("%d\n" % i)
            cfg = node / "zoo.cfg"
            cfg.write_text(cls._common(node / "data", durable) + "reconfigEnabled=true\nstandaloneEnabled=false\n"
                           + servers)
        for i in (1, 2, 3):
            z._launch("n%d" % i, z.dir / ("n%d" % i) / "zoo.cfg", heap)
        z._wait(["leader", "follower"])
        return z

    def leader(self, timeout=60):
        """The index of the ensemble's leader."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, p in enumerate(self.ports):
                if self.procs[i] is not None and "Mode: leader" in four_letter(p, "srvr", timeout=0.5):
                    return i
            time.sleep(0.01)
        raise RuntimeError("no leader")

    def kill_node(self, i):
        """kill -9 of one member of the ensemble."""
        self.procs[i].kill()
        self.procs[i].wait()
        self.procs[i] = None

    def restart_node(self, i):
        """Starts member i again on its data and waits until it serves."""
        name, cfg, heap = self.launched[i]
        self._launch(name, cfg, heap)
        self.launched.pop()
        proc = self.procs.pop()
        self.procs[i] = proc
        deadline = time.time() + 60
        while time.time() < deadline:
            if any("Mode: %s" % m in four_letter(self.ports[i], "srvr") for m in ("leader", "follower")):
                return
            time.sleep(0.05)
        raise RuntimeError("member %d did not come back" % i)

    def kill9(self):
        for p in self.procs:
            if p is not None:
                p.kill()
                p.wait()
        self.procs = []

    def relaunch(self):
        """Starts the same servers again, on the same data; does not wait."""
        launched, self.launched = self.launched, []
        for name, cfg, heap in launched:
            self._launch(name, cfg, heap)

    def stop(self):
        self.procs = [p for p in self.procs if p is not None]
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


if __name__ == "__main__":
    mode, workdir = sys.argv[1], sys.argv[2]
    if mode == "standalone":
        z = ApacheZooKeeper.standalone(workdir, int(sys.argv[3]))
    elif mode == "ensemble":
        z = ApacheZooKeeper.ensemble(workdir, int(sys.argv[3]))
    else:
        sys.exit("usage: apache_zookeeper.py standalone|ensemble DIR PORT")
    Path(workdir, "pids").write_text("".join("%d\n" % p for p in z.pids()))
    print(z.hosts)
