#!/usr/bin/env python3
"""A pool of N worker slots.

Eight workers share three slots of a rate-limited resource. A worker takes the first free slot
(`try_lock` on slot names, first one granted wins) or waits a little and tries again; at most
three ever work at once, and every worker gets its turn.
"""

import threading
import time

from _common import connect, run_all, say

SLOTS = 3
inside = 0
most_inside = 0
finished = []
count_lock = threading.Lock()


def worker(name):
    def work():
        global inside, most_inside
        conn = connect(name)
        while True:
            slot = conn.execute(
                "SELECT slot FROM generate_series(1, %s) AS slot "
                "WHERE pglock.try_lock('gpu-slot:' || slot) LIMIT 1", (SLOTS,)).fetchone()
            if slot:
                break
            time.sleep(0.05)
        slot = slot[0]
        with count_lock:
            inside += 1
            most_inside = max(most_inside, inside)
        say(name, f"working in slot {slot}")
        time.sleep(0.3)
        with count_lock:
            inside -= 1
        assert conn.execute("SELECT pglock.unlock('gpu-slot:' || %s)", (slot,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pglock.held()").fetchone()[0] == 0
        finished.append(name)
        conn.close()
    return work


run_all(*(worker(f"worker-{i}") for i in range(8)))
assert len(finished) == 8, finished
assert most_inside <= SLOTS, most_inside
print(f"ok: 8 workers done, at most {most_inside} at once")
