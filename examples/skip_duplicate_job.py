#!/usr/bin/env python3
"""Skip a job another node is already running.

Three nodes start the nightly report at the same moment. Each tries the lock once; the one that
gets it runs the job, the others skip at once instead of running it twice.
"""

from _common import connect, run_all, say
import time

ran, skipped = [], []


def node(name):
    def work():
        conn = connect(name)
        if conn.execute("SELECT pglock.try_lock('job:nightly-report')").fetchone()[0]:
            say(name, "got the lock, running the nightly report")
            time.sleep(1)
            conn.execute("SELECT pglock.unlock('job:nightly-report')")
            ran.append(name)
            say(name, "done")
        else:
            say(name, "another node is running it: skipping")
            skipped.append(name)
        conn.close()
    return work


run_all(node("node-a"), node("node-b"), node("node-c"))
assert len(ran) == 1 and len(skipped) == 2, (ran, skipped)
print("ok: the job ran exactly once")
