"""zkCli.sh from the Debian zookeeper package (the Java client) against
Corral."""

import re
import subprocess
import time

from conftest import zkcli


def run(corral, commands, timeout=60):
    script = "".join(c + "\n" for c in commands) + "quit\n"
    out = subprocess.run([zkcli(), "-server", corral.hosts], input=script.encode(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT,
                         timeout=timeout).stdout.decode()
    return "\n".join(l for l in out.splitlines() if "log4j" not in l and "SLF4J" not in l)


def test_zkcli_session(corral):
    out = run(corral, [
        "create /cli hello",
        "get -s /cli",
        "create -e /cli/eph",
        "create -s /cli/seq- x",
        "create -s /cli/seq- y",
        "ls /cli",
        "set /cli world",
        "set -v 0 /cli stale",
        "get /cli",
        "stat /cli",
        "getAcl /cli",
        "sync /cli",
        "delete /cli",
        "deleteall /cli",
        "ls /",
    ])
    assert "Created /cli\n" in out + "\n"
    assert "Created /cli/seq-0000000001" in out
    assert "Created /cli/seq-0000000002" in out
    assert "[eph, seq-0000000001, seq-0000000002]" in out
    assert "version No is not valid : /cli" in out, out
    assert "\nworld\n" in out
    assert re.search(r"dataVersion = 1\n", out), out
    assert re.search(r"numChildren = 3\n", out), out
    assert "'world,'anyone\n: cdrwa" in out
    assert "Sync is OK" in out
    assert "Node not empty: /cli" in out, out
    assert out.rstrip().endswith("[zookeeper]") or "[zookeeper]\n" in out, out


def test_zkcli_sees_the_ephemeral_owner(corral):
    out = run(corral, ["create -e /e x", "stat /e"])
    owner = re.search(r"ephemeralOwner = (0x[0-9a-f]+)", out).group(1)
    assert int(owner, 16) != 0
    out = run(corral, ["ls /"])
    assert "[zookeeper]" in out, "the ephemeral ended with zkCli's session"


def test_zkcli_3_6_commands(corral_like_apache):
    out = run(corral_like_apache, [
        "addauth digest alice:secret",
        "whoami",
        "create -c /box",
        "create -t 60000 /ttl x",
        "stat /ttl",
        "create -e /mine e",
        "getEphemerals",
        "create /acl x",
        "setAcl /acl digest:alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=:cdrwa",
        "getAcl /acl",
        "addWatch -m persistent_recursive /box",
        "create /box/a",
        "getAllChildrenNumber /box",
    ], timeout=90)
    assert "user: alice" in out or "digest" in out, out
    assert "Created /box" in out and "Created /ttl" in out
    assert "[/mine]" in out, out
    assert "'digest,'alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=\n: cdrwa" in out, out
    assert "WatchedEvent state:SyncConnected type:NodeCreated path:/box/a" in out, out
    assert "\n1\n" in out, "getAllChildrenNumber prints the count"


def test_c_client_smoke(corral):
    """The C client's cli_mt: commands on stdin, answered asynchronously, so
    each gets a moment before the next."""
    import shutil
    cli_mt = shutil.which("cli_mt") or "/usr/lib/zookeeper/bin/cli_mt"
    proc = subprocess.Popen([cli_mt, corral.hosts], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    time.sleep(1.0)  # commands sent before the session is up fail
    # cli_mt's create takes no data: set it afterwards.
    for cmd in ["create /c-client", "ls /", "set /c-client world", "get /c-client",
                "delete /c-client", "exists /c-client", "quit"]:
        proc.stdin.write((cmd + "\n").encode())
        proc.stdin.flush()
        time.sleep(0.3)
    out, _ = proc.communicate(timeout=60)
    out = out.decode(errors="replace")
    assert "[/c-client]: rc = 0" in out, out
    assert "\tc-client\n" in out, "ls / lists it\n" + out
    assert "world" in out, out
    assert "Watcher DELETED_EVENT state = CONNECTED_STATE for path /c-client" in out, out
    assert "Error -101 for /c-client" in out, "exists after delete: no node\n" + out
