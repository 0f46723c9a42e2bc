#!/usr/bin/env python3
"""pglock's Prometheus metrics for real: prometheus-postgres-exporter (Debian's package) runs
against the test cluster with contrib/prometheus/queries.yaml, a known workload holds and waits
for locks, and /metrics must show pglock's series (status, locks, statistics) with exactly the
workload's values.

Needs the running throwaway cluster of scripts/cluster.sh with pglock preloaded and `CREATE
EXTENSION pglock` done in postgres (PGHOST, PGPORT). Usage: prometheus.py
"""

import os
import re
import subprocess
import time
import urllib.request

import psycopg

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ADDRESS = "127.0.0.1:55490"
dsn = f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} user=postgres dbname=postgres"


def metrics():
    """{(name, frozenset of label pairs without 'server'): value} from /metrics."""
    with urllib.request.urlopen(f"http://{ADDRESS}/metrics", timeout=10) as response:
        text = response.read().decode()
    series = {}
    for line in text.splitlines():
        match = re.match(r"^(pglock_\w+)(?:\{(.*)\})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            labels.pop("server", None)
            series[(match.group(1), frozenset(labels.items()))] = float(match.group(3))
    return series


def value(series, name, **labels):
    return series.get((name, frozenset(labels.items())))


exporter = subprocess.Popen(
    ["prometheus-postgres-exporter",
     f"--extend.query-path={os.path.join(ROOT, 'contrib/prometheus/queries.yaml')}",
     f"--web.listen-address={ADDRESS}", "--disable-default-metrics",
     "--disable-settings-metrics"],
    env=dict(os.environ, DATA_SOURCE_NAME=dsn + " sslmode=disable"),
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    holder = psycopg.connect(dsn, autocommit=True)
    # A known, finished workload for pglock.stats: 3 stacked acquisitions and 1 hold of
    # metrics-c, and another session's try (busy) and 10 ms wait (timeout) meanwhile.
    holder.execute("SELECT pglock.stats_reset()")
    other = psycopg.connect(dsn, autocommit=True)
    assert holder.execute("SELECT pglock.try_lock('metrics-c') AND pglock.try_lock('metrics-c') "
                          "AND pglock.try_lock('metrics-c')").fetchone()[0]
    assert other.execute("SELECT pglock.try_lock('metrics-c') OR pglock.lock('metrics-c', '10 ms')"
                         ).fetchone()[0] is False
    assert holder.execute("SELECT pglock.unlock('metrics-c') AND pglock.unlock('metrics-c') "
                          "AND pglock.unlock('metrics-c')").fetchone()[0]
    other.close()
    assert holder.execute("SELECT pglock.lock('metrics-a') AND pglock.lock('metrics-b') "
                          "AND pglock.set_lease('metrics-a', '1 hour')").fetchone()[0]
    # A shared lock owned by a token: no process holds it.
    token = holder.execute("SELECT pglock.acquire_shared('metrics-token', '1 hour', '0')"
                           ).fetchone()[0]
    assert token is not None
    waiters = [psycopg.connect(dsn, autocommit=True) for _ in range(2)]
    for waiter in waiters:
        waiter.execute("SET statement_timeout = '60 s'")
        waiter.pgconn.send_query(b"SELECT pglock.lock('metrics-a', '60 s')")
    deadline = time.time() + 30
    while holder.execute("SELECT count(*) FROM pglock.locks WHERE NOT granted").fetchone()[0] < 2:
        assert time.time() < deadline, "the waiters never queued"
        time.sleep(0.05)
    time.sleep(1)  # so that the longest wait is at least a second

    deadline = time.time() + 30
    while True:
        try:
            series = metrics()
            if value(series, "pglock_status_preloaded") is not None:
                break
        except OSError:
            pass
        assert exporter.poll() is None, f"the exporter exited: {exporter.stderr.read()}"
        assert time.time() < deadline, "no pglock metrics from the exporter"
        time.sleep(0.2)

    expected = {
        ("pglock_status_preloaded", ()): 1,
        ("pglock_status_in_recovery", ()): 0,
        ("pglock_status_lease_worker_running", ()): 1,
        ("pglock_status_leases_active", ()): 1,
        ("pglock_status_advisory_locks", ()): 5,
        ("pglock_status_token_locks_held", ()): 1,
        ("pglock_status_token_locks_waiting", ()): 0,
        ("pglock_status_token_worker_running", ()): 1,
        ("pglock_locks_count", (("mode", "shared"), ("state", "held"))): 1,
        ("pglock_locks_count", (("mode", "exclusive"), ("state", "held"))): 2,
        ("pglock_locks_count", (("mode", "exclusive"), ("state", "waiting"))): 2,
        ("pglock_locks_expired_leases", (("mode", "exclusive"), ("state", "held"))): 0,
        ("pglock_waiting_waiters", (("lock", "metrics-a"),)): 2,
        # metrics-a and -b (held), metrics-c (done) and metrics-token (held by its token)
        # since the reset.
        ("pglock_status_stats_entries", ()): 4,
        ("pglock_stats_acquisitions", (("database", "postgres"), ("lock", "metrics-token"))): 1,
        ("pglock_status_stats_evictions", ()): 0,
        ("pglock_stats_acquisitions", (("database", "postgres"), ("lock", "metrics-c"))): 3,
        ("pglock_stats_session_holds", (("database", "postgres"), ("lock", "metrics-c"))): 1,
        ("pglock_stats_busy", (("database", "postgres"), ("lock", "metrics-c"))): 1,
        ("pglock_stats_timeouts", (("database", "postgres"), ("lock", "metrics-c"))): 1,
        ("pglock_stats_waited", (("database", "postgres"), ("lock", "metrics-c"))): 0,
        ("pglock_stats_acquisitions", (("database", "postgres"), ("lock", "metrics-a"))): 1,
        ("pglock_stats_session_holds", (("database", "postgres"), ("lock", "metrics-a"))): 0,
    }
    for (name, labels), want in expected.items():
        got = value(series, name, **dict(labels))
        assert got == want, f"{name}{dict(labels)} = {got}, expected {want}"
    longest = value(series, "pglock_waiting_longest_wait_seconds", lock="metrics-a")
    assert longest is not None and 1 <= longest < 60, longest
    waited = value(series, "pglock_stats_wait_seconds", database="postgres", lock="metrics-c")
    assert waited is not None and 0.009 <= waited < 30, waited
    capacity = value(series, "pglock_status_lock_table_capacity")
    assert capacity and capacity > 0, capacity
    print(f"prometheus: {len([k for k in series])} pglock series, with the workload's values "
          f"(2 held, 2 waiting for 'metrics-a' for {longest:.1f} s, 1 lease, and the statistics "
          f"of a finished workload, and a token-owned lock)")
    assert holder.execute("SELECT pglock.release('metrics-token', %s)", (token,)).fetchone()[0]
    holder.close()
    for waiter in waiters:
        waiter.close()
finally:
    exporter.terminate()
    exporter.wait(timeout=30)
