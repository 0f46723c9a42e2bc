#!/usr/bin/env python3
"""One migration while readers continue (an upgradeable lock).

Readers read the configuration under a shared lock, all the time. A migrator takes the
upgradeable lock: readers go on while it prepares the new configuration (slow), and only the
switch itself is exclusive (fast). A second migrator, meanwhile, waits for the upgradeable
lock, then finds the migration done and skips it.
"""

import threading
import time

from _common import connect, run_all, say

setup = connect("setup")
setup.execute("DROP TABLE IF EXISTS example_config")
setup.execute("CREATE TABLE example_config (version int NOT NULL)")
setup.execute("INSERT INTO example_config VALUES (1)")

stop = threading.Event()
events = []  # (time, who, what)
events_lock = threading.Lock()


def note(who, what):
    with events_lock:
        events.append((time.monotonic(), who, what))


def reader(name):
    def work():
        conn = connect(name)
        while not stop.is_set():
            assert conn.execute("SELECT pglock.lock_shared('config', '10 s')").fetchone()[0]
            version = conn.execute("SELECT version FROM example_config").fetchone()[0]
            note(name, f"read {version}")
            time.sleep(0.02)
            assert conn.execute("SELECT pglock.unlock_shared('config')").fetchone()[0]
    return work


def migrator(name, start):
    def work():
        time.sleep(start)
        conn = connect(name)
        assert conn.execute("SELECT pglock.lock_upgradeable('config', '30 s')").fetchone()[0]
        if conn.execute("SELECT version FROM example_config").fetchone()[0] == 2:
            say(name, "version 2 is already there: nothing to do")
            note(name, "skipped")
        else:
            note(name, "preparing")
            say(name, "preparing version 2 while readers go on (1 second)")
            time.sleep(1)
            assert conn.execute("SELECT pglock.upgrade('config', '30 s')").fetchone()[0]
            note(name, "exclusive")
            conn.execute("UPDATE example_config SET version = 2")
            note(name, "switched")
            assert conn.execute("SELECT pglock.downgrade('config')").fetchone()[0]
            say(name, "switched to version 2")
        assert conn.execute("SELECT pglock.unlock_upgradeable('config')").fetchone()[0]
        conn.close()
    return work


def stop_later():
    time.sleep(2.5)
    stop.set()


run_all(*(reader(f"reader-{i}") for i in range(3)),
        migrator("migrator-a", 0.2), migrator("migrator-b", 0.4), stop_later)

by_what = {}
for at, who, what in events:
    by_what.setdefault(what, []).append((at, who))
(preparing_at, _), = by_what["preparing"]
(exclusive_at, _), = by_what["exclusive"]
(switched_at, _), = by_what["switched"]
assert [who for _, who in by_what["skipped"]] == ["migrator-b"], by_what["skipped"]
reads = [(at, what) for at, who, what in events if what.startswith("read")]
# Readers kept reading while the migration was being prepared...
assert any(preparing_at < at < exclusive_at for at, _ in reads), "readers stopped too early"
# ... never while it was exclusive, and saw the new version right after.
assert not any(exclusive_at < at < switched_at for at, _ in reads), "a read during the switch"
assert all(what == "read 1" for at, what in reads if at < exclusive_at)
assert all(what == "read 2" for at, what in reads if at > switched_at)
setup.execute("DROP TABLE example_config")
print(f"ok: {len(reads)} reads, migrated once while readers continued, the second migrator skipped")
