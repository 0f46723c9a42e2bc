#!/usr/bin/env python3
"""pglock's benchmark: pglock beside the built-ins, the do-it-yourself alternatives, the
round-trip floor, and the lock services a user might pick instead.

Run through bench/run.sh, which installs what this needs and a release build of pglock.
Everything runs on this machine: a throwaway PostgreSQL, MariaDB and Redis, each on a Unix
socket in a temporary directory, stopped and removed at the end. Every compared variant is
run interleaved (A B C A B C ...) for several rounds so that drift cancels out; the results
report medians, the min-max spread and ratios measured in the same run.
"""

import argparse
import datetime
import itertools
import multiprocessing
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (target, measured, met) for the summary at the top of the results.
TARGETS = []


# What the charts are drawn from, filled in by the sections as they run.
CHART_DATA = {"uncontended": {}, "in_server": {}, "contended": {}}


def target(text, measured, met):
    TARGETS.append((text, measured, met))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def as_user(user, cmd):
    return ["sudo", "-u", user] + cmd


class Postgres:
    """A throwaway cluster owned by postgres, reachable on a Unix socket only."""

    def __init__(self, pg_config, workdir, preload=False, name=None, cpus=None, settings=None):
        """cpus: a taskset CPU list that the server (every process of it) is pinned to;
        settings: server settings that replace or add to the defaults below."""
        self.bindir = run([pg_config, "--bindir"]).stdout.strip()
        self.cpus = cpus
        self.dir = os.path.join(workdir, name or ("pg-preloaded" if preload else "pg"))
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        run(as_user("postgres", [f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres",
                                 "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C"]))
        defaults = {
            "listen_addresses": "''", "unix_socket_directories": f"'{self.dir}'",
            "port": "5432", "max_connections": "120", "shared_buffers": "256MB",
            "max_locks_per_transaction": "256", "fsync": "off",
            "synchronous_commit": "off", "autovacuum": "off",
        }
        if preload:
            defaults["shared_preload_libraries"] = "'pglock'"
        defaults.update(settings or {})
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            for name, value in defaults.items():
                conf.write(f"{name} = {value}\n")
        pinned = ["taskset", "-c", cpus] if cpus else []
        run(as_user("postgres", pinned + [f"{self.bindir}/pg_ctl", "-D", self.data, "-w", "-l",
                                          os.path.join(self.dir, "log"), "start"]))
        self.version = self.sql("SHOW server_version").strip()
        self.sql("CREATE EXTENSION pglock")

    def env(self):
        return dict(os.environ, PGHOST=self.dir, PGPORT="5432", PGUSER="postgres",
                    PGDATABASE="postgres")

    def sql(self, query):
        return run([f"{self.bindir}/psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query],
                   env=self.env()).stdout

    def psql(self, *args, application_name="pglock-bench", **kw):
        return subprocess.Popen([f"{self.bindir}/psql", "-XAtq", "-v", "ON_ERROR_STOP=1", *args],
                                env=dict(self.env(), PGAPPNAME=application_name), text=True, **kw)

    def stop(self):
        subprocess.run(as_user("postgres", [f"{self.bindir}/pg_ctl", "-D", self.data,
                                            "-m", "fast", "stop"]), capture_output=True)


class Pgbench:
    def __init__(self, pg, workdir, seconds):
        self.pg, self.seconds = pg, seconds
        self.scripts = os.path.join(workdir, "scripts")
        os.makedirs(self.scripts, exist_ok=True)
        self.logs = os.path.join(workdir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.commands = []

    def script(self, name, body):
        path = os.path.join(self.scripts, f"{name}.sql")
        with open(path, "w") as f:
            f.write(textwrap.dedent(body).strip() + "\n")
        return path

    def statement_latency(self, script, statement):
        """Average latency in ms of one statement of `script`, run by one client (pgbench -r)."""
        cmd = [f"{self.pg.bindir}/pgbench", "-n", "-M", "prepared", "-c", "1", "-r",
               "-T", str(self.seconds), "-f", script]
        self.note(cmd, script)
        out = run(cmd, env=self.pg.env()).stdout
        for line in out.splitlines():
            fields = line.split(None, 2)
            if len(fields) == 3 and fields[2].strip() == statement:
                return float(fields[0])
            if len(fields) == 2 and fields[1].strip() == statement:
                return float(fields[0])
        raise RuntimeError(f"no latency for {statement!r} in:\n{out}")

    def note(self, cmd, script):
        shown = " ".join(os.path.basename(c) if c == script else c for c in cmd[1:])
        if shown not in self.commands:
            self.commands.append(shown)

    def run(self, script, clients, protocol="prepared", log=False):
        """Returns (tps, per-transaction latencies in ms or None, per-client counts or None)."""
        cmd = [f"{self.pg.bindir}/pgbench", "-n", "-M", protocol, "-c", str(clients),
               "-j", str(min(clients, 2)), "-T", str(self.seconds), "-f", script]
        if self.pg.cpus:
            cmd = ["taskset", "-c", self.pg.cpus] + cmd
        for old in os.listdir(self.logs):
            os.remove(os.path.join(self.logs, old))
        if log:
            cmd += ["-l", f"--log-prefix={self.logs}/tx"]
        self.note(cmd, script)
        out = run(cmd, env=self.pg.env(), cwd=self.logs).stdout
        tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out).group(1))
        if not log:
            return tps, None, None
        latencies, per_client = [], {}
        for name in os.listdir(self.logs):
            with open(os.path.join(self.logs, name)) as f:
                for line in f:
                    fields = line.split()
                    client, micros = int(fields[0]), int(fields[2])
                    latencies.append(micros / 1000.0)
                    per_client[client] = per_client.get(client, 0) + 1
        counts = [per_client.get(c, 0) for c in range(clients)]
        return tps, latencies, counts


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[index]


def jain(counts):
    total = sum(counts)
    squares = sum(c * c for c in counts)
    return total * total / (len(counts) * squares) if squares else float("nan")


def interleaved(variants, rounds, measure):
    """Runs measure(variant) for every variant, round after round; returns {variant: [results]}."""
    results = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            results[v].append(measure(v))
    return results


def fmt_tps(values):
    med = statistics.median(values)
    return f"{med:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def ratio(a, b):
    return statistics.median(a) / statistics.median(b)


# ---------------------------------------------------------------------------------------------
# Workloads

UNCONTENDED = {
    # Each client locks a name (or key) of its own: pgbench's client_id.
    "pglock.try_lock(name)": """
        \\set n :client_id
        SELECT pglock.try_lock(:n);
        SELECT pglock.unlock(:n);
    """,
    "pg_try_advisory_lock(int)": """
        \\set n :client_id
        SELECT pg_try_advisory_lock(:n);
        SELECT pg_advisory_unlock(:n);
    """,
    "pg_try_advisory_lock(hashtext(name))": """
        \\set n :client_id
        SELECT pg_try_advisory_lock(hashtext(:n));
        SELECT pg_advisory_unlock(hashtext(:n));
    """,
    "pg_try_advisory_lock(SHA-256 in SQL)": """
        \\set n :client_id
        SELECT pg_try_advisory_lock(('x' || left(encode(sha256(convert_to(:n, 'UTF8')), 'hex'), 16))::bit(64)::bigint);
        SELECT pg_advisory_unlock(('x' || left(encode(sha256(convert_to(:n, 'UTF8')), 'hex'), 16))::bit(64)::bigint);
    """,
    "pglock.lock(name, '1 second')": """
        \\set n :client_id
        SELECT pglock.lock(:n, '1 second');
        SELECT pglock.unlock(:n);
    """,
    "pg_advisory_lock(int)": """
        \\set n :client_id
        SELECT pg_advisory_lock(:n);
        SELECT pg_advisory_unlock(:n);
    """,
    "SELECT 1 (floor)": """
        SELECT 1;
        SELECT 1;
    """,
}

# Simple protocol: names travel as literals inside the query text, as a client would send them.
UNCONTENDED_SIMPLE = {
    "pglock.try_lock('job-N')": """
        \\set n :client_id
        SELECT pglock.try_lock('job-:n');
        SELECT pglock.unlock('job-:n');
    """,
    "pg_try_advisory_lock(N)": """
        \\set n :client_id
        SELECT pg_try_advisory_lock(:n);
        SELECT pg_advisory_unlock(:n);
    """,
    "pg_try_advisory_lock(hashtext('job-N'))": """
        \\set n :client_id
        SELECT pg_try_advisory_lock(hashtext('job-:n'));
        SELECT pg_advisory_unlock(hashtext('job-:n'));
    """,
}

CONTENDED = {
    # All clients want one lock.
    "pglock.lock('hot', '10 seconds')": """
        SELECT pglock.lock('hot', '10 seconds');
        SELECT pglock.unlock('hot');
    """,
    "pg_advisory_lock(42)": """
        SELECT pg_advisory_lock(42);
        SELECT pg_advisory_unlock(42);
    """,
    "PL/pgSQL lock_timeout + exception": """
        SELECT bench_lock_with_timeout(42, '10 seconds');
        SELECT pg_advisory_unlock(42);
    """,
    "polling pg_try_advisory_lock + pg_sleep(0.01)": """
        SELECT bench_lock_by_polling(42, '10 seconds');
        SELECT pg_advisory_unlock(42);
    """,
}

HELPER_FUNCTIONS = """
CREATE FUNCTION bench_lock_with_timeout(key bigint, timeout interval) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', (extract(epoch FROM timeout) * 1000)::bigint::text, true);
    PERFORM pg_advisory_lock(key);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END $$;

CREATE FUNCTION bench_lock_by_polling(key bigint, timeout interval) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    LOOP
        IF pg_try_advisory_lock(key) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
"""


# In-server: N lock + unlock pairs inside one statement, where no round trip hides pglock's
# own cost (job queues that lock per row, batch jobs). Each is timed inside the server by
# bench_ns_per_pair(); the variants are the issue's, in ns per pair.
IN_SERVER = {
    "pg_try_advisory_lock(g) / pg_advisory_unlock(g)":
        "pg_try_advisory_lock(g) AND pg_advisory_unlock(g)",
    "hashtext('job-'||g) with the built-ins":
        "pg_try_advisory_lock(hashtext('job-' || g)) AND pg_advisory_unlock(hashtext('job-' || g))",
    "pglock.try_lock(g::bigint)":
        "pglock.try_lock(g::bigint) AND pglock.unlock(g::bigint)",
    "pglock.try_lock('job-'||(g%100)) (repeated)":
        "pglock.try_lock('job-' || (g % 100)) AND pglock.unlock('job-' || (g % 100))",
    "pglock.try_lock('job-'||g) (unique)":
        "pglock.try_lock('job-' || g) AND pglock.unlock('job-' || g)",
    "pglock.lock('job-'||(g%100), '1 s'), free":
        "pglock.lock('job-' || (g % 100), '1 s') AND pglock.unlock('job-' || (g % 100))",
    "pglock.key('job-'||g) alone (HKDF, unique)":
        "pglock.key('job-' || g) <> 0",
    "pglock.try_lock_fenced('job-'||(g%100)) (repeated)":
        "pglock.try_lock_fenced('job-' || (g % 100)) IS NOT NULL AND pglock.unlock('job-' || (g % 100))",
}

IN_SERVER_FUNCTIONS = """
CREATE FUNCTION bench_ns_per_pair(condition text, n int) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    counted bigint;
BEGIN
    EXECUTE format('SELECT count(*) FILTER (WHERE %s) FROM generate_series(1, %s) g',
                   condition, n) INTO counted;
    RETURN extract(epoch FROM clock_timestamp() - started) * 1e9 / n;
END $$;
"""

QUEUE = {
    # 8 workers, each claiming 10 of 10,000 jobs per transaction.
    "pglock.try_xact_lock('job-'||id)": """
        BEGIN;
        SELECT id FROM bench_jobs WHERE pglock.try_xact_lock('job-' || id) LIMIT 10;
        COMMIT;
    """,
    "pg_try_advisory_xact_lock(id)": """
        BEGIN;
        SELECT id FROM bench_jobs WHERE pg_try_advisory_xact_lock(id) LIMIT 10;
        COMMIT;
    """,
    "FOR UPDATE SKIP LOCKED": """
        BEGIN;
        SELECT id FROM bench_jobs LIMIT 10 FOR UPDATE SKIP LOCKED;
        COMMIT;
    """,
}


# Where a pair's time goes: the same lock + unlock at several depths (src/api/probes.rs, built
# with the bench_probes feature). {k} is the key expression.
SPLIT = [
    ("the built-in", "pg_try_advisory_lock({k}) AND pg_advisory_unlock({k})"),
    ("bare lock-manager calls, plain V1 functions",
     "probe_try_lock_bare_v1({k}) AND probe_unlock_bare_v1({k})"),
    ("the same, V1 functions behind #[pg_guard]",
     "probe_try_lock_bare_guarded_v1({k}) AND probe_unlock_bare_guarded_v1({k})"),
    ("the same, behind #[pg_extern]",
     "pglock.probe_try_lock_bare({k}) AND pglock.probe_unlock_bare({k})"),
    ("pglock's whole path, plain V1 functions", "probe_try_lock_v1({k}) AND probe_unlock_v1({k})"),
    ("pglock.try_lock + pglock.unlock (its entry points)",
     "pglock.try_lock({k}) AND pglock.unlock({k})"),
]
SPLIT_KEYS = {"unique keys": "g::bigint", "100 keys, repeated": "(g % 100)::bigint"}
PROBE_FUNCTIONS = "".join(
    f"CREATE FUNCTION {name}(bigint) RETURNS bool LANGUAGE c STRICT VOLATILE "
    f"AS 'pglock', 'pglock_{name}';"
    for name in ["probe_try_lock_bare_v1", "probe_unlock_bare_v1", "probe_try_lock_v1",
                 "probe_unlock_v1", "probe_try_lock_bare_guarded_v1",
                 "probe_unlock_bare_guarded_v1"])


def split_ns(pg, rounds, pairs):
    """{(keys, label): [ns per pair, one per round]} for SPLIT × SPLIT_KEYS, interleaved."""
    pg.sql(PROBE_FUNCTIONS)
    variants = [(keys, label) for keys in SPLIT_KEYS for label, _ in SPLIT]
    conditions = {(keys, label): condition.format(k=SPLIT_KEYS[keys])
                  for keys in SPLIT_KEYS for label, condition in SPLIT}

    def measure(v):
        return float(pg.sql(f"SELECT bench_ns_per_pair($q${conditions[v]}$q$, {pairs})")
                     .strip().splitlines()[-1])

    interleaved(variants, 1, measure)  # warm-up round, not counted
    return interleaved(variants, rounds, measure)


def report_split(title, runs, rounds, out):
    out.append(f"#### {title}\n")
    out.append(f"ns per pair, median (min–max) of {rounds} interleaved rounds; × is the built-in's "
               "median over the line's.\n")
    head = " | ".join(f"{keys}: ns | ×" for keys in SPLIT_KEYS)
    out.append(f"| the pair | {head} |")
    out.append("|---|" + "---|---|" * len(SPLIT_KEYS))
    for label, _ in SPLIT:
        cells = []
        for keys in SPLIT_KEYS:
            values = runs[(keys, label)]
            cells.append(f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"
                         f" | {ratio(runs[(keys, SPLIT[0][0])], values):.2f}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    for keys in SPLIT_KEYS:
        median = {label: statistics.median(runs[(keys, label)]) for label, _ in SPLIT}
        (builtin_label, bare, guarded, extern, whole, entry) = [label for label, _ in SPLIT]
        builtin = runs[(keys, builtin_label)]
        spread = (max(builtin) - min(builtin)) / statistics.median(builtin)
        out.append(f"- {keys}: the built-in's own spread {spread:.0%} of its median; the bare "
                   f"calls {median[bare] - median[builtin_label]:+,.0f} ns over the built-in; "
                   f"#[pg_guard] adds {median[guarded] - median[bare]:+,.0f} ns per pair and "
                   f"#[pg_extern] {median[extern] - median[guarded]:+,.0f} ns more; pglock's "
                   f"bookkeeping {median[whole] - median[bare]:+,.0f} ns (whole path − bare "
                   f"calls, both plain V1); its entry points "
                   f"{median[entry] - median[whole]:+,.0f} ns over plain V1.")
    out.append("")


# The fast-path variants whose cost pglock.track (statistics per lock) must keep within 3%.
TRACKED = ["pglock.try_lock(g::bigint)", "pglock.try_lock('job-'||(g%100)) (repeated)",
           "pglock.try_lock('job-'||g) (unique)", "pglock.lock('job-'||(g%100), '1 s'), free"]
TRACK_OFF = " [pglock.track = off]"


def in_server_ns(pg, rounds, pairs, track_off=False):
    """{variant: [ns per pair, one value per round]}, variants interleaved round after round;
    with track_off, also the TRACKED variants with pglock.track = off (key + TRACK_OFF)."""
    pg.sql(IN_SERVER_FUNCTIONS)
    variants = list(IN_SERVER) + ([v + TRACK_OFF for v in TRACKED] if track_off else [])

    def measure(v):
        setting = "SET pglock.track = off; " if v.endswith(TRACK_OFF) else ""
        condition = IN_SERVER[v.removesuffix(TRACK_OFF)]
        return float(pg.sql(f"{setting}SELECT bench_ns_per_pair($q${condition}$q$, {pairs})")
                     .strip().splitlines()[-1])

    interleaved(variants, 1, measure)  # warm-up round, not counted
    return interleaved(variants, rounds, measure)


# The CPU the in-server clusters are pinned to (taskset), away from CPU 0 where the client and
# most of the system run.
IN_SERVER_CPU = str(min(1, (os.cpu_count() or 1) - 1))


def bench_in_server(pg_config, workdir, pg, bench, rounds, pairs, out):
    # Their own clusters, pinned to one CPU, not preloaded and preloaded.
    plain_pg = Postgres(pg_config, os.path.join(workdir, "in-server"), name="plain",
                        cpus=IN_SERVER_CPU)
    try:
        plain = in_server_ns(plain_pg, rounds, pairs)
        split_plain = split_ns(plain_pg, rounds, pairs)
    finally:
        plain_pg.stop()
    preloaded_pg = Postgres(pg_config, os.path.join(workdir, "in-server"), preload=True,
                            cpus=IN_SERVER_CPU)
    try:
        preloaded = in_server_ns(preloaded_pg, rounds, pairs, track_off=True)
        split_preloaded = split_ns(preloaded_pg, rounds, pairs)
    finally:
        preloaded_pg.stop()
    builtin = "pg_try_advisory_lock(g) / pg_advisory_unlock(g)"
    CHART_DATA["in_server"] = {"builtin": builtin, "plain": plain, "preloaded": preloaded}
    out.append("## 2. In-server: lock + unlock pairs inside one statement\n")
    def spread(values):
        return (max(values) - min(values)) / statistics.median(values)

    out.append(f"`SELECT count(*) FILTER (WHERE <lock> AND <unlock>) FROM generate_series(1, "
               f"{pairs:,}) g`, timed inside the server; ns per pair, median (min–max) of "
               f"{rounds} interleaved rounds, on servers pinned to CPU {IN_SERVER_CPU}; × is the "
               "built-in's ns over the variant's (higher is better, 1.00 = the integer "
               "built-in's price). The built-in's own spread (max − min over its median), to "
               f"read the ratios against: {spread(plain[builtin]):.0%} not preloaded, "
               f"{spread(preloaded[builtin]):.0%} preloaded.\n")
    out.append("| variant | ns per pair | × built-in | preloaded: ns per pair | × built-in | "
               "preloading adds |")
    out.append("|---|---|---|---|---|---|")

    def cell(values):
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"

    for v in IN_SERVER:
        speed = ratio(plain[builtin], plain[v])
        speed_pre = ratio(preloaded[builtin], preloaded[v])
        cost = statistics.median(preloaded[v]) / statistics.median(plain[v]) - 1
        out.append(f"| {v} | {cell(plain[v])} | {speed:.2f} | {cell(preloaded[v])} | "
                   f"{speed_pre:.2f} | {cost:+.0%} |")
    out.append("")
    out.append("Preloaded, `pglock.track` (statistics per lock for `pglock.stats`, on by default) "
               "against `pglock.track = off`, interleaved in the same rounds:\n")
    out.append("| variant | track on: ns per pair | track off: ns per pair | statistics add |")
    out.append("|---|---|---|---|")
    for v in TRACKED:
        added = statistics.median(preloaded[v]) / statistics.median(preloaded[v + TRACK_OFF]) - 1
        out.append(f"| {v} | {cell(preloaded[v])} | {cell(preloaded[v + TRACK_OFF])} | "
                   f"{added:+.1%} |")
    out.append("")

    out.append("### Where a pair's time goes\n")
    out.append("The same bigint lock + unlock at several depths (`src/api/probes.rs`, built with the "
               "`bench_probes` feature): the lock manager's two calls alone, behind plain V1 "
               "functions (no guard), behind `#[pg_guard]` V1 functions and behind "
               "`#[pg_extern]`; and pglock's whole path behind plain V1 functions and behind its "
               "real entry points (hand-written `#[pg_guard]` V1 functions, src/api/entry.rs).\n")
    report_split("Not preloaded", split_plain, rounds, out)
    report_split("Preloaded, pglock.track = on", split_preloaded, rounds, out)

    def speed(v, runs=plain):
        return ratio(runs[builtin], runs[v])

    bigint = "pglock.try_lock(g::bigint)"
    repeated = "pglock.try_lock('job-'||(g%100)) (repeated)"
    unique = "pglock.try_lock('job-'||g) (unique)"
    timed = "pglock.lock('job-'||(g%100), '1 s'), free"
    def both(v):
        """The variant's speed not preloaded and preloaded (statistics on), as shown and worst."""
        pair = (speed(v), speed(v, preloaded))
        return f"{pair[0]:.2f} / {pair[1]:.2f} (not preloaded / preloaded)", min(pair)

    shown, worst = both(bigint)
    target("in-server bigint overloads ≥ 0.95× the built-in", shown, worst >= 0.95)
    shown, worst = both(repeated)
    target("in-server repeated names ≥ 0.85× the built-in", shown, worst >= 0.85)
    hkdf = "pglock.key('job-'||g) alone (HKDF, unique)"

    def to_floor(runs):
        # The floor for a name never seen before: its HKDF plus the built-in pair.
        floor = statistics.median(runs[hkdf]) + statistics.median(runs[builtin])
        return floor / statistics.median(runs[unique])

    floors = (to_floor(plain), to_floor(preloaded))
    target("in-server unique names ≥ 0.9× the floor (HKDF alone + the built-in pair)",
           f"{floors[0]:.2f} / {floors[1]:.2f} (not preloaded / preloaded)", min(floors) >= 0.9)
    timed_extra = max(statistics.median(runs[timed]) / statistics.median(runs[repeated]) - 1
                      for runs in (plain, preloaded))
    target("in-server timed lock() of a free name within 5% of try_lock of the same name",
           f"{timed_extra:+.1%} (worse of not preloaded and preloaded)", timed_extra <= 0.05)
    worst = max(statistics.median(preloaded[v]) / statistics.median(plain[v]) - 1
                for v in (bigint, repeated, unique, timed))
    target("in-server: preloading with statistics on adds at most 5%",
           f"{worst:+.0%} (worst of the four)", worst <= 0.05)
    track_cost = {v: statistics.median(preloaded[v]) / statistics.median(preloaded[v + TRACK_OFF])
                  - 1 for v in TRACKED}
    worst_track = max(track_cost, key=track_cost.get)
    target("in-server: pglock.track = on slows the fast path by at most 3% (preloaded)",
           f"{track_cost[worst_track]:+.1%} (worst: {worst_track}; "
           + ", ".join(f"{track_cost[v]:+.1%}" for v in TRACKED) + ")",
           track_cost[worst_track] <= 0.03)
    fenced = "pglock.try_lock_fenced('job-'||(g%100)) (repeated)"
    fenced_cost = statistics.median(preloaded[fenced]) / statistics.median(preloaded[repeated])
    fenced_cost_plain = statistics.median(plain[fenced]) / statistics.median(plain[repeated])
    target("in-server lock_fenced + unlock ≤ 2× try_lock + unlock (preloaded: one WAL record "
           f"per ~8,200 tokens; without preloading one per token, {fenced_cost_plain:.2f}× "
           "with fsync=off)", f"{fenced_cost:.2f}×", fenced_cost <= 2.0)

    pg.sql("CREATE TABLE bench_jobs AS SELECT g AS id FROM generate_series(1, 10000) g; "
           "ALTER TABLE bench_jobs ADD PRIMARY KEY (id); ANALYZE bench_jobs")
    scripts = {name: bench.script(f"queue-{i}", body) for i, (name, body) in enumerate(QUEUE.items())}
    tps = interleaved(list(scripts), rounds, lambda v: bench.run(scripts[v], 8)[0])
    out.append("### A job queue: 8 workers each claim 10 of 10,000 rows per transaction\n")
    out.append("| claim with | transactions/s | × the advisory built-in |")
    out.append("|---|---|---|")
    for name in scripts:
        out.append(f"| {name} | {fmt_tps(tps[name])} | "
                   f"{ratio(tps[name], tps['pg_try_advisory_xact_lock(id)']):.2f} |")
    out.append("")
    queue = ratio(tps["pglock.try_xact_lock('job-'||id)"], tps["pg_try_advisory_xact_lock(id)"])
    target("job queue (8 workers, 10 of 10,000 rows) ≥ 0.95× pg_try_advisory_xact_lock",
           f"{queue:.2f}", queue >= 0.95)


def bench_uncontended(bench, clients_list, rounds, out):
    out.append("## 1. Uncontended: each client locks a name of its own\n")
    for protocol, workloads, reference, named in [
        ("prepared", UNCONTENDED, "pg_try_advisory_lock(int)", "pglock.try_lock(name)"),
        ("simple", UNCONTENDED_SIMPLE, "pg_try_advisory_lock(N)", "pglock.try_lock('job-N')"),
    ]:
        scripts = {name: bench.script(f"{protocol}-{i}", body)
                   for i, (name, body) in enumerate(workloads.items())}
        out.append(f"### {protocol} protocol (TPS: median (min–max) of {rounds} interleaved rounds; "
                   f"one transaction = lock + unlock, two statements)\n")
        header = "| variant | " + " | ".join(f"c={c}" for c in clients_list) + " |"
        out.append(header)
        out.append("|---" * (len(clients_list) + 1) + "|")
        per_clients = {}
        for c in clients_list:
            per_clients[c] = interleaved(list(scripts), rounds,
                                         lambda v: bench.run(scripts[v], c, protocol)[0])
        for name in scripts:
            out.append(f"| {name} | " + " | ".join(fmt_tps(per_clients[c][name])
                                                     for c in clients_list) + " |")
        out.append("")
        CHART_DATA["uncontended"][protocol] = (reference, per_clients)
        out.append(f"Ratios (medians, same run):\n")
        out.append("| ratio | " + " | ".join(f"c={c}" for c in clients_list) + " |")
        out.append("|---" * (len(clients_list) + 1) + "|")
        pairs = [(named, reference)]
        hashtext = [n for n in scripts if "hashtext" in n][0]
        pairs.append((named, hashtext))
        if protocol == "prepared":
            pairs += [("pglock.lock(name, '1 second')", "pg_advisory_lock(int)"),
                      ("pg_try_advisory_lock(SHA-256 in SQL)", reference),
                      (reference, "SELECT 1 (floor)")]
        for a, b in pairs:
            out.append(f"| {a} / {b} | " + " | ".join(
                f"{ratio(per_clients[c][a], per_clients[c][b]):.3f}" for c in clients_list) + " |")
        out.append("")

        def ratios(a, b):
            return [ratio(per_clients[c][a], per_clients[c][b]) for c in clients_list]

        def shown(values):
            return ", ".join(f"{v:.3f}" for v in values)

        r = ratios(named, reference)
        target(f"uncontended named try_lock+unlock ≥ 0.95× the integer built-in ({protocol})",
               shown(r), min(r) >= 0.95)
        r = ratios(named, hashtext)
        target(f"uncontended named try_lock+unlock never below hashtext-in-SQL ({protocol})",
               shown(r), min(r) >= 1.0)
        if protocol == "prepared":
            r = ratios("pglock.lock(name, '1 second')", "pg_advisory_lock(int)")
            target("uncontended timed lock ≥ 0.9× pg_advisory_lock", shown(r), min(r) >= 0.9)


def bench_contended(bench, clients_list, rounds, out):
    out.append("## 3. Contended: every client wants the same lock\n")
    scripts = {name: bench.script(f"contended-{i}", body)
               for i, (name, body) in enumerate(CONTENDED.items())}
    out.append(f"TPS and latency of lock + unlock (wait included), medians of {rounds} interleaved "
               "rounds; fairness is Jain's index over per-client transaction counts (1.00 = "
               "every client got the same share).\n")
    out.append("| variant | clients | TPS | p50 ms | p99 ms | max ms | fairness |")
    out.append("|---|---|---|---|---|---|---|")
    ratios = []
    for c in clients_list:
        def measure(v):
            tps, lat, counts = bench.run(scripts[v], c, log=True)
            CHART_DATA["contended"].setdefault(c, {}).setdefault(v, []).extend(lat)
            lat.sort()
            return tps, percentile(lat, 50), percentile(lat, 99), lat[-1], jain(counts)
        results = interleaved(list(scripts), rounds, measure)
        for name, rs in results.items():
            col = list(zip(*rs))
            out.append(f"| {name} | {c} | {fmt_tps(col[0])} | {statistics.median(col[1]):.2f} | "
                       f"{statistics.median(col[2]):.2f} | {statistics.median(col[3]):.1f} | "
                       f"{statistics.median(col[4]):.3f} |")
        mine, builtin = results["pglock.lock('hot', '10 seconds')"], results["pg_advisory_lock(42)"]
        ratios.append((c, ratio([r[0] for r in mine], [r[0] for r in builtin]),
                       statistics.median([r[2] for r in mine]) / statistics.median([r[2] for r in builtin]),
                       statistics.median([r[4] for r in mine])))
    out.append("")
    out.append("| clients | pglock TPS / built-in TPS | pglock p99 / built-in p99 | pglock fairness |")
    out.append("|---|---|---|---|")
    for c, t, p, f in ratios:
        out.append(f"| {c} | {t:.3f} | {p:.3f} | {f:.3f} |")
    out.append("")
    target("contended TPS ≥ 0.9× the built-in", ", ".join(f"{t:.3f}" for _, t, _, _ in ratios),
           min(t for _, t, _, _ in ratios) >= 0.9)
    target("contended p99 ≤ 1.1× the built-in", ", ".join(f"{p:.3f}" for _, _, p, _ in ratios),
           max(p for _, _, p, _ in ratios) <= 1.1)
    target("contended fairness ≥ 0.99", ", ".join(f"{f:.3f}" for _, _, _, f in ratios),
           min(f for _, _, _, f in ratios) >= 0.99)


def bench_preloaded(pg_config, workdir, clients_list, rounds, seconds, out):
    """The lock fast path when pglock is preloaded and publishes names in shared memory."""
    pg = Postgres(pg_config, workdir, preload=True)
    try:
        bench = Pgbench(pg, os.path.join(workdir, "preloaded"), seconds)
        scripts = {name: bench.script(f"preloaded-{i}", UNCONTENDED[name])
                   for i, name in enumerate(["pglock.try_lock(name)", "pg_try_advisory_lock(int)"])}
        per_clients = {c: interleaved(list(scripts), rounds,
                                      lambda v: bench.run(scripts[v], c)[0])
                       for c in clients_list}
    finally:
        pg.stop()
    out.append("### prepared protocol, pglock in shared_preload_libraries (names published in "
               "shared memory)\n")
    out.append("| variant | " + " | ".join(f"c={c}" for c in clients_list) + " |")
    out.append("|---" * (len(clients_list) + 1) + "|")
    for name in scripts:
        out.append(f"| {name} | " + " | ".join(fmt_tps(per_clients[c][name])
                                                 for c in clients_list) + " |")
    r = [ratio(per_clients[c]["pglock.try_lock(name)"], per_clients[c]["pg_try_advisory_lock(int)"])
         for c in clients_list]
    out.append("| ratio | " + " | ".join(f"{v:.3f}" for v in r) + " |")
    out.append("")
    target("uncontended named try_lock+unlock ≥ 0.95× the integer built-in (prepared, preloaded)",
           ", ".join(f"{v:.3f}" for v in r), min(r) >= 0.95)


def hold_foreign_locks(pg, count):
    """A session that holds `count` advisory locks until its stdin closes."""
    holder = pg.psql("-f", "-", application_name="pglock-bench-holder",
                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    holder.stdin.write(f"SELECT count(pg_advisory_lock(1000000 + g)) FROM generate_series(1, {count}) g;\n")
    holder.stdin.write("SELECT pg_sleep(3600);\n")
    holder.stdin.flush()
    deadline = time.time() + 60
    while time.time() < deadline:
        n = int(pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                       "AND pid <> pg_backend_pid()"))
        if n >= count:
            return holder
        time.sleep(0.1)
    raise RuntimeError("the lock holder did not take its locks")


def release_foreign_locks(pg, holder):
    """Ends the holder's session (its backend sleeps, so closing the client is not enough)."""
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE application_name = 'pglock-bench-holder'")
    holder.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        if int(pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")) == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the lock holder's locks were not released")


def bench_held(bench, pg, rounds, out):
    out.append("## 4. held() and pg_locks\n")
    held_sql = "SELECT count(*) FROM pglock.held();"
    pg_locks_sql = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid();")
    scripts = {}
    for label, lookup in [("held", held_sql), ("pg_locks", pg_locks_sql)]:
        scripts[label] = bench.script(f"lookup-{label}", f"""
            SELECT pglock.try_lock('mine');
            {lookup}
            SELECT pglock.unlock('mine');
        """)
    lookups = {"held": held_sql, "pg_locks": pg_locks_sql}
    out.append("Latency of the look-up statement alone (ms, pgbench -r, one client holding one "
               f"lock of its own; median of {rounds} interleaved rounds) while another session "
               "holds N advisory locks:\n")
    out.append("| N foreign locks | pglock.held() | pg_locks, own advisory locks |")
    out.append("|---|---|---|")
    latency = {}
    for n in [0, 1000, 10000]:
        holder = hold_foreign_locks(pg, n) if n else None
        try:
            results = interleaved(["held", "pg_locks"], rounds,
                                  lambda v: bench.statement_latency(scripts[v], lookups[v]))
        finally:
            if holder:
                release_foreign_locks(pg, holder)
        latency[n] = results
        out.append(f"| {n:,} | {statistics.median(results['held']):.4f} | "
                   f"{statistics.median(results['pg_locks']):.4f} |")
    out.append("")
    held_ratio = ratio(latency[10000]['held'], latency[0]['held'])
    target("held() at 10,000 foreign locks ≤ 1.2× held() at 0", f"{held_ratio:.3f}",
           held_ratio <= 1.2)
    out.append(f"held() at 10,000 foreign locks / held() at 0: "
               f"{ratio(latency[10000]['held'], latency[0]['held']):.3f}; "
               f"pg_locks at 10,000 / at 0: {ratio(latency[10000]['pg_locks'], latency[0]['pg_locks']):.3f}\n")

    lockers = bench.script("lockers", UNCONTENDED["pg_try_advisory_lock(int)"])
    loops = {
        "none": None,
        "SELECT 1 loop (same CPU, no lock look-up)": "SELECT 1;",
        "held() loop": "SELECT count(*) FROM pglock.held();",
        "pg_locks loop": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();",
    }
    loop_scripts = {k: bench.script(f"loop-{i}", v) for i, (k, v) in enumerate(loops.items()) if v}

    def measure(v):
        looper = None
        if v != "none":
            looper = subprocess.Popen(
                [f"{pg.bindir}/pgbench", "-n", "-M", "prepared", "-c", "1", "-T",
                 str(bench.seconds + 2), "-f", loop_scripts[v]],
                env=pg.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        try:
            return bench.run(lockers, 8)[0]
        finally:
            if looper:
                looper.wait()

    holder = hold_foreign_locks(pg, 10000)
    try:
        results = interleaved(list(loops), rounds, measure)
    finally:
        release_foreign_locks(pg, holder)
    baseline = "SELECT 1 loop (same CPU, no lock look-up)"
    out.append("TPS of 8 sessions locking and unlocking keys of their own, while another session "
               "holds 10,000 advisory locks and a ninth session runs a statement in a loop. On a "
               "machine with few cores any busy ninth session takes CPU from the lockers, so the "
               "fair comparison for a look-up is a loop of `SELECT 1`, which costs the same round "
               "trips but touches no lock:\n")
    out.append("| ninth session | lockers' TPS | ratio to none | ratio to SELECT 1 loop |")
    out.append("|---|---|---|---|")
    for k in loops:
        out.append(f"| {k} | {fmt_tps(results[k])} | {ratio(results[k], results['none']):.3f} | "
                   f"{ratio(results[k], results[baseline]):.3f} |")
    out.append("")
    vs_none = ratio(results["held() loop"], results["none"])
    vs_select = ratio(results["held() loop"], results[baseline])
    target("lockers' TPS with a held() loop ≥ 0.95× without", f"{vs_none:.3f} (0.95× of a "
           f"SELECT 1 loop: {vs_select:.3f})", vs_none >= 0.95)


# ---------------------------------------------------------------------------------------------
# Peers, through Python: one process per client, the same loop shape for each service.

def peer_worker(kind, api, address, name, seconds, queue):
    """Counts lock + unlock cycles per second for one client. `api` is "standard" (each
    library's everyday call) or "low-level" (each library's thinnest call to its C client)."""
    if kind.startswith("postgres"):
        import psycopg
        conn = psycopg.connect(host=address, user="postgres", dbname="postgres", autocommit=True)
        if kind == "postgres pglock":
            lock, unlock = "SELECT pglock.try_lock($1::text)", "SELECT pglock.unlock($1::text)"
        else:
            lock = "SELECT pg_try_advisory_lock(hashtext($1::text))"
            unlock = "SELECT pg_advisory_unlock(hashtext($1::text))"
        if api == "standard":
            cur = conn.cursor()
            lock_q, unlock_q = lock.replace("$1", "%s"), unlock.replace("$1", "%s")

            def cycle():
                cur.execute(lock_q, (name,), prepare=True)
                assert cur.fetchone()[0]
                cur.execute(unlock_q, (name,), prepare=True)
                cur.fetchone()
        else:
            pgconn = conn.pgconn
            pgconn.prepare(b"lock", lock.encode())
            pgconn.prepare(b"unlock", unlock.encode())
            param = [name.encode()]

            def cycle():
                result = pgconn.exec_prepared(b"lock", param)
                assert result.get_value(0, 0) == b"t"
                pgconn.exec_prepared(b"unlock", param)
    elif kind == "mariadb":
        import MySQLdb
        conn = MySQLdb.connect(unix_socket=address, user="root")
        if api == "standard":
            cur = conn.cursor()

            def cycle():
                cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
                assert cur.fetchone()[0] == 1
                cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
                cur.fetchone()
        else:
            quoted = conn.string_literal(name.encode()).decode()
            lock_q = f"SELECT GET_LOCK({quoted}, 0)".encode()
            unlock_q = f"SELECT RELEASE_LOCK({quoted})".encode()

            def cycle():
                conn.query(lock_q)
                assert conn.store_result().fetch_row()[0][0] == 1
                conn.query(unlock_q)
                conn.store_result().fetch_row()
    else:
        import redis
        conn = redis.Redis(unix_socket_path=address)
        if api == "standard":
            def cycle():
                assert conn.set(name, "token", nx=True, px=10000)
                conn.delete(name)
        else:
            def cycle():
                assert conn.execute_command("SET", name, "token", "NX", "PX", 10000)
                conn.execute_command("DEL", name)
    for _ in range(200):
        cycle()
    count, start = 0, time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        cycle()
        count += 1
    queue.put(count / (time.perf_counter() - start))


def peer_rate(kind, api, address, clients, seconds):
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=peer_worker,
                                     args=(kind, api, address, f"bench-{i}", seconds, queue))
             for i in range(clients)]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


class MariaDB:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "mariadb")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "mysql", "mysql")
        self.socket = os.path.join(self.dir, "sock")
        run(["mariadb-install-db", f"--datadir={self.dir}/data", "--user=mysql",
             "--auth-root-authentication-method=normal", "--skip-test-db"])
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir}/data", f"--socket={self.socket}",
             "--skip-networking", "--user=mysql", f"--pid-file={self.dir}/pid",
             "--innodb-buffer-pool-size=128M", "--max-connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.exists(self.socket):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        self.version = run(["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-e",
                            "SELECT VERSION()"]).stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Redis:
    def __init__(self, workdir, name="redis", fsync=False):
        """fsync: the append-only file on, flushed before every write is acknowledged
        (`appendfsync always`); else no persistence at all."""
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "sock")
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if fsync
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket, "--save", "",
             *persistence, "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(self.socket):
                break
            time.sleep(0.1)
        self.version = run(["redis-server", "--version"]).stdout.split()[2].replace("v=", "")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def bench_peers(pg, workdir, clients, seconds, rounds, out):
    import MySQLdb
    import psycopg
    import redis as redis_module
    maria, red = MariaDB(workdir), Redis(workdir)
    try:
        kinds = {"postgres pglock": pg.dir, "postgres hashtext": pg.dir,
                 "mariadb": maria.socket, "redis": red.socket}
        labels = {
            "postgres pglock": "PostgreSQL pglock.try_lock(name) + pglock.unlock(name)",
            "postgres hashtext": "PostgreSQL pg_try_advisory_lock(hashtext(name)) + unlock",
            "mariadb": f"MariaDB {maria.version} GET_LOCK(name, 0) + RELEASE_LOCK(name)",
            "redis": f"Redis {red.version} SET name token NX PX 10000 + DEL name",
        }
        runs = [(k, api) for api in ("standard", "low-level") for k in kinds]
        results = interleaved(runs, rounds,
                              lambda run: peer_rate(run[0], run[1], kinds[run[0]], clients, seconds))
    finally:
        maria.stop()
        red.stop()
    out.append("## 5. Peers, through Python\n")
    out.append(f"Lock + unlock cycles per second, {clients} client processes each with its own "
               f"connection and name, {seconds} s per run, median (min–max) of {rounds} "
               f"interleaved rounds. Clients: psycopg {psycopg.__version__} "
               f"({psycopg.pq.__impl__}), mysqlclient "
               f"{'.'.join(map(str, MySQLdb.version_info[:3]))}, redis-py {redis_module.__version__}; "
               "every server on a Unix socket on this machine. *Standard* is each library's "
               "everyday call (psycopg `cursor.execute(..., prepare=True)`, mysqlclient "
               "`cursor.execute`, redis-py `set`/`delete`); *low-level* is its thinnest call "
               "(psycopg `pgconn.exec_prepared`, mysqlclient `conn.query` + `store_result`, "
               "redis-py `execute_command`). The SQL is the same at both levels.\n")
    for api in ("standard", "low-level"):
        r = ratio(results[("postgres pglock", api)], results[("mariadb", api)])
        target(f"pglock try_lock+unlock ≥ 1.0× MariaDB GET_LOCK+RELEASE_LOCK ({api} API)",
               f"{r:.3f}", r >= 1.0)
        out.append(f"{api.capitalize()} API:\n")
        out.append("| service | cycles/s | ratio to MariaDB |")
        out.append("|---|---|---|")
        for k in kinds:
            out.append(f"| {labels[k]} | {fmt_tps(results[(k, api)])} | "
                       f"{ratio(results[(k, api)], results[('mariadb', api)]):.3f} |")
        out.append("")


# Lock shapes (0.3.0): lock_all against the same locks one by one, a contended semaphore, and
# how soon wait_released returns after a release.

def names_for(count):
    return [f"shape-{i}" for i in range(count)]


def lock_all_scripts(bench, count):
    names = names_for(count)
    array = "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]"
    one_statement = ", ".join(f"pglock.lock('{n}')" for n in names)
    one_unlock = ", ".join(f"pglock.unlock('{n}')" for n in names)
    # A client that sorts its names and takes them one round trip each (what a library does).
    loop_lock = "\n".join(f"SELECT pglock.lock('{n}');" for n in sorted(names))
    loop_unlock = "\n".join(f"SELECT pglock.unlock('{n}');" for n in sorted(names))
    return {
        f"lock_all({count} names) + unlock_all": bench.script(
            f"lock-all-{count}", f"SELECT pglock.lock_all({array});\n"
                                 f"SELECT pglock.unlock_all({array});"),
        f"{count} × lock() in one statement": bench.script(
            f"lock-one-statement-{count}", f"SELECT {one_statement};\nSELECT {one_unlock};"),
        f"{count} × lock(), one round trip each": bench.script(
            f"lock-loop-{count}", loop_lock + "\n" + loop_unlock),
    }


SEMAPHORE_HELPERS = """
CREATE FUNCTION bench_poll_slot(name text, slots int) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        FOR slot IN 0 .. slots - 1 LOOP
            IF pglock.try_lock(name || ':' || slot) THEN
                RETURN slot;
            END IF;
        END LOOP;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$;
"""

SEMAPHORE = {
    "pglock.acquire_slot(name, 3)": """
        SELECT pglock.acquire_slot('bench-pool', 3, '30 s') AS slot \\gset
        SELECT pg_sleep(0.002);
        SELECT pglock.release_slot('bench-pool', :slot);
    """,
    "polling try_lock on 3 names + pg_sleep(0.001)": """
        SELECT bench_poll_slot('bench-poll', 3) AS slot \\gset
        SELECT pg_sleep(0.002);
        SELECT pglock.unlock('bench-poll:' || :slot);
    """,
}


def wake_up_latency(pg, waiter_sql, rounds):
    """Milliseconds from a release to the waiter's return, as the server's clock says:
    session A holds 'wake' (pglock.lock), B runs `waiter_sql` and waits, A releases."""
    import psycopg

    conninfo = f"host={pg.dir} port=5432 user=postgres dbname=postgres"
    holder = psycopg.connect(conninfo, autocommit=True)
    waiter = psycopg.connect(conninfo, autocommit=True)
    observer = psycopg.connect(conninfo, autocommit=True)
    waiter_pid = waiter.execute("SELECT pg_backend_pid()").fetchone()[0]
    latencies = []
    try:
        for _ in range(rounds):
            holder.execute("SELECT pglock.lock('wake')")
            result = {}

            def wait():
                result["at"] = waiter.execute(
                    f"SELECT {waiter_sql}, clock_timestamp()").fetchone()[1]

            import threading
            thread = threading.Thread(target=wait)
            thread.start()
            deadline = time.time() + 10
            while not observer.execute(
                    "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                    (waiter_pid,)).fetchone()[0]:
                if waiter_sql.startswith("bench_wait_by_polling") and time.time() > deadline - 9.9:
                    break  # a poller never shows as waiting; give it 0.1 s to start polling
                assert time.time() < deadline, "the waiter never waited"
                time.sleep(0.001)
            released_at = holder.execute("SELECT pglock.unlock('wake'), clock_timestamp()"
                                         ).fetchone()[1]
            thread.join()
            latencies.append((result["at"] - released_at).total_seconds() * 1000)
            waiter.execute("SELECT pglock.unlock_all()")
    finally:
        for conn in (holder, waiter, observer):
            conn.close()
    return sorted(latencies)


WAKE_HELPERS = """
CREATE FUNCTION bench_wait_by_polling(name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    WHILE NOT pglock.is_free(name) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN true;
END $$;
"""


def bench_shapes(bench, pg, rounds, quick, out):
    out.append("## Lock shapes\n")
    out.append("### Many locks at once: lock_all against the same locks one by one\n")
    out.append("One client, uncontended: one transaction is taking every lock and releasing "
               "them all. Transactions/s, median (min–max) of the interleaved rounds.\n")
    out.append("| locks | lock_all + unlock_all | N × lock() in one statement | "
               "N × lock(), one round trip each | lock_all over one-by-one |")
    out.append("|---|---|---|---|---|")
    for count in (1, 4, 16):
        scripts = lock_all_scripts(bench, count)
        tps = interleaved(list(scripts), rounds, lambda v: bench.run(scripts[v], 1)[0])
        names = list(scripts)
        out.append(f"| {count} | {fmt_tps(tps[names[0]])} | {fmt_tps(tps[names[1]])} | "
                   f"{fmt_tps(tps[names[2]])} | {ratio(tps[names[0]], tps[names[2]]):.2f} |")
    out.append("")

    pg.sql(SEMAPHORE_HELPERS)
    scripts = {name: bench.script(f"semaphore-{i}", body)
               for i, (name, body) in enumerate(SEMAPHORE.items())}
    results = {}
    for name in scripts:
        results[name] = [bench.run(scripts[name], 12, protocol="simple", log=True)
                         for _ in range(rounds)]
    out.append("### A semaphore of 3 slots, 12 clients\n")
    out.append("Each client takes a slot, holds it 2 ms, gives it back. Latency is the whole "
               "cycle (including the wait for a slot); Jain's index over the clients' counts "
               "(1.00 = perfectly even).\n")
    out.append("| variant | cycles/s | p50 ms | p99 ms | max ms | fairness (Jain) |")
    out.append("|---|---|---|---|---|---|")
    for name, runs in results.items():
        latencies = sorted(l for _, lat, _ in runs for l in lat)
        fairness = statistics.median(jain(counts) for _, _, counts in runs)
        out.append(f"| {name} | {fmt_tps([tps for tps, _, _ in runs])} | "
                   f"{percentile(latencies, 50):.1f} | {percentile(latencies, 99):.1f} | "
                   f"{latencies[-1]:.1f} | {fairness:.2f} |")
    out.append("")

    pg.sql(WAKE_HELPERS)
    samples = 50 if quick else 200
    waiters = {
        "pglock.wait_released('wake')": "pglock.wait_released('wake', '10 s')",
        "pglock.lock('wake') (then given back)": "pglock.lock('wake', '10 s')",
        "polling pglock.is_free every 10 ms": "bench_wait_by_polling('wake')",
    }
    out.append("### wait_released: from a release to the waiter's return\n")
    out.append(f"{samples} releases each; milliseconds by the server's clock, between the "
               "holder's unlock and the waiter's return.\n")
    out.append("| waiter | p50 ms | p99 ms | max ms |")
    out.append("|---|---|---|---|")
    for name, sql in waiters.items():
        latencies = wake_up_latency(pg, sql, samples)
        out.append(f"| {name} | {percentile(latencies, 50):.3f} | "
                   f"{percentile(latencies, 99):.3f} | {latencies[-1]:.3f} |")
    out.append("")


def bench_sharding(pg_config, workdir, seconds, rounds, out):
    """Lock throughput beyond one primary: names sharded by key across independent primaries.
    pglock shares nothing between servers, so each primary adds its own capacity. To show that
    on one machine, each primary and its pgbench are pinned to a CPU of their own (as if each
    were a one-core machine); one primary alone gets one CPU."""
    shards = [Postgres(pg_config, workdir, name=f"pg-shard-{cpu}", cpus=str(cpu))
              for cpu in range(2)]
    try:
        benches = [Pgbench(pg, os.path.join(workdir, f"shard-{i}"), seconds)
                   for i, pg in enumerate(shards)]
        scripts = [b.script("shard", UNCONTENDED["pglock.try_lock(name)"]) for b in benches]

        def together(count, clients):
            rates = [0.0] * count

            def one(index):
                rates[index] = benches[index].run(scripts[index], clients)[0]
            threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(rates)

        variants = {
            "one primary (1 CPU), 8 clients": lambda: together(1, 8),
            "two primaries (1 CPU each), 8 clients each": lambda: together(2, 8),
        }
        results = interleaved(list(variants), rounds, lambda v: variants[v]())
    finally:
        for pg in shards:
            pg.stop()
    one = "one primary (1 CPU), 8 clients"
    out.append("## 6. Sharding names across primaries\n")
    out.append("Uncontended `pglock.try_lock(name)` + `unlock` (prepared), TPS summed over the "
               f"primaries, median (min–max) of {rounds} interleaved rounds. Each primary and its "
               "pgbench are pinned to a CPU of their own (`taskset`), standing in for a machine "
               "each; clients pick the primary by key, so no lock involves two primaries.\n")
    out.append("| setup | TPS, all primaries | × one primary |")
    out.append("|---|---|---|")
    for v in variants:
        out.append(f"| {v} | {fmt_tps(results[v])} | {ratio(results[v], results[one]):.2f} |")
    out.append("")


# ---------------------------------------------------------------------------------------------
# Locks owned by a token (0.4.0): pglock.acquire + pglock.release against the do-it-yourself
# table with expires_at and Redis SET NX PX + a Lua compare-and-delete, through PgBouncer in
# transaction mode; and how soon a waiter gets the lock once it is released or expires.

TOKEN_SECTION = "## Locks owned by a token"
# The start of this section's rows in the targets table (bench.py --only token-locks replaces
# them there).
TOKEN_TARGET = "token-owned locks:"

# A server of its own: token-owned locks need preloading, prepared transactions and a worker
# process per waiting acquire; fsync and synchronous_commit on, since a durable lock's price is
# its WAL flushes (PREPARE TRANSACTION and ROLLBACK PREPARED flush whatever synchronous_commit
# says; the table's two commits flush because it is on). Autovacuum on, as in service: the
# table lock leaves a dead row per pair.
TOKEN_SERVER_SETTINGS = {
    "fsync": "on", "synchronous_commit": "on", "autovacuum": "on",
    "max_prepared_transactions": "20", "max_worker_processes": "32",
}

LEASE_TABLE = ("CREATE TABLE lease_locks (name text PRIMARY KEY, token bigint NOT NULL, "
               "expires_at timestamptz NOT NULL)")
FLUSH_FLOOR_TABLE = "CREATE TABLE flush_floor (n bigint); INSERT INTO flush_floor VALUES (0)"
# Tokens of the table and Redis locks: unique across their clients (all in this process).
LEASE_TOKENS = itertools.count(1)
REDIS_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                 "return redis.call('del', KEYS[1]) else return 0 end")
# How often a do-it-yourself waiter tries again.
POLL_INTERVAL = 0.01
# The longest any waiter waits, and the longest pglock's waiter asks to wait.
HANDOFF_WAIT = 30


def psycopg_connect(conninfo):
    """The one client setting for every PostgreSQL variant: autocommit, and no server-side
    prepared statements (PgBouncer in transaction mode does not carry them across servers)."""
    import psycopg
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


class TokenLock:
    """pglock.acquire / pglock.release on one connection."""

    def __init__(self, conninfo):
        self.conn = psycopg_connect(conninfo)

    def acquire(self, name, ttl="30 s"):
        return self.conn.execute(f"SELECT pglock.acquire(%s, '{ttl}')", (name,)).fetchone()[0]

    def release(self, name, token):
        return self.conn.execute("SELECT pglock.release(%s, %s)", (name, token)).fetchone()[0]

    def expires_at(self, name, token):
        """When the lock expires, in seconds since the epoch, as the server stored it."""
        return self.conn.execute("SELECT extract(epoch FROM expires_at)::float8 "
                                 "FROM pglock.token_locks() WHERE token = %s",
                                 (token,)).fetchone()[0]

    def wait(self, name, polling):
        """Waits in PostgreSQL's lock queue (through pglock's waiter process) until granted;
        `polling` is the pollers' (see poll)."""
        return self.conn.execute(f"SELECT pglock.acquire(%s, '30 s', '{HANDOFF_WAIT} s')",
                                 (name,)).fetchone()[0]

    def waiting(self, name, polling):
        return self.conn.execute("SELECT count(*) FROM pglock.locks "
                                 "WHERE key = pglock.key(%s) AND NOT granted",
                                 (name,)).fetchone()[0] > 0

    def close(self):
        self.conn.close()


def poll(lock, name, polling):
    """The do-it-yourself wait: try, and sleep POLL_INTERVAL between tries; sets the event
    `polling` once a try has failed. None if not acquired within HANDOFF_WAIT seconds."""
    deadline = time.perf_counter() + HANDOFF_WAIT
    while time.perf_counter() < deadline:
        token = lock.acquire(name)
        if token is not None:
            return token
        polling.set()
        time.sleep(POLL_INTERVAL)
    return None


class LeaseTable:
    """The do-it-yourself lock: a row per name with its holder's token and expiry."""

    def __init__(self, conninfo):
        self.conn = psycopg_connect(conninfo)

    def acquire(self, name, ttl="30 s"):
        token = next(LEASE_TOKENS)
        row = self.conn.execute(
            f"INSERT INTO lease_locks VALUES (%s, %s, now() + interval '{ttl}') "
            "ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, "
            "expires_at = EXCLUDED.expires_at WHERE lease_locks.expires_at < now() "
            "RETURNING token", (name, token)).fetchone()
        return row[0] if row else None

    def release(self, name, token):
        return self.conn.execute("DELETE FROM lease_locks WHERE name = %s AND token = %s",
                                 (name, token)).rowcount == 1

    def expires_at(self, name, token):
        return self.conn.execute("SELECT extract(epoch FROM expires_at)::float8 "
                                 "FROM lease_locks WHERE name = %s AND token = %s",
                                 (name, token)).fetchone()[0]

    wait = poll

    def waiting(self, name, polling):
        return polling.is_set()

    def close(self):
        self.conn.close()


class RedisLock:
    """SET name token NX PX, and a Lua compare-and-delete to release (EVAL)."""

    def __init__(self, socket):
        import redis
        self.conn = redis.Redis(unix_socket_path=socket)

    def acquire(self, name, ttl="30 s"):
        token = next(LEASE_TOKENS)
        milliseconds = int(float(ttl.split()[0]) * 1000)
        return token if self.conn.set(name, token, nx=True, px=milliseconds) else None

    def release(self, name, token):
        return self.conn.eval(REDIS_RELEASE, 1, name, token) == 1

    wait = poll

    def waiting(self, name, polling):
        return polling.is_set()

    def close(self):
        self.conn.close()


class FlushedCommits:
    """Not a lock: two transactions that each update one row and so flush their commit, the
    floor of any two durable round trips to this server. (`SELECT pg_current_xact_id()` would
    not do: a transaction that wrote nothing else does not flush its commit.)"""

    def __init__(self, conninfo):
        self.conn = psycopg_connect(conninfo)

    def acquire(self, name):
        return self.conn.execute("UPDATE flush_floor SET n = n + 1").rowcount == 1 or None

    def release(self, name, token):
        return self.conn.execute("UPDATE flush_floor SET n = n + 1").rowcount == 1

    def close(self):
        self.conn.close()


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of `pg`'s database postgres, on a Unix
    socket only, run as postgres (it refuses to run as root)."""

    PORT = 6432

    def __init__(self, pg, workdir, pool_size=4):
        self.dir = os.path.join(workdir, "pgbouncer")
        os.makedirs(self.dir)
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "userlist.txt")
        self.log = os.path.join(self.dir, "pgbouncer.log")
        with open(ini, "w") as f:
            f.write(textwrap.dedent(f"""\
                [databases]
                postgres = host={pg.dir} port=5432 dbname=postgres

                [pgbouncer]
                pool_mode = transaction
                default_pool_size = {pool_size}
                ; Unix socket only: without listen_addr there is no TCP listener.
                unix_socket_dir = {self.dir}
                listen_port = {self.PORT}
                auth_type = trust
                auth_file = {users}
                logfile = {self.log}
                """))
        with open(users, "w") as f:
            f.write('"postgres" ""\n')  # trust still needs the user listed
        for path in (self.dir, ini, users):
            shutil.chown(path, "postgres", "postgres")
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.version = run([binary, "--version"]).stdout.split()[1]
        self.proc = subprocess.Popen([binary, "-u", "postgres", "-q", ini],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.conninfo = f"host={self.dir} port={self.PORT} user=postgres dbname=postgres"
        deadline = time.time() + 10
        while True:
            try:
                psycopg_connect(self.conninfo + " connect_timeout=2").close()
                return
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    with open(self.log) as f:
                        raise RuntimeError(f"pgbouncer did not start; its log:\n{f.read()}")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def pair_us(lock, name, pairs, seconds):
    """µs per acquire + release of a free lock, over `pairs` pairs or `seconds`, whichever
    ends first. Both calls must succeed."""
    done, start = 0, time.perf_counter()
    deadline = start + seconds
    while done < pairs and time.perf_counter() < deadline:
        token = lock.acquire(name)
        assert token is not None, f"{name}: a free lock was not granted"
        assert lock.release(name, token), f"{name}: the release did not find the holder's token"
        done += 1
    return (time.perf_counter() - start) * 1e6 / done


def handoff_ms(make_lock, name, samples, expiry, rng):
    """Milliseconds from the moment the lock became free to a waiting client's return, over
    `samples` hand-offs. A holder takes the lock; a waiter (its own connection, in a thread)
    waits for it. On release: the holder releases 20-50 ms after the waiter started waiting
    (a random phase against a poller's interval); measured from just before the release call,
    by this process's monotonic clock. On expiry: the holder takes it for 1 s and never renews;
    measured from the expiry the server stored, by the wall clock (same machine)."""
    holder, waiter = make_lock(), make_lock()
    latencies = []
    try:
        for _ in range(samples):
            token = holder.acquire(name, "1 s" if expiry else "30 s")
            assert token is not None, f"{name}: the holder did not get a free lock"
            expires_at = holder.expires_at(name, token) if expiry else None
            polling, got = threading.Event(), {}

            def wait():
                got["token"] = waiter.wait(name, polling)
                got["at"] = (time.perf_counter(), time.time())

            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            deadline = time.time() + 10
            while not holder.waiting(name, polling):
                assert time.time() < deadline, f"{name}: the waiter never waited"
                time.sleep(0.001)
            if expiry:
                thread.join(HANDOFF_WAIT + 5)
                freed_at = expires_at
            else:
                time.sleep(rng.uniform(0.02, 0.05))
                freed_at = time.perf_counter()
                assert holder.release(name, token), f"{name}: the holder's release failed"
                thread.join(HANDOFF_WAIT + 5)
            assert not thread.is_alive() and got.get("token") is not None, \
                f"{name}: the waiter did not get the lock"
            returned_at = got["at"][1] if expiry else got["at"][0]
            latencies.append((returned_at - freed_at) * 1000)
            assert holder.release(name, got["token"]), f"{name}: the waiter's lock was lost"
    finally:
        holder.close()
        waiter.close()
    return sorted(latencies)


def wait_for_token_worker(pg):
    """Until the token worker serves requests (it starts with the server)."""
    deadline = time.time() + 60
    while True:
        try:
            pg.sql("SELECT pglock.release('bench: is the worker up', 0)")
            return
        except subprocess.CalledProcessError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def bench_token_locks(pg_config, workdir, quick, with_redis, out):
    """Appends the section (TOKEN_SECTION) to out and its rows to TARGETS."""
    import psycopg
    started = time.time()
    rounds = 5 if quick else 7
    pairs, seconds = (500, 4) if quick else (2000, 8)
    samples = {"release": 10 if quick else 50, "expiry": 10 if quick else 30}
    pg = Postgres(pg_config, workdir, preload=True, name="pg-token",
                  settings=TOKEN_SERVER_SETTINGS)
    bouncer = redis_plain = redis_fsync = None
    try:
        pg.sql(LEASE_TABLE)
        pg.sql(FLUSH_FLOOR_TABLE)
        wait_for_token_worker(pg)
        bouncer = PgBouncer(pg, workdir)
        direct = f"host={pg.dir} port=5432 user=postgres dbname=postgres"
        pooled = bouncer.conninfo
        pglock_pooled = "pglock.acquire + release, through PgBouncer"
        table_pooled = "`expires_at` table, through PgBouncer"
        redis_fsync_label = "Redis SET NX PX + Lua delete, `appendfsync always`"
        locks = {
            pglock_pooled: TokenLock(pooled),
            table_pooled: LeaseTable(pooled),
            "pglock.acquire + release, direct": TokenLock(direct),
            "`expires_at` table, direct": LeaseTable(direct),
            "not a lock: two one-row UPDATEs, each commit flushed, direct":
                FlushedCommits(direct),
        }
        if with_redis:
            redis_plain = Redis(workdir, name="redis-token")
            redis_fsync = Redis(workdir, name="redis-token-fsync", fsync=True)
            locks["Redis SET NX PX + Lua delete, no persistence"] = RedisLock(redis_plain.socket)
            locks[redis_fsync_label] = RedisLock(redis_fsync.socket)
        names = {v: f"bench-token-{i}" for i, v in enumerate(locks)}
        try:
            interleaved(list(locks), 1, lambda v: pair_us(locks[v], names[v], 100, seconds))
            per_pair = interleaved(list(locks), rounds,
                                   lambda v: pair_us(locks[v], names[v], pairs, seconds))
        finally:
            for lock in locks.values():
                lock.close()

        rng = random.Random(22)
        waiters = {
            "pglock.acquire(name, '30 s', '30 s'), blocked": lambda: TokenLock(direct),
            "`expires_at` table, polling": lambda: LeaseTable(direct),
        }
        if with_redis:
            waiters["Redis SET NX PX, polling"] = lambda: RedisLock(redis_plain.socket)
        handoffs = {}
        for kind in ("release", "expiry"):
            for i, (waiter, make_lock) in enumerate(waiters.items()):
                if kind == "expiry" and waiter.startswith("Redis"):
                    continue
                handoffs[(kind, waiter)] = handoff_ms(make_lock, f"bench-handoff-{i}",
                                                      samples[kind], kind == "expiry", rng)
        redis_version = redis_plain.version if with_redis else None
    finally:
        for server in (redis_plain, redis_fsync, bouncer):
            if server:
                server.stop()
        pg.stop()

    def cell(values):
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"

    clients = f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})"
    if with_redis:
        import redis as redis_module
        clients += f", redis-py {redis_module.__version__}"
    out.append(f"{TOKEN_SECTION}\n")
    out.append(
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; rerun: "
        f"`bench/run.sh --only token-locks{' --quick' if quick else ''}` (took "
        f"{time.time() - started:.0f} s). A PostgreSQL of its own ({pg.version}), unlike the "
        "other sections: pglock preloaded, **fsync=on, synchronous_commit=on**, "
        "max_prepared_transactions=20, max_worker_processes=32, autovacuum on. PgBouncer "
        f"{bouncer.version} in transaction pooling mode (Unix socket, pool of 4)"
        + (f"; Redis {redis_version}, once with `--save \"\" --appendonly no` and once with "
           "`--appendonly yes --appendfsync always`" if with_redis else "")
        + f". One client process ({clients}; autocommit, `prepare_threshold=None`), one "
        "connection per variant, everything on Unix sockets on this machine.\n")
    out.append("### Acquire + release of a free lock\n")
    out.append(f"µs per pair, median (min–max) of {rounds} interleaved rounds of {pairs:,} pairs "
               f"(a round stops after {seconds} s), after a warm-up round; × is the variant's "
               "median over the `expires_at` table's through PgBouncer (lower is cheaper).\n")
    out.append("| variant | µs per pair | × the table, through PgBouncer |")
    out.append("|---|---|---|")
    for v, values in per_pair.items():
        out.append(f"| {v} | {cell(values)} | {ratio(values, per_pair[table_pooled]):.2f} |")
    out.append("")
    out.append("- pglock: `SELECT pglock.acquire($1, '30 s')`, then `SELECT pglock.release($1, "
               "$2)`. The token worker prepares a transaction that holds the lock (one WAL "
               "flush) and release returns once it is rolled back (another).")
    out.append("- the table: `INSERT INTO lease_locks VALUES ($1, $2, now() + interval '30 s') "
               "ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token, expires_at = "
               "EXCLUDED.expires_at WHERE lease_locks.expires_at < now() RETURNING token`, then "
               "`DELETE FROM lease_locks WHERE name = $1 AND token = $2`: two commits, each "
               "flushed.")
    if with_redis:
        out.append("- Redis: `SET name token NX PX 30000`, then `EVAL` of `" + REDIS_RELEASE
                   + "` with the name and the token.")
    out.append("")

    out.append("### Hand-off: from the lock becoming free to the waiter's return\n")
    out.append("ms over the hand-offs (with at most 50 of them, p99 is the largest). A holder "
               "takes the lock and a second connection waits for it, direct "
               "to the server (no PgBouncer). The pglock waiter is blocked in `pglock.acquire"
               f"(name, '30 s', '30 s')`; the table's and Redis's waiters poll: their acquire, "
               f"then sleep {POLL_INTERVAL * 1000:.0f} ms. *Release*: measured from just before "
               "the holder's release call, 20–50 ms (at random) after the waiter began waiting. "
               "*Expiry*: the holder took the lock with a TTL of 1 s and never renews it; "
               "measured from the expiry the server stored (`expires_at`).\n")
    out.append("| hand-off | waiter | hand-offs | p50 ms | p90 ms | p99 ms |")
    out.append("|---|---|---|---|---|---|")
    for (kind, waiter), values in handoffs.items():
        out.append(f"| {kind} | {waiter} | {len(values)} | {percentile(values, 50):.2f} | "
                   f"{percentile(values, 90):.2f} | {percentile(values, 99):.2f} |")
    out.append("")

    vs_table = ratio(per_pair[pglock_pooled], per_pair[table_pooled])
    target(f"{TOKEN_TARGET} acquire + release through PgBouncer ≤ the `expires_at` table's "
           "(same PgBouncer, fsync on)", f"{vs_table:.3f}×", vs_table <= 1.0)
    if with_redis:
        vs_redis = ratio(per_pair[pglock_pooled], per_pair[redis_fsync_label])
        target(f"{TOKEN_TARGET} acquire + release through PgBouncer ≤ Redis SET NX PX + Lua "
               "delete with appendfsync always", f"{vs_redis:.3f}×", vs_redis <= 1.0)
    pglock_waiter, table_waiter = list(waiters)[:2]
    for kind in ("release", "expiry"):
        ours, theirs = handoffs[(kind, pglock_waiter)], handoffs[(kind, table_waiter)]
        faster = all(percentile(ours, p) < percentile(theirs, p) for p in (50, 99))
        target(f"{TOKEN_TARGET} hand-off on {kind} a wake-up, not a poll: p50 and p99 below "
               f"the table's polling every {POLL_INTERVAL * 1000:.0f} ms",
               f"{percentile(ours, 50):.2f} / {percentile(ours, 99):.2f} ms (table: "
               f"{percentile(theirs, 50):.2f} / {percentile(theirs, 99):.2f})", faster)


def splice_token_section(path, section, rows):
    """Replaces TOKEN_SECTION in the results file at `path` with `section` (appends it if
    absent), and this section's rows of the targets table with `rows`; the rest stays."""
    with open(path) as f:
        lines = f.read().splitlines()
    new = "\n".join(section).splitlines()
    if TOKEN_SECTION in lines:
        start = lines.index(TOKEN_SECTION)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = new
    else:
        lines += [""] + new if lines and lines[-1] else new
    if "## Targets" in lines:
        table = [i for i in range(lines.index("## Targets"), len(lines))
                 if lines[i].startswith("|")]
        table = table[:next((n for n in range(1, len(table)) if table[n] != table[n - 1] + 1),
                            len(table))]
        kept = [lines[i] for i in table if not lines[i].startswith(f"| {TOKEN_TARGET}")]
        lines[table[0]:table[-1] + 1] = kept + [
            f"| {text} | {measured} | {'yes' if met else '**no**'} |"
            for text, measured, met in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")


def write_charts(output):
    """PNG charts next to the results file: contention.png (the wait-time distribution under
    contention) and cost.png (per-variant cost against the built-ins), with -quick before .png
    in quick mode. Needs matplotlib (bench/run.sh installs it into the bench venv)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = os.path.dirname(os.path.abspath(output))
    suffix = "-quick" if output.endswith("-quick.md") else ""
    written = []

    contended = CHART_DATA["contended"]
    if contended:
        clients = max(contended)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, latencies in contended[clients].items():
            values = sorted(latencies)
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=name, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlabel("lock + unlock, wait included (ms, log scale)")
        ax.set_ylabel("fraction of acquisitions")
        ax.set_title(f"One contended lock, {clients} clients: how long each acquisition took")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = os.path.join(base, f"contention{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    in_server = CHART_DATA["in_server"]
    uncontended = CHART_DATA["uncontended"].get("prepared")
    if in_server and uncontended:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
        builtin = in_server["builtin"]
        names = [v for v in in_server["plain"] if v != builtin]
        speed = [ratio(in_server["plain"][builtin], in_server["plain"][v]) for v in names]
        speed_pre = [ratio(in_server["preloaded"][builtin], in_server["preloaded"][v])
                     for v in names]
        ys = range(len(names))
        left.barh([y + 0.2 for y in ys], speed, height=0.4, label="not preloaded")
        left.barh([y - 0.2 for y in ys], speed_pre, height=0.4, label="preloaded")
        left.set_yticks(list(ys), [n.replace(" (repeated)", "\n(repeated)") for n in names],
                        fontsize=7)
        left.axvline(1.0, color="black", linewidth=0.8)
        left.set_xlabel("× the integer built-in's speed (1.0 = same price)")
        left.set_title("In-server: lock + unlock inside one statement", fontsize=10)
        left.legend(fontsize=8)
        reference, per_clients = uncontended
        counts = sorted(per_clients)
        variants = [v for v in per_clients[counts[0]] if v != reference]
        for v in variants:
            right.plot(counts, [ratio(per_clients[c][v], per_clients[c][reference])
                                for c in counts], marker="o", label=v)
        right.axhline(1.0, color="black", linewidth=0.8)
        right.set_xscale("log", base=2)
        right.set_xticks(counts, [str(c) for c in counts])
        right.set_xlabel("pgbench clients")
        right.set_ylabel(f"TPS × {reference}")
        right.set_title("Through pgbench: uncontended lock + unlock (prepared)", fontsize=10)
        right.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(base, f"cost{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def only_token_locks(args):
    """--only token-locks: the section alone, spliced into the results file (which keeps the
    rest of an earlier full run)."""
    workdir = tempfile.mkdtemp(prefix="pglock-bench.")
    os.chmod(workdir, 0o755)
    out = []
    try:
        bench_token_locks(args.pg_config, workdir, args.quick, not args.skip_peers, out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not os.path.exists(args.output):
        with open(args.output, "w") as f:
            f.write("# pglock benchmark results\n\n## Targets\n\n"
                    "| target | measured | met |\n|---|---|---|\n")
    splice_token_section(args.output, out, TARGETS)
    print("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer clients, shorter runs")
    parser.add_argument("--pg-config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--skip-peers", action="store_true",
                        help="no MariaDB or Redis (also not in the token-owned locks' section)")
    parser.add_argument("--only", choices=["token-locks"],
                        help="run only this section, and replace it and its targets in --output")
    args = parser.parse_args()

    quick = args.quick
    if args.only == "token-locks":
        only_token_locks(args)
        return
    clients_list = [2, 8] if quick else [1, 2, 8, 32]
    seconds = 1 if quick else 2
    rounds = 3
    # The sections that decide the fast path's goals run as many rounds as the in-server one.
    goal_rounds = 7
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="pglock-bench.")
    os.chmod(workdir, 0o755)
    pg = Postgres(args.pg_config, workdir)
    out = []
    try:
        pg.sql(HELPER_FUNCTIONS)
        bench = Pgbench(pg, workdir, seconds)
        bench_uncontended(bench, clients_list, goal_rounds, out)
        bench_preloaded(args.pg_config, workdir, clients_list, goal_rounds, seconds, out)
        bench_in_server(args.pg_config, workdir, pg, bench, 7, 50_000 if quick else 200_000, out)
        bench_contended(bench, clients_list, rounds, out)
        bench_held(bench, pg, rounds, out)
        bench_shapes(bench, pg, rounds, quick, out)
        bench_sharding(args.pg_config, workdir, seconds, rounds, out)
        if not args.skip_peers:
            bench_peers(pg, workdir, 8, 2 if quick else 4, rounds, out)
        bench_token_locks(args.pg_config, workdir, quick, not args.skip_peers, out)
        commands = bench.commands
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    head = [
        "# pglock benchmark results" + (" (quick mode)" if quick else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} cores ({cpu}), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- PostgreSQL {pg.version}, pglock release build; server settings: shared_buffers=256MB, "
        "max_locks_per_transaction=256, fsync=off, synchronous_commit=off, autovacuum=off, "
        "Unix socket",
        f"- rerun: `bench/run.sh{' --quick' if quick else ''}` (took {time.time() - started:.0f} s)",
        "- pgbench runs (scripts are the SQL shown in bench/bench.py):",
    ]
    head += [f"  - `pgbench {c}`" for c in commands[:6]]
    if len(commands) > 6:
        head.append(f"  - ... {len(commands) - 6} more of the same shape")
    head.append("")
    head.append("## Targets\n")
    head.append("Ratios per client count, in the order of the tables below. See "
                "bench/README.md for what a missed target means and what meeting it would take.\n")
    head.append("| target | measured | met |")
    head.append("|---|---|---|")
    for text, measured, met in TARGETS:
        head.append(f"| {text} | {measured} | {'yes' if met else '**no**'} |")
    head.append("")
    charts = write_charts(args.output)
    if charts:
        head.append("Charts: " + ", ".join(f"[{os.path.basename(c)}]({os.path.basename(c)})"
                                            for c in charts) + "\n")
    with open(args.output, "w") as f:
        f.write("\n".join(head + out) + "\n")
    print("\n".join(head + out))


if __name__ == "__main__":
    main()
