"""Locks owned by a token against the do-it-yourself expires_at table and Redis, direct and
through PgBouncer, and how soon a waiter gets a released or expired lock.
"""

import datetime
import itertools
import os
import random
import shutil
import statistics
import subprocess
import textwrap
import threading
import time

from harness import Postgres, interleaved, percentile, ratio, run, target
from peers import Redis


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
