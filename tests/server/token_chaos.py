#!/usr/bin/env python3
"""Locks owned by a token under chaos, for PGLOCK_SOAK_SECONDS (default 10).

Owner threads loop: acquire one of two names with a TTL of 1-2 s, write to a ledger under
fence_ok (one statement: the name's row is bumped to its next sequence number, so the row lock
orders a name's writes as they commit), sometimes renew, then release, abandon the lock to
expire, or pause past the TTL and write again. A killer meanwhile terminates the token worker,
a waiter process or an owner's backend, SIGKILLs a backend (crash restart), runs `pg_ctl restart
-m immediate`, and SIGKILLs the postmaster (then `pg_ctl start`), each time waiting for the
server and a new token worker. A prober watches the keys.

Asserted, and counted in the output:
- no double owner: never two held entries of a key in pglock.token_locks(), and never one whose
  prepared transaction exists while the prober holds the key itself (pg_try_advisory_xact_lock);
- no stale write: per name, in sequence order, the ledger's tokens never go down, and each was
  granted; no write after the lock's end: a released token, or one paused past its TTL, writes
  nothing;
- no token out of order: each owner's tokens strictly increase, none comes twice, and the first
  token after the chaos is above them all;
- no held entry without its prepared transaction, at every probe and at the end; once the TTLs
  have passed, pglock.token_locks() is empty, no `pglock:` prepared transaction is left and the
  keys are free;
- a token worker that starts again refuses none of the run's prepared transactions (the log has
  no "is not adopted": all were made for grants).
Errors other than the chaos's own (a connection ended, the token worker not running, a waiter
killed) fail the test. Every wait is bounded: past the soak + 90 s it fails with every stack.

Needs: the running throwaway cluster of scripts/cluster.sh with pglock preloaded,
max_prepared_transactions >= 20, max_worker_processes >= 32 and `CREATE EXTENSION pglock` in
postgres (PGHOST, PGPORT, PGLOCK_CLUSTER_DIR, PGLOCK_CLUSTER_BINDIR, PGLOCK_CLUSTER_OPTIONS).
Runs as root (pg_ctl as postgres through sudo). Leaves the cluster running.
"""

import collections
import faulthandler
import os
import random
import re
import signal
import subprocess
import threading
import time

import psycopg

SOAK = float(os.environ.get("PGLOCK_SOAK_SECONDS", "10"))
CLUSTER, BINDIR = os.environ["PGLOCK_CLUSTER_DIR"], os.environ["PGLOCK_CLUSTER_BINDIR"]
DATA, LOG = f"{CLUSTER}/data", f"{CLUSTER}/server.log"
DSN = dict(host=os.environ["PGHOST"], port=os.environ["PGPORT"], user="postgres",
           dbname="postgres", connect_timeout=5)
NAMES, OWNERS = ("chaos-a", "chaos-b"), 4
KINDS = ("terminate worker", "terminate waiter", "terminate owner", "kill -9 backend",
         "restart -m immediate", "kill -9 postmaster")
RESTARTS = KINDS[3:]
INVARIANTS = ("double owners", "stale writes", "writes after the lock's end",
              "tokens out of order", "held entries without their prepared transaction",
              "left after every TTL passed", "locks refused by a restarted worker")
# The 55000 errors the chaos causes: an acquire while the worker restarts, or whose waiter died.
CHAOS_55000 = ("token worker is not running", "could not take the lock")

faulthandler.dump_traceback_later(SOAK + 90, exit=True)  # a hang fails, with every stack
stop, mutex = threading.Event(), threading.Lock()
counts, chaos_errors = collections.Counter(), collections.Counter()
errors, violations = [], collections.defaultdict(list)
granted, owner_tokens = set(), [[] for _ in range(OWNERS)]


def bump(what):
    with mutex:
        counts[what] += 1


def violation(kind, detail):
    with mutex:
        violations[kind].append(detail)


def connect(app):
    conn = psycopg.connect(**DSN, autocommit=True, application_name=app)
    conn.execute("SET statement_timeout = '30s'")  # a pglock call that hangs fails (57014)
    return conn


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def chaos_error(error):
    """What the chaos did to cause this error; None when it did not."""
    if isinstance(error, psycopg.errors.ObjectNotInPrerequisiteState):
        return next((m for m in CHAOS_55000 if m in str(error)), None)
    if isinstance(error, (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown,
                          psycopg.errors.CannotConnectNow, psycopg.errors.ConnectionTimeout)):
        return "connection ended"  # terminated, crashed, restarting
    if type(error) is psycopg.OperationalError:
        return "connection ended"  # refused or lost: no SQLSTATE
    return None


def survive(who, body):
    """Runs body(conn) until stop, reconnecting after the chaos's errors; others are failures."""
    conn = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = connect(f"token_chaos {who}")
            body(conn)
        except Exception as error:
            kind = chaos_error(error)
            if kind is None:
                errors.append(f"{who}: {error!r}")
            with mutex:
                chaos_errors[kind or "other"] += 1
            if conn is not None and (conn.closed or conn.broken):
                conn.close()
                conn = None
            stop.wait(0.1)
    if conn is not None:
        conn.close()


def write(conn, name, token, me):
    """One fenced write: the name's next sequence number, only while the token owns the name."""
    return one(conn, "WITH bump AS (UPDATE chaos_names SET seq = seq + 1 "
                     "WHERE name = %s AND pglock.fence_ok(%s, %s) RETURNING seq) "
                     "INSERT INTO chaos_ledger (name, token, seq, owner) "
                     "SELECT %s, %s, seq, %s FROM bump RETURNING seq",
               name, name, token, name, token, me)


def owner(me):
    def round_(conn):
        name, ttl = random.choice(NAMES), random.choice((1, 2))
        token = one(conn, "SELECT pglock.acquire(%s, make_interval(secs => %s), "
                          "make_interval(secs => %s))", name, ttl, random.choice((0, 0.5, 1.5)))
        if token is None:
            return bump("acquire timed out")
        bump("grants")
        with mutex:
            if token in granted or (owner_tokens[me] and token <= owner_tokens[me][-1]):
                violations["tokens out of order"].append(
                    f"owner {me}: {token} after {owner_tokens[me][-1:]}, or granted twice")
            granted.add(token)
            owner_tokens[me].append(token)
        for _ in range(random.randint(1, 3)):
            bump("fenced writes" if write(conn, name, token, me) else "writes refused")
            if random.random() < 0.3:
                bump("renewed" if one(conn, "SELECT pglock.renew(%s, %s)", name, token)
                     else "renewals refused")
            time.sleep(random.uniform(0, 0.2))
        fate = random.random()
        if fate < 0.15:  # a paused owner: writes again after its TTL, then releases (late)
            if stop.wait(ttl + 0.3):
                return
            bump("paused past the TTL")
            # Only a restart gives a lock a new TTL, and that ends this connection: the token
            # fences nothing now, whether or not the worker has ended the lock yet.
            if write(conn, name, token, me) is not None:
                violation("writes after the lock's end", f"{name}: token {token} after its TTL")
            bump("late writes refused")
        elif fate < 0.3:
            return bump("abandoned")
        if one(conn, "SELECT pglock.release(%s, %s)", name, token):
            bump("released")
            if write(conn, name, token, me) is not None:
                violation("writes after the lock's end", f"{name}: token {token} after release")
        else:
            bump("releases refused")

    survive(f"owner {me}", round_)


def unbacked(conn):
    """Held entries whose prepared transaction does not exist. The entries are read, then the
    prepared transactions, then the entries again: a lock stops showing as held before its
    transaction is rolled back, so one shown in both reads must have its transaction."""
    query = "SELECT key, token, xid FROM pglock.token_locks()"
    first = set(conn.execute(query).fetchall())
    prepared = {x for (x,) in conn.execute(
        "SELECT transaction::text::bigint FROM pg_prepared_xacts").fetchall()}
    return [row for row in first & set(conn.execute(query).fetchall()) if row[2] not in prepared]


def prober():
    def probe(conn):
        for name in NAMES:
            bump("probes")
            held = one(conn, "SELECT count(*) FROM pglock.token_locks() "
                             "WHERE key = pglock.key(%s)", name)
            if held > 1:
                violation("double owners", f"{held} held entries of {name}")
            with conn.transaction():
                if one(conn, "SELECT pg_try_advisory_xact_lock(pglock.key(%s))", name):
                    bump("probes with the key free")
                    holders = conn.execute(
                        "SELECT t.token, t.xid FROM pglock.token_locks() t JOIN pg_prepared_xacts"
                        " p ON p.transaction::text::bigint = t.xid WHERE t.key = pglock.key(%s)",
                        (name,)).fetchall()
                    if holders:
                        violation("double owners", f"the prober holds {name}, and so do {holders}")
        for row in unbacked(conn):
            violation("held entries without their prepared transaction", f"{row}")
        time.sleep(0.01)

    survive("prober", probe)


def pg_ctl(*args):
    """True, or what pg_ctl said when it failed."""
    done = subprocess.run(["sudo", "-u", "postgres", f"{BINDIR}/pg_ctl", "-D", DATA, "-w",
                           "-l", LOG, *args, "-o", os.environ["PGLOCK_CLUSTER_OPTIONS"]],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    return done.returncode == 0 or done.stderr


def worker_pid(conn):
    return one(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pglock token worker'")


def back(old_worker, seconds=60):
    """Waits until the server takes connections and a token worker other than old_worker serves."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with connect("token_chaos waiting") as conn:
                if worker_pid(conn) not in (None, old_worker) and one(
                        conn, "SELECT pglock.status()->'token_locks'->>'worker_running'") == "true":
                    conn.execute("SELECT pglock.renew('no such lock', 1)")
                    return
        except psycopg.Error:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no server or no new token worker within {seconds} s")


def proc(pid):
    """(state, parent pid) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid):
    return (proc(pid) or ("Z",))[0] != "Z"  # a zombie has exited


def postmaster_pid():
    with open(f"{DATA}/postmaster.pid") as pidfile:
        return int(pidfile.readline())


def kill_postmaster():
    postmaster = postmaster_pid()
    children = [int(p) for p in os.listdir("/proc")
                if p.isdigit() and (proc(p) or ("", 0))[1] == postmaster]
    os.kill(postmaster, signal.SIGKILL)
    started = time.monotonic()
    while any(alive(pid) for pid in children + [postmaster]):  # they notice and exit
        assert time.monotonic() < started + 30, "the postmaster's children outlived it by 30 s"
        time.sleep(0.05)
    started = time.monotonic()
    while (result := pg_ctl("start")) is not True:
        # A new postmaster refuses the lock file while the old one is a zombie (here PID 1
        # reaps it within 2 s); one left unreaped for 5 s loses its lock file.
        if time.monotonic() > started + 5 and proc(postmaster) and postmaster_pid() == postmaster:
            os.remove(f"{DATA}/postmaster.pid")
            bump("postmaster.pid removed")
        assert time.monotonic() < started + 30, f"pg_ctl start after SIGKILL: {result}"
        time.sleep(0.2)


def chaos(kind):
    """Does one kind of damage; False when there was nothing to hit."""
    where = {"terminate worker": "backend_type = 'pglock token worker'",
             "terminate waiter": "backend_type = 'pglock token waiter'",
             "terminate owner": "application_name LIKE 'token_chaos owner%'",
             "kill -9 backend": "backend_type IN ('client backend', 'pglock token worker', "
                                "'pglock token waiter') AND pid <> pg_backend_pid()"}.get(kind)
    targets = []
    with connect("token_chaos killer") as conn:
        worker = worker_pid(conn)
        for _ in range(20 if where else 0):  # waiters come and go: look for a second
            targets = [pid for (pid,) in conn.execute(
                f"SELECT pid FROM pg_stat_activity WHERE {where}")]
            if targets:
                break
            time.sleep(0.05)
        if where and not targets:
            return False
        if kind.startswith("terminate"):
            one(conn, "SELECT pg_terminate_backend(%s)", random.choice(targets))
    if kind == "kill -9 backend":
        victim = random.choice(targets)
        if (proc(victim) or ("", 0))[1] != postmaster_pid():  # gone, and its pid may be reused
            return False
        os.kill(victim, signal.SIGKILL)
    elif kind == "restart -m immediate":
        assert (result := pg_ctl("restart", "-m", "immediate")) is True, f"pg_ctl: {result}"
    elif kind == "kill -9 postmaster":
        kill_postmaster()
    if kind == "terminate worker" or kind in RESTARTS:
        back(worker)
    return True


def killer():
    deck = []
    while not stop.wait(random.uniform(0.5, 2.0)):
        if not deck:  # every kind once, in random order, then again
            deck = random.sample(KINDS, len(KINDS))
        kind = deck.pop()
        try:
            bump(kind if chaos(kind) else f"{kind}: nothing to hit")
        except Exception as error:
            return errors.append(f"killer ({kind}): {error!r}")


def log_since(offset):
    with open(LOG, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def events(log):
    """The server's own LOG, WARNING and PANIC lines and their details (not clients' errors)."""
    kept, keep = [], False
    for line in log.splitlines(keepends=True):
        match = re.search(r"\] ([A-Z]+):  ", line)
        level = match.group(1) if match else ""
        if level not in ("DETAIL", "HINT", "CONTEXT", "STATEMENT"):
            keep = level in ("LOG", "WARNING", "PANIC") or "TRAP" in line
        if keep:
            kept.append(line)
    return kept


def settle_and_check(conn):
    """After the chaos: held entries have their transactions, every lock ends within its TTL,
    the keys are free, the next token is above all; the ledger's tokens never go down."""
    for row in unbacked(conn):
        violation("held entries without their prepared transaction", f"at the end: {row}")
    deadline = time.monotonic() + 20  # TTLs are 2 s at most, restored locks' too
    quiet = ("SELECT (SELECT count(*) FROM pglock.token_locks()), (SELECT count(*) FROM "
             "pg_prepared_xacts WHERE gid LIKE 'pglock:%'), "
             "pglock.status()->'token_locks'->>'held', pglock.status()->'token_locks'->>'waiting'")
    while (left := conn.execute(quiet).fetchone()) != (0, 0, "0", "0"):
        if time.monotonic() > deadline:
            return violation("left after every TTL passed", f"locks, prepared, held, waiting: "
                             f"{left}; {conn.execute('TABLE pg_prepared_xacts').fetchall()}")
        time.sleep(0.1)
    for name in NAMES:
        if not one(conn, "SELECT pg_try_advisory_lock(pglock.key(%s))", name):
            violation("left after every TTL passed", f"the key of {name} is taken")
        conn.execute("SELECT pg_advisory_unlock_all()")
        last, highest = one(conn, "SELECT pglock.acquire(%s, '10 s', '0')", name), max(granted)
        if last is None or last <= highest:
            violation("tokens out of order", f"{name} at the end: {last} after {highest}")
        elif not one(conn, "SELECT pglock.release(%s, %s)", name, last):
            violation("left after every TTL passed", f"{name}: the last token did not release")
    ledger = conn.execute("SELECT name, seq, token FROM chaos_ledger ORDER BY name, seq").fetchall()
    for name in NAMES:
        rows = [(seq, token) for (n, seq, token) in ledger if n == name]
        if [seq for seq, _ in rows] != list(range(1, len(rows) + 1)):
            violation("stale writes", f"{name}: the ledger's sequence has gaps")
        highest = 0
        for seq, token in rows:
            if token < highest or token not in granted:
                violation("stale writes", f"{name} #{seq}: token {token} after {highest}"
                          + ("" if token in granted else ", never granted"))
            highest = max(highest, token)
    return len(ledger)


def main():
    with connect("token_chaos setup") as conn:
        conn.execute("DROP TABLE IF EXISTS chaos_ledger, chaos_names")
        conn.execute("CREATE TABLE chaos_names (name text PRIMARY KEY, seq bigint NOT NULL)")
        conn.execute("INSERT INTO chaos_names SELECT unnest(%s::text[]), 0", (list(NAMES),))
        conn.execute("CREATE TABLE chaos_ledger (name text, seq bigint, token bigint NOT NULL, "
                     "owner int NOT NULL, PRIMARY KEY (name, seq))")
    log_start = os.path.getsize(LOG)
    threads = [threading.Thread(target=owner, args=(me,), daemon=True) for me in range(OWNERS)]
    threads += [threading.Thread(target=f, daemon=True) for f in (prober, killer)]
    for thread in threads:
        thread.start()
    time.sleep(SOAK)
    stop.set()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"{thread.name} did not stop within 60 s"
    back(None)
    if counts["grants"] < OWNERS:
        errors.append(f"only {counts['grants']} grants in {SOAK:g} s")
    with connect("token_chaos check") as conn:
        rows = settle_and_check(conn) if granted else 0
        conn.execute("DROP TABLE chaos_ledger, chaos_names")
    log = log_since(log_start)
    # Every pglock: prepared transaction of this run was made for a grant: a worker that
    # starts again must take each one back, not log it as foreign.
    for gid in re.findall(r'prepared transaction "(pglock:[^"]*)" is not adopted', log):
        violation("locks refused by a restarted worker", gid)

    print(f"token_chaos: {SOAK:g} s, {OWNERS} owners on {len(NAMES)} names: " + ", ".join(
        f"{counts[k]} {k}" for k in ("grants", "acquire timed out", "fenced writes",
                                     "writes refused", "renewed", "renewals refused", "released",
                                     "releases refused", "abandoned", "paused past the TTL",
                                     "late writes refused")))
    print("token_chaos: kills: " + ", ".join(f"{k} {counts[k]}" for k in KINDS)
          + f" (nothing to hit {sum(counts[f'{k}: nothing to hit'] for k in KINDS)}, "
            f"postmaster.pid removed {counts['postmaster.pid removed']})"
          + f"; restarts {sum(counts[k] for k in RESTARTS)} (crash reinitialisations in the log "
            f"{log.count('all server processes terminated; reinitializing')}); "
            "the chaos's errors in the clients: "
          + ", ".join(f"{k} {v}" for k, v in sorted(chaos_errors.items())))
    print("token_chaos: " + ", ".join(f"{len(violations[k])} {k}" for k in INVARIANTS)
          + f" ({counts['probes']} probes, {counts['probes with the key free']} with the key "
            f"free; {rows} ledger rows)")
    failed = [f"{k}: {v[:5]}" for k, v in violations.items() if v] + errors[:20]
    if failed:
        print("token_chaos: FAILED\n  " + "\n  ".join(failed)
              + "\ntoken_chaos: the server log's last events:\n" + "".join(events(log)[-40:]))
        raise SystemExit(1)
    print("token_chaos: all passed")


if __name__ == "__main__":
    main()
