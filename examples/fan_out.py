#!/usr/bin/env python3
"""Fan-out with at most N workers at once (a semaphore).

Ten workers each render one report, but the rendering service takes at most three callers at
a time. Each worker asks for one of three slots of 'renderers' and waits in line, in arrival
order, without polling; at most three are ever inside, every worker gets its turn, and the
slot numbers tell them apart (e.g. to pick one of three connections to the service).
"""

import threading
import time

from _common import connect, run_all, say

SLOTS = 3
inside = set()
most_inside = 0
served = []
count_lock = threading.Lock()
# Every worker connects first: arrivals are counted from the moment all are connected, so a slow
# connection (a busy machine) cannot change the order they line up in.
connected = threading.Barrier(10)


def worker(name, arrival):
    def work():
        global most_inside
        try:
            conn = connect(name)
        except Exception:
            connected.abort()  # the others stop waiting for this one
            raise
        connected.wait(timeout=60)
        time.sleep(arrival)
        slot = conn.execute("SELECT pglock.acquire_slot('renderers', %s, '30 seconds')",
                            (SLOTS,)).fetchone()[0]
        assert slot is not None, f"{name} got no slot within 30 seconds"
        with count_lock:
            assert slot not in inside, f"slot {slot} given twice"
            inside.add(slot)
            most_inside = max(most_inside, len(inside))
            served.append(name)
        say(name, f"rendering in slot {slot}")
        time.sleep(1.0)
        with count_lock:
            inside.discard(slot)
        assert conn.execute("SELECT pglock.release_slot('renderers', %s)", (slot,)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM pglock.held()").fetchone()[0] == 0
        conn.close()
    return work


# Workers arrive 100 ms apart and render for a second: the first three are inside by 0.2 s,
# and the other seven are all in line, in a clear order, before the first one is done.
run_all(*(worker(f"worker-{i}", 0.1 * i) for i in range(10)))
assert len(served) == 10, served
assert most_inside == SLOTS, most_inside
# The first three went straight in; the others were served in the order they lined up.
assert served[3:] == [f"worker-{i}" for i in range(3, 10)], served
print(f"ok: 10 workers done, at most {most_inside} at once, served in arrival order")
