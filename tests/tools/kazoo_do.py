"""Writes with an unmodified kazoo client, for tests written in other
languages (the console's browser tests): another client's changes, made
through the ZooKeeper protocol.

    kazoo_do.py HOST:PORT tree            # the demo tree under /app
    kazoo_do.py HOST:PORT set PATH TEXT   # setData, any version
    kazoo_do.py HOST:PORT load SECONDS    # reads and writes, for charts
"""

import json
import sys
import time

from kazoo.client import KazooClient


def main():
    host, command, *args = sys.argv[1:]
    zk = KazooClient(hosts=host, timeout=10)
    zk.start(timeout=10)
    try:
        if command == "tree":
            config = {"feature_flags": {"checkout_v2": True}, "max_connections": 64, "regions": ["eu-west", "us-east"]}
            zk.create("/app/config", json.dumps(config).encode(), makepath=True)
            zk.create("/app/motd", b"Maintenance window: Sunday 02:00 UTC")
            zk.create("/app/raw", bytes(range(0, 40)))
            for i in range(1, 4):
                meta = {"host": f"10.0.0.{i}", "port": 8080 + i}
                zk.create(f"/app/services/payments/instance-{i}", json.dumps(meta).encode(), makepath=True)
            zk.create("/app/locks")
        elif command == "set":
            path, text = args
            zk.set(path, text.encode())
        elif command == "load":
            end = time.monotonic() + float(args[0])
            i = 0
            while time.monotonic() < end:
                zk.set("/app/motd", f"load {i}".encode())
                zk.get("/app/config")
                i += 1
        else:
            sys.exit(f"unknown command {command}")
    finally:
        zk.stop()
        zk.close()


if __name__ == "__main__":
    main()
