//! Token-owned locks against roles that try what they may not, and against processes that end
//! (the hardening of 0.5.0): a role without grants cannot renew, release or fence-check another
//! role's lock even with its token (read from pg_prepared_xacts, as an attacker would); a wrong
//! token costs nothing, and a valid one's open transaction holds a lock's end back only for
//! pglock.token_fence_timeout, while the worker sleeps; release after fence_ok in one
//! transaction returns at once; a terminated worker is started again; a terminated waiter fails
//! its acquire; a prepared transaction rolled back by hand stops its token; renew says when
//! token_max_hold cut it short. Forged prepared transactions at restart:
//! tests/server/token_locks_restart.sh.
//!
//! The tests share the server's table of token-owned locks and its settings, so they run one at
//! a time.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::tokens::{acquire, fence_ok, one_at_a_time, release, renew};
use common::{code_and_message, fresh_login_roles, session, session_as};
use postgres::Client;

/// The token of `name`'s lock as anyone can read it: the first field of the GID of the
/// prepared transaction that holds it (pg_prepared_xacts is readable by every role).
fn token_from_prepared_xacts(client: &mut Client, name: &str) -> i64 {
    let gid: String = client
        .query_one(
            "SELECT gid FROM pg_prepared_xacts
             WHERE gid LIKE 'pglock:%:' || (SELECT oid FROM pg_database
                                            WHERE datname = current_database())
                        || ':' || pglock.key($1) || ':%'",
            &[&name],
        )
        .unwrap()
        .get(0);
    gid.split(':').nth(1).unwrap().parse().unwrap()
}

/// A superuser's connection to the token worker's database.
fn in_token_database() -> Client {
    let mut first = session();
    let port: String = first.query_one("SHOW port", &[]).unwrap().get(0);
    let user: String = first.query_one("SELECT current_user", &[]).unwrap().get(0);
    postgres::Config::new()
        .host("localhost")
        .port(port.parse().unwrap())
        .user(&user)
        .dbname("postgres")
        .connect(postgres::NoTls)
        .expect("connects to postgres")
}

/// Whether `name` is free: a try of a session lock succeeds (and is undone).
fn is_free(client: &mut Client, name: &str) -> bool {
    let got: bool = client
        .query_one("SELECT pglock.try_lock($1)", &[&name])
        .unwrap()
        .get(0);
    if got {
        client
            .query_one("SELECT pglock.unlock($1)", &[&name])
            .unwrap();
    }
    got
}

/// Creates the roles of these tests: alice and bob (plain), carol (a member of alice).
fn roles() {
    let mut admin = session();
    fresh_login_roles(
        &mut admin,
        &["pglock_alice", "pglock_bob", "pglock_carol"],
        &[],
    );
    admin
        .batch_execute("GRANT pglock_alice TO pglock_carol")
        .unwrap();
}

/// Sets a sighup setting and waits until new sessions see it; puts it back when dropped.
struct Setting(&'static str);

impl Setting {
    fn set(name: &'static str, value: &str, shown: &str) -> Self {
        let mut admin = session();
        admin
            .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        let start = Instant::now();
        while session()
            .query_one(&format!("SHOW {name}"), &[])
            .unwrap()
            .get::<_, String>(0)
            != shown
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never reloaded"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Setting(name)
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        let mut admin = session();
        let _ = admin.batch_execute(&format!("ALTER SYSTEM RESET {}", self.0));
        let _ = admin.batch_execute("SELECT pg_reload_conf()");
    }
}

/// The pid of a process of `backend_type` (the newest; waits at most 30 s for one to run).
fn process_of(client: &mut Client, backend_type: &str) -> i32 {
    let start = Instant::now();
    loop {
        let pid: Option<i32> = client
            .query_one(
                "SELECT max(pid) FROM pg_stat_activity WHERE backend_type = $1",
                &[&backend_type],
            )
            .unwrap()
            .get(0);
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {backend_type}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The token worker's pid.
fn worker_pid(client: &mut Client) -> i32 {
    process_of(client, "pglock token worker")
}

/// What an acquire in a session of its own came to: its token (or NULL), or its error's
/// SQLSTATE and message.
type Outcome = Result<Option<i64>, (String, String)>;

/// Runs `sql` (an acquire of `name`, $1) in a session of its own, in a thread; its outcome
/// arrives on the receiver.
fn acquire_in_thread(
    sql: &'static str,
    name: &'static str,
) -> (thread::JoinHandle<()>, mpsc::Receiver<Outcome>) {
    let (sender, receiver) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut client = session();
        let outcome = client
            .query_one(sql, &[&name])
            .map(|row| row.get::<_, Option<i64>>(0));
        sender
            .send(outcome.map_err(|e| code_and_message(&e)))
            .unwrap();
    });
    (waiter, receiver)
}

/// CPU time (user + system, in clock ticks) that process `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn token_trust_another_role_cannot_renew_release_or_fence_a_lock_whose_token_it_read() {
    let _guard = one_at_a_time();
    roles();
    let name = "trust: payroll";
    let mut alice = session_as("pglock_alice");
    let token = acquire(&mut alice, name, "60 s", "0").expect("free");
    let mut bob = session_as("pglock_bob");
    let read = token_from_prepared_xacts(&mut bob, name);
    assert_eq!(read, token, "the GID names the lock's token");
    // Every move of the review's attack, and its neighbours: all false, nothing changes.
    assert!(!renew(&mut bob, name, token), "bob renewed alice's lock");
    assert!(!fence_ok(&mut bob, name, token), "bob's fence check passed");
    assert!(!release(&mut bob, name, token), "bob released alice's lock");
    for guess in token - 3..token + 3 {
        assert!(!release(&mut bob, name, guess));
    }
    assert_eq!(acquire(&mut bob, name, "60 s", "0"), None, "bob took it");
    assert!(!is_free(&mut bob, name), "the lock is still held");
    // Nothing of bob's holds the lock's fence either.
    let fences: i64 = bob
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 4",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fences, 0, "a refused fence check left a lock behind");
    // A role with alice's privileges may act for her, as pg_cancel_backend allows.
    let mut carol = session_as("pglock_carol");
    assert!(renew(&mut carol, name, token), "a member of alice renews");
    assert!(fence_ok(&mut alice, name, token));
    assert!(release(&mut alice, name, token));
    assert!(is_free(&mut bob, name));
    // And the superuser may too.
    let token = acquire(&mut alice, name, "60 s", "0").expect("free again");
    assert!(
        release(&mut session(), name, token),
        "the superuser releases"
    );
    assert!(is_free(&mut bob, name));
}

#[test]
fn token_trust_a_wrong_token_in_an_open_transaction_does_not_keep_a_lock_from_expiring() {
    let _guard = one_at_a_time();
    roles();
    let name = "trust: pinned";
    let mut alice = session_as("pglock_alice");
    let token = acquire(&mut alice, name, "1 s", "0").expect("free");
    let mut bob = session_as("pglock_bob");
    bob.batch_execute("BEGIN").unwrap();
    assert!(!fence_ok(&mut bob, name, 0));
    assert!(!fence_ok(&mut bob, name, token), "another role's token");
    // Bob's transaction stays open; alice's lock expires all the same and a waiter gets it
    // (well before pglock.token_fence_timeout, which only a valid check can run into).
    let start = Instant::now();
    let next = acquire(&mut alice, name, "60 s", "30 s").expect("expired and passed on");
    assert!(next > token);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the expiry waited for bob's transaction ({:?})",
        start.elapsed()
    );
    bob.batch_execute("COMMIT").unwrap();
    assert!(release(&mut alice, name, next));
}

#[test]
fn token_trust_a_fence_check_left_open_holds_a_lock_back_only_until_the_fence_timeout() {
    let _guard = one_at_a_time();
    let _timeout = Setting::set("pglock.token_fence_timeout", "3s", "3s");
    let name = "trust: fence left open";
    let mut holder = session();
    let token = acquire(&mut holder, name, "1 s", "0").expect("free");
    let holder_pid = common::pid(&mut holder);
    holder.batch_execute("BEGIN").unwrap();
    assert!(fence_ok(&mut holder, name, token));
    // The lock expires after 1 s, but the open transaction saw it valid: it cannot pass on
    // until that transaction ends, which the worker forces after 3 s. Meanwhile the worker
    // sleeps between its looks (0.4.0 spun at 100% of a core).
    let mut observer = session();
    let worker = worker_pid(&mut observer);
    let (sender, receiver) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut waiter = session();
        let started = Instant::now();
        let next = acquire(&mut waiter, name, "60 s", "60 s");
        sender.send((next, started.elapsed())).unwrap();
        (waiter, next)
    });
    thread::sleep(Duration::from_millis(1500));
    let before = cpu_ticks(worker);
    thread::sleep(Duration::from_millis(1000));
    let used = cpu_ticks(worker) - before;
    // SAFETY: sysconf only reads a constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        used * 4 < ticks_per_second,
        "the worker used {used} of {ticks_per_second} ticks in a second while it waited"
    );
    let (next, waited) = receiver.recv_timeout(Duration::from_secs(60)).unwrap();
    let next = next.expect("granted once the fence timeout ended the transaction");
    assert!(next > token);
    assert!(
        waited >= Duration::from_millis(2500),
        "passed on while the transaction that saw it valid was open ({waited:?})"
    );
    // The session that kept its transaction open was ended.
    let error = holder.batch_execute("COMMIT").unwrap_err();
    assert!(
        holder.is_closed() || error.as_db_error().is_some(),
        "{error}"
    );
    let alive: bool = observer
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)",
            &[&holder_pid],
        )
        .unwrap()
        .get(0);
    assert!(!alive, "the session that pinned the lock is still there");
    let (mut waiter, _) = waiter.join().unwrap();
    assert!(release(&mut waiter, name, next));
}

#[test]
fn token_trust_release_after_fence_ok_in_one_transaction_returns_and_passes_on_at_commit() {
    let _guard = one_at_a_time();
    let name = "trust: fence then release";
    let mut client = session();
    let token = acquire(&mut client, name, "60 s", "0").expect("free");
    let (sender, receiver) = mpsc::channel();
    let worker = thread::spawn(move || {
        client.batch_execute("BEGIN").unwrap();
        assert!(fence_ok(&mut client, name, token));
        let released = release(&mut client, name, token);
        sender.send(released).unwrap();
        client
    });
    let released = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("release returned");
    assert!(released);
    let mut client = worker.join().unwrap();
    // Until the transaction ends the fence holds: nobody has the lock yet.
    let mut other = session();
    assert_eq!(acquire(&mut other, name, "60 s", "0"), None);
    assert!(!renew(&mut client, name, token), "a released lock renewed");
    client.batch_execute("COMMIT").unwrap();
    let next = acquire(&mut other, name, "60 s", "30 s").expect("passed on at commit");
    assert!(next > token);
    assert!(release(&mut other, name, next));
}

#[test]
fn token_trust_a_terminated_worker_is_started_again_and_locks_still_expire() {
    let _guard = one_at_a_time();
    let name = "trust: worker terminated";
    let mut client = session();
    let token = acquire(&mut client, name, "2 s", "0").expect("free");
    let old = worker_pid(&mut client);
    let ended: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap()
        .get(0);
    assert!(ended);
    let start = Instant::now();
    let new = loop {
        let pid = worker_pid(&mut client);
        if pid != old {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker was not started again"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(new, old);
    // The lock it held before is still known, and expires: a waiter gets it.
    let next = acquire(&mut client, name, "60 s", "30 s").expect("expired under the new worker");
    assert!(next > token);
    assert!(release(&mut client, name, next));
}

#[test]
fn token_trust_a_terminated_waiter_process_fails_its_acquire_and_leaves_nothing() {
    let _guard = one_at_a_time();
    let name = "trust: waiter terminated";
    let mut holder = session();
    let token = acquire(&mut holder, name, "60 s", "0").expect("free");
    let (waiter, receiver) = acquire_in_thread("SELECT pglock.acquire($1, '60 s')", name);
    let mut observer = session();
    let waiter_pid = process_of(&mut observer, "pglock token waiter");
    observer
        .query_one("SELECT pg_terminate_backend($1)", &[&waiter_pid])
        .unwrap();
    let outcome = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the acquire ended");
    waiter.join().unwrap();
    let (code, message) = outcome.expect_err("no grant without a waiter");
    assert_eq!(code, "55000", "{message}");
    assert!(release(&mut holder, name, token));
    assert!(is_free(&mut observer, name), "something still holds it");
    let left: i64 = observer
        .query_one(
            "SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key($1)",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "entries left");
    let waiting: i64 = observer
        .query_one(
            "SELECT (pglock.status()->'token_locks'->>'waiting')::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "a waiting entry left");
}

#[test]
fn token_trust_a_lock_rolled_back_by_hand_stops_its_token() {
    let _guard = one_at_a_time();
    let name = "trust: rolled back by hand";
    let mut holder = session();
    let token = acquire(&mut holder, name, "60 s", "0").expect("free");
    // A prepared transaction is finished from the database it was prepared in: the token
    // worker's (pglock.token_database, postgres here).
    let mut admin = in_token_database();
    let gid: String = admin
        .query_one(
            "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pglock:' || $1 || ':%'",
            &[&token.to_string()],
        )
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .unwrap();
    // The key is free; the next owner takes it, and the old token passes nothing.
    let mut next_owner = session();
    let next = acquire(&mut next_owner, name, "60 s", "0").expect("free after the rollback");
    assert!(
        !fence_ok(&mut holder, name, token),
        "a token without its lock fenced"
    );
    assert!(!renew(&mut holder, name, token));
    assert!(!release(&mut holder, name, token));
    assert!(fence_ok(&mut next_owner, name, next));
    assert!(release(&mut next_owner, name, next));
}

#[test]
fn token_trust_other_roles_see_no_client_address_of_a_token_lock() {
    let _guard = one_at_a_time();
    roles();
    let name = "trust: who took it";
    let mut alice = session_as("pglock_alice");
    let token = acquire(&mut alice, name, "60 s", "0").expect("free");
    let shown = |client: &mut Client| -> (Option<String>, Option<i64>) {
        let row = client
            .query_one(
                "SELECT client_addr::text, token FROM pglock.locks
                 WHERE key = pglock.key($1) AND pid IS NULL",
                &[&name],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let (addr, seen_token) = shown(&mut alice);
    assert!(
        addr.is_some(),
        "alice connected over TCP and sees her address"
    );
    assert_eq!(seen_token, Some(token));
    let mut bob = session_as("pglock_bob");
    assert_eq!(
        shown(&mut bob),
        (None, None),
        "bob sees alice's address or token"
    );
    assert!(release(&mut alice, name, token));
}

/// How many waiter processes run (each waits in a lock's queue for one acquire).
fn waiter_processes(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pglock token waiter'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn token_trust_one_role_cannot_take_every_worker_process_by_waiting() {
    let _guard = one_at_a_time();
    roles();
    let name = "trust: flood";
    let mut alice = session_as("pglock_alice");
    let token = acquire(&mut alice, name, "60 s", "0").expect("free");
    // Bob opens more waiting acquires than pglock.max_token_waiters_per_role (4): four wait
    // in waiter processes, the others poll; all are served in the end.
    let flood = 7;
    let (sender, receiver) = mpsc::channel();
    let mut threads = Vec::new();
    for _ in 0..flood {
        let sender = sender.clone();
        threads.push(thread::spawn(move || {
            let mut bob = session_as("pglock_bob");
            let got = acquire(&mut bob, name, "60 s", "60 s");
            if let Some(token) = got {
                assert!(release(&mut bob, name, token));
            }
            sender.send(got.is_some()).unwrap();
        }));
    }
    let mut observer = session();
    let start = Instant::now();
    loop {
        let waiting_calls: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = 'pglock_bob' AND state = 'active' AND query LIKE '%pglock.acquire%'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting_calls == flood {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bob's acquires never all started"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Give the flood time to take what it can, then count: never more than the cap.
    for _ in 0..20 {
        let processes = waiter_processes(&mut observer);
        assert!(processes <= 4, "{processes} waiter processes for one role");
        thread::sleep(Duration::from_millis(25));
    }
    // Another role still gets a waiter process of its own.
    let mut carol_holder = session_as("pglock_alice");
    let other = "trust: flood, another name";
    let other_token = acquire(&mut carol_holder, other, "60 s", "0").expect("free");
    let carol_waits = thread::spawn(move || {
        let mut carol = session_as("pglock_carol");
        acquire(&mut carol, other, "60 s", "30 s").map(|token| (carol, token))
    });
    let start = Instant::now();
    while waiter_processes(&mut observer) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "another role got no waiter process"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(release(&mut carol_holder, other, other_token));
    let (mut carol, carol_token) = carol_waits.join().unwrap().expect("carol was granted");
    assert!(release(&mut carol, other, carol_token));
    // Alice lets go: every one of bob's acquires is served in turn.
    assert!(release(&mut alice, name, token));
    let mut served = 0;
    for _ in 0..flood {
        if receiver.recv_timeout(Duration::from_secs(60)).unwrap() {
            served += 1;
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(served, flood, "acquires not served");
}

#[test]
fn token_trust_a_client_killed_while_its_acquire_waits_is_granted_nothing() {
    let _guard = one_at_a_time();
    let name = "trust: client killed";
    let mut holder = session();
    let token = acquire(&mut holder, name, "60 s", "0").expect("free");
    let port: String = holder.query_one("SHOW port", &[]).unwrap().get(0);
    let user: String = holder.query_one("SELECT current_user", &[]).unwrap().get(0);
    let database: String = holder
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    // A client process that we can kill outright (psql, any version: only libpq matters).
    let mut client = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "localhost",
            "-p",
            &port,
            "-U",
            &user,
            "-d",
            &database,
        ])
        .args([
            "-c",
            "SELECT pglock.acquire('trust: client killed', '60 s')",
        ])
        .env("PGAPPNAME", "pglock ghost client")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    let mut observer = session();
    let start = Instant::now();
    let ghost: i32 = loop {
        let pid: Option<i32> = observer
            .query_one(
                "SELECT max(pid) FROM pg_stat_activity
                 WHERE application_name = 'pglock ghost client' AND state = 'active'",
                &[],
            )
            .unwrap()
            .get(0);
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the client never asked"
        );
        thread::sleep(Duration::from_millis(20));
    };
    // Let it queue, then kill the client: its session notices (pglock.client_check_interval)
    // and ends, giving its request up.
    thread::sleep(Duration::from_millis(300));
    client.kill().unwrap();
    client.wait().unwrap();
    let start = Instant::now();
    loop {
        let alive: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)",
                &[&ghost],
            )
            .unwrap()
            .get(0);
        if !alive {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the session of a killed client waits on"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(release(&mut holder, name, token));
    // Nobody is granted the lock in the dead client's name.
    thread::sleep(Duration::from_millis(500));
    let left: i64 = observer
        .query_one(
            "SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key($1)",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "granted to a client that is gone");
    assert!(is_free(&mut observer, name));
}

#[test]
fn token_trust_a_hold_ends_when_its_transaction_id_grows_too_old() {
    let _guard = one_at_a_time();
    let _bound = Setting::set("pglock.token_max_xid_age", "1000", "1000");
    let name = "trust: xid age";
    let mut holder = session();
    let token = acquire(&mut holder, name, "60 s", "0").expect("free");
    // A busy server: 1,500 transactions that each take a transaction ID.
    let mut busy = session();
    for _ in 0..1500 {
        busy.batch_execute("SELECT pg_current_xact_id()").unwrap();
    }
    // Well before its TTL, the worker ends the lock whose transaction ID is 1,500 old.
    let start = Instant::now();
    let next = acquire(&mut busy, name, "60 s", "30 s").expect("ended by its xid age");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "held {:?} past its xid age",
        start.elapsed()
    );
    assert!(next > token);
    assert!(!renew(&mut holder, name, token), "the old token renewed");
    // The new lock is young: not ended while few transactions run.
    thread::sleep(Duration::from_millis(1500));
    assert!(renew(&mut busy, name, next));
    assert!(release(&mut busy, name, next));
}

#[test]
fn token_trust_a_waiter_whose_prepare_fails_fails_its_acquire_and_leaves_nothing() {
    let _guard = one_at_a_time();
    let name = "trust: prepare fails";
    // A session lock holds the name, so the acquire below waits in a waiter process.
    let mut holder = session();
    assert!(holder
        .query_one("SELECT pglock.try_lock($1)", &[&name])
        .unwrap()
        .get::<_, bool>(0));
    let (waiter, receiver) = acquire_in_thread("SELECT pglock.acquire($1, '60 s', '60 s')", name);
    let mut observer = session();
    process_of(&mut observer, "pglock token waiter");
    // The application's own two-phase commits take every prepared-transaction slot.
    let mut app = session();
    let slots: i64 = app
        .query_one(
            "SELECT current_setting('max_prepared_transactions')::int - count(*) FROM pg_prepared_xacts",
            &[],
        )
        .unwrap()
        .get(0);
    let gids: Vec<String> = (0..slots).map(|i| format!("pglock test app {i}")).collect();
    for gid in &gids {
        app.batch_execute(&format!("BEGIN; PREPARE TRANSACTION '{gid}'"))
            .unwrap();
    }
    // The lock passes to the waiter, whose PREPARE finds no slot: the acquire fails at once
    // (0.4.0 waited for statement_timeout and leaked the entry as Granting).
    assert!(holder
        .query_one("SELECT pglock.unlock($1)", &[&name])
        .unwrap()
        .get::<_, bool>(0));
    let outcome = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the acquire ended");
    waiter.join().unwrap();
    for gid in &gids {
        app.batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
            .unwrap();
    }
    let (code, message) = outcome.expect_err("granted without a prepared transaction");
    assert_eq!(code, "55000", "{message}");
    let left: i64 = observer
        .query_one(
            "SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key($1)",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Nothing counts against the caps: the next acquire of the name is granted.
    let token = acquire(&mut observer, name, "60 s", "0").expect("free");
    assert!(release(&mut observer, name, token));
}

#[test]
fn token_trust_a_waiting_acquire_shows_under_its_caller_with_its_name() {
    let _guard = one_at_a_time();
    let name = "trust: shown waiting";
    let mut holder = session();
    let token = acquire(&mut holder, name, "60 s", "0").expect("free");
    let mut waiter = session();
    let waiter_pid = common::pid(&mut waiter);
    let waiting = thread::spawn(move || {
        let got = acquire(&mut waiter, name, "60 s", "30 s");
        (waiter, got)
    });
    let mut observer = session();
    let start = Instant::now();
    let row = loop {
        let rows = observer
            .query(
                "SELECT pid, name, application_name IS NOT NULL, blocked_by FROM pglock.locks
                 WHERE key = pglock.key($1) AND NOT granted",
                &[&name],
            )
            .unwrap();
        if let Some(row) = rows.first() {
            break (
                row.get::<_, Option<i32>>(0),
                row.get::<_, Option<String>>(1),
                row.get::<_, bool>(2),
                row.get::<_, Option<Vec<i32>>>(3),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never shown waiting"
        );
        thread::sleep(Duration::from_millis(20));
    };
    // The session that called acquire, not the waiter process; blocked by the prepared
    // transaction that holds the lock, which has no pid (0, as pg_blocking_pids says).
    assert_eq!(
        row,
        (Some(waiter_pid), Some(name.to_owned()), true, Some(vec![0])),
    );
    assert!(release(&mut holder, name, token));
    let (mut waiter, got) = waiting.join().unwrap();
    let next = got.expect("granted");
    assert!(release(&mut waiter, name, next));
}
