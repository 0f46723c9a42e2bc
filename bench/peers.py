"""The lock services a user might pick instead (MariaDB's GET_LOCK, Redis), lock shapes
(lock_all, semaphores, wake-up latency) and sharding names across servers.
"""

import multiprocessing
import os
import shutil
import statistics
import subprocess
import threading
import time

from harness import Pgbench, Postgres, fmt_tps, interleaved, jain, percentile, ratio, run, target
from server import UNCONTENDED


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
