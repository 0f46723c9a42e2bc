//! Mutual exclusion under chaos: 32 sessions loop lock -> a read-then-write critical section ->
//! unlock while a chaos thread cancels and terminates random holders and waiters, which then
//! reconnect. Checked at the end: no lost update, shared and exclusive holders never inside
//! together, and no advisory lock left once every session is gone.
//!
//! The run lasts 20 s (bounded by count and time); PGLOCK_CHAOS_SECONDS sets a longer soak.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::session;
use postgres::Client;

const SESSIONS: usize = 32;
const WRITERS: usize = 24;

struct Tally {
    /// Exclusive sections that finished (their update committed, the lock released).
    completed_writes: AtomicU64,
    /// Shared sections that saw the counter change under them: an exclusive holder inside.
    overlaps: AtomicU64,
    completed_reads: AtomicU64,
    interrupted: AtomicU64,
}

fn chaos_seconds() -> u64 {
    std::env::var("PGLOCK_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// One critical section; Err when chaos interrupted it.
fn section(client: &mut Client, writer: bool, tally: &Tally) -> Result<(), postgres::Error> {
    if writer {
        let got: bool = client
            .query_one("SELECT pglock.lock('chaos', '2 seconds')", &[])?
            .get(0);
        if !got {
            return Ok(());
        }
        // Read, think, write: two writers inside at once would lose an update.
        let value: i64 = client.query_one("SELECT v FROM chaos_counter", &[])?.get(0);
        client.execute("SELECT pg_sleep(0.002)", &[])?;
        client.execute("UPDATE chaos_counter SET v = $1", &[&(value + 1)])?;
        let released: bool = client
            .query_one("SELECT pglock.unlock('chaos')", &[])?
            .get(0);
        assert!(released, "a writer lost its lock without an error");
        tally.completed_writes.fetch_add(1, Ordering::SeqCst);
    } else {
        let got: bool = client
            .query_one("SELECT pglock.lock_shared('chaos', '2 seconds')", &[])?
            .get(0);
        if !got {
            return Ok(());
        }
        let before: i64 = client.query_one("SELECT v FROM chaos_counter", &[])?.get(0);
        client.execute("SELECT pg_sleep(0.002)", &[])?;
        let after: i64 = client.query_one("SELECT v FROM chaos_counter", &[])?.get(0);
        if before != after {
            tally.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let released: bool = client
            .query_one("SELECT pglock.unlock_shared('chaos')", &[])?
            .get(0);
        assert!(released, "a reader lost its lock without an error");
        tally.completed_reads.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

fn connect(index: usize) -> Client {
    let mut client = session();
    client
        .batch_execute(&format!("SET application_name = 'chaos-{index}'"))
        .unwrap();
    client
}

#[test]
fn mutual_exclusion_holds_while_sessions_are_cancelled_and_terminated() {
    let mut setup = session();
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS chaos_counter; CREATE TABLE chaos_counter (v bigint);
             INSERT INTO chaos_counter VALUES (0)",
        )
        .unwrap();
    let tally = Arc::new(Tally {
        completed_writes: AtomicU64::new(0),
        overlaps: AtomicU64::new(0),
        completed_reads: AtomicU64::new(0),
        interrupted: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(chaos_seconds());

    let workers: Vec<_> = (0..SESSIONS)
        .map(|index| {
            let (tally, stop) = (tally.clone(), stop.clone());
            thread::spawn(move || {
                let mut client = connect(index);
                let writer = index < WRITERS;
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if section(&mut client, writer, &tally).is_err() {
                        tally.interrupted.fetch_add(1, Ordering::SeqCst);
                        // A cancel leaves the session (and any lock it holds) alive: let go of
                        // everything. A termination leaves nothing: reconnect.
                        let alive = client.batch_execute("SELECT pglock.unlock_all()").is_ok();
                        if !alive || client.is_closed() {
                            client = connect(index);
                        }
                    }
                }
            })
        })
        .collect();

    let chaos = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut admin = session();
            let mut round: u64 = 0;
            while Instant::now() < deadline {
                round += 1;
                // Pick a worker session that holds or waits for the lock, pseudo-randomly.
                let action = if round % 3 == 0 {
                    "pg_terminate_backend"
                } else {
                    "pg_cancel_backend"
                };
                admin
                    .execute(
                        &format!(
                            "SELECT {action}(pid) FROM pglock.locks
                             WHERE key = pglock.key('chaos') AND application_name LIKE 'chaos-%'
                             ORDER BY md5(pid::text || $1::bigint::text) LIMIT 1"
                        ),
                        &[&(round as i64)],
                    )
                    .unwrap();
                thread::sleep(Duration::from_millis(15 + round % 20));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };

    chaos.join().unwrap();
    for worker in workers {
        worker.join().unwrap();
    }

    let counter: i64 = setup
        .query_one("SELECT v FROM chaos_counter", &[])
        .unwrap()
        .get(0);
    let writes = tally.completed_writes.load(Ordering::SeqCst) as i64;
    let reads = tally.completed_reads.load(Ordering::SeqCst);
    let interrupted = tally.interrupted.load(Ordering::SeqCst);
    eprintln!(
        "chaos: {writes} writes, {reads} reads completed; {interrupted} sections interrupted; counter {counter}"
    );
    assert!(
        writes > 100 && reads > 10,
        "too little work to mean anything"
    );
    assert!(interrupted > 10, "too little chaos to mean anything");
    assert!(
        counter >= writes,
        "lost updates: counter {counter} < {writes} completed writes"
    );
    assert_eq!(
        tally.overlaps.load(Ordering::SeqCst),
        0,
        "a writer was inside with a reader"
    );

    // Every worker's connection is gone: so are its locks.
    let start = Instant::now();
    loop {
        let left: i64 = setup
            .query_one(
                "SELECT count(*) FROM pglock.locks WHERE key = pglock.key('chaos')",
                &[],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{left} locks left behind"
        );
        thread::sleep(Duration::from_millis(50));
    }
    setup.batch_execute("DROP TABLE chaos_counter").unwrap();
}
