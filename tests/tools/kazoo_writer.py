"""A kazoo client writing through faults: creates sequential znodes under
a path for a while, reconnecting and retrying as kazoo does, and prints
each acknowledged path. The caller checks that every one of them exists.

    kazoo_writer.py HOSTS PATH SECONDS
"""

import sys
import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.retry import KazooRetry


def main():
    hosts, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5)
    zk = KazooClient(hosts=hosts, timeout=10, connection_retry=retry)
    zk.start(timeout=30)
    # The faults may already run: a connection lost here is retried too
    # (creating the parent again is harmless).
    while True:
        try:
            zk.ensure_path(path)
            break
        except KazooException:
            time.sleep(0.05)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        try:
            created = zk.create(path + "/n-", b"%d" % n, sequence=True)
        except KazooException:
            # The outcome is unknown (a connection lost mid-request): not
            # acknowledged, so not promised.
            time.sleep(0.05)
            continue
        print(created, flush=True)
        n += 1
    zk.stop()
    zk.close()


if __name__ == "__main__":
    main()
