"""Shared by the examples: connections from the usual libpq environment (PGHOST, PGPORT,
PGUSER, PGDATABASE), each in autocommit mode like a typical service's pool."""

import threading
import time

import psycopg


def connect(name):
    return psycopg.connect(autocommit=True, application_name=name)


def say(who, what):
    print(f"{time.strftime('%H:%M:%S')} {who:>10}: {what}", flush=True)


def run_all(*targets):
    """Runs the callables side by side and re-raises the first failure."""
    errors = []

    def guard(target):
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
