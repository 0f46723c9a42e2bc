#!/usr/bin/env python3
"""A pool of N worker slots (a semaphore: pglock.acquire_slot).

Eight workers share three slots of a rate-limited resource. Each asks for a slot and waits in
line for one (in PostgreSQL's lock queue, no polling), at most 10 s; it gets the number of the
slot it holds, works, and gives it back. At most three ever work at once, every worker gets its
turn, and no slot number is used by two workers at the same time.
"""

import threading
import time

from _common import connect, run_all, say

SLOTS = 3
inside = 0
most_inside = 0
slots_in_use = set()
finished = []
count_lock = threading.Lock()


def worker(name):
    def work():
        global inside, most_inside
        conn = connect(name)
        slot = conn.execute("SELECT pglock.acquire_slot('gpu', %s, '10 seconds')",
                            (SLOTS,)).fetchone()[0]
        assert slot is not None, f"{name}: no slot within 10 s"
        with count_lock:
            assert slot not in slots_in_use, f"slot {slot} given twice"
            slots_in_use.add(slot)
            inside += 1
            most_inside = max(most_inside, inside)
        say(name, f"working in slot {slot}")
        time.sleep(0.3)
        with count_lock:
            inside -= 1
            slots_in_use.discard(slot)
        assert conn.execute("SELECT pglock.release_slot('gpu', %s)", (slot,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pglock.held()").fetchone()[0] == 0
        with count_lock:
            finished.append(name)
        conn.close()
    return work


run_all(*(worker(f"worker-{i}") for i in range(8)))
assert len(finished) == 8, finished
assert most_inside <= SLOTS, most_inside
print(f"ok: 8 workers done, at most {most_inside} at once")
