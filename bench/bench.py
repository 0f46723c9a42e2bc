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
import os
import platform
import shutil
import tempfile
import time

from harness import Pgbench, Postgres, TARGETS
from server import HELPER_FUNCTIONS, bench_contended, bench_held, bench_in_server, bench_preloaded, bench_uncontended
from peers import bench_peers, bench_shapes, bench_sharding
from token_locks import bench_token_locks, splice_token_section
from charts import write_charts


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
