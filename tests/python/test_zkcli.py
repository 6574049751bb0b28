"""zkCli.sh from the Debian zookeeper package (the Java client) against
Corral."""

import re
import subprocess

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
