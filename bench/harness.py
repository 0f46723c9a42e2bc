"""The benchmark's shared harness: a throwaway PostgreSQL and pgbench runs, interleaved rounds
of compared variants, and the statistics and formatting every section reports with.
"""

import os
import re
import shutil
import statistics
import subprocess
import textwrap


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
