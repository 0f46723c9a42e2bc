package pglock

// Against a real server with pglock installed: PGLOCK_TEST_DSN names it (scripts/test.sh sets
// it). Every test uses ids and names of its own.

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

func database(t *testing.T) *sql.DB {
	t.Helper()
	dsn := os.Getenv("PGLOCK_TEST_DSN")
	if dsn == "" {
		t.Fatal("PGLOCK_TEST_DSN is not set: these tests need a server with pglock")
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func lockOn(t *testing.T, db *sql.DB, id int64) Lock {
	t.Helper()
	lock, err := NewLock(context.Background(), id, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	return lock
}

func must(t *testing.T, got bool, err error, want bool, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func TestLockExcludesOthersAndStacks(t *testing.T) {
	db, ctx := database(t), context.Background()
	a, b := lockOn(t, db, 910001), lockOn(t, db, 910001)
	got, err := a.Lock(ctx)
	must(t, got, err, true, "a takes it")
	got, err = b.Lock(ctx)
	must(t, got, err, false, "b is refused")
	got, err = a.Lock(ctx)
	must(t, got, err, true, "a stacks")
	if depth, err := a.Held(ctx); err != nil || depth != 2 {
		t.Fatalf("a holds it %d times (%v), want 2", depth, err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = b.Lock(ctx)
	must(t, got, err, false, "b is refused while a holds one level")
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = b.Lock(ctx)
	must(t, got, err, true, "b takes it once a let go of both")
	if err := a.Unlock(ctx); err != nil {
		t.Fatalf("unlocking what is not held is no error (as in go-pglock): %v", err)
	}
}

// A session doing exactly what go-pglock does (pg_advisory_lock on a connection of its own)
// and this client contend for one id, both ways.
func TestGoPglocksOwnCallsAndThisClientExcludeEachOther(t *testing.T) {
	db, ctx := database(t), context.Background()
	const id = 910002
	other, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var taken bool
	if err := other.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", id).Scan(&taken); err != nil || !taken {
		t.Fatalf("go-pglock's call takes it: %v %v", taken, err)
	}
	lock := lockOn(t, db, id)
	got, err := lock.Lock(ctx)
	must(t, got, err, false, "this client is refused while go-pglock's session holds it")
	if _, err := other.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", id); err != nil {
		t.Fatal(err)
	}
	got, err = lock.Lock(ctx)
	must(t, got, err, true, "this client takes it")
	if err := other.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", id).Scan(&taken); err != nil || taken {
		t.Fatalf("go-pglock's call must be refused: %v %v", taken, err)
	}
}

func TestWaitAndLockEndsWithTheContextAndTheConnectionGoesOn(t *testing.T) {
	db := database(t)
	holder, waiter := lockOn(t, db, 910003), lockOn(t, db, 910003)
	got, err := holder.Lock(context.Background())
	must(t, got, err, true, "holder")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	err = waiter.WaitAndLock(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the wait ends with the context's error, got %v", err)
	}
	if elapsed := time.Since(started); elapsed > 20*time.Second {
		t.Fatalf("the wait outlived its context by far: %v", elapsed)
	}
	got, err = waiter.Lock(context.Background())
	must(t, got, err, false, "the waiter's connection still works")
	done := make(chan error, 1)
	go func() { done <- waiter.WaitAndLock(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	if err := holder.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was never granted")
	}
}

func TestACancelledWaitEndsWithTheContextsError(t *testing.T) {
	db := database(t)
	holder := lockOn(t, db, 910007)
	got, err := holder.Lock(context.Background())
	must(t, got, err, true, "holder")
	waiter, err := NewLock(context.Background(), 910007, db)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	if err := waiter.WaitAndLock(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("the wait ends with the context's error, got %v", err)
	}
	// A new lock on the same id works; the holder still holds.
	other := lockOn(t, db, 910007)
	got, err = other.Lock(context.Background())
	must(t, got, err, false, "still the holder's")
}

func TestLockWithTimeoutReturnsFalseNotAnError(t *testing.T) {
	db, ctx := database(t), context.Background()
	holder, other := lockOn(t, db, 910004), lockOn(t, db, 910004)
	got, err := holder.Lock(ctx)
	must(t, got, err, true, "holder")
	got, err = other.LockWithTimeout(ctx, 50*time.Millisecond)
	must(t, got, err, false, "timed out")
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = other.LockWithTimeout(ctx, time.Second)
	must(t, got, err, true, "granted")
}

func TestNamedLocksAreTheNamesOfEveryPglockClient(t *testing.T) {
	db, ctx := database(t), context.Background()
	lock, err := NewNamedLock(ctx, "go-client:nightly-report", db)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	got, err := lock.Lock(ctx)
	must(t, got, err, true, "named lock")
	var otherGot bool
	if err := db.QueryRowContext(ctx, "SELECT pglock.try_lock('go-client:nightly-report')").Scan(&otherGot); err != nil || otherGot {
		t.Fatalf("another session by the same name must be refused: %v %v", otherGot, err)
	}
	var name string
	if err := lock.conn.QueryRowContext(ctx,
		"SELECT name FROM pglock.locks WHERE key = pglock.key('go-client:nightly-report')").Scan(&name); err != nil || name != "go-client:nightly-report" {
		t.Fatalf("pglock.locks shows %q (%v)", name, err)
	}
	if depth, err := lock.Held(ctx); err != nil || depth != 1 {
		t.Fatalf("held %d (%v), want 1", depth, err)
	}
}

func TestCloseReleasesTheLock(t *testing.T) {
	db, ctx := database(t), context.Background()
	lock, err := NewLock(ctx, 910005, db)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lock.Lock(ctx)
	must(t, got, err, true, "taken")
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}
	other := lockOn(t, db, 910005)
	got, err = other.Lock(ctx)
	must(t, got, err, true, "free after Close (go-pglock's Close leaves it held)")
}

// go-pglock's worker-coordination use: 8 goroutines, each with its own lock on one id, do 25
// rounds of WaitAndLock / critical section / Unlock; never two inside, every round done.
func TestWorkersTakeTurnsUnderOneID(t *testing.T) {
	db := database(t)
	db.SetMaxOpenConns(16)
	const workers, rounds = 8, 25
	var inside, most, done int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			lock, err := NewLock(ctx, 910006, db)
			if err != nil {
				errs <- err
				return
			}
			defer lock.Close()
			for r := 0; r < rounds; r++ {
				if err := lock.WaitAndLock(ctx); err != nil {
					errs <- err
					return
				}
				now := atomic.AddInt32(&inside, 1)
				for {
					seen := atomic.LoadInt32(&most)
					if now <= seen || atomic.CompareAndSwapInt32(&most, seen, now) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				atomic.AddInt32(&inside, -1)
				atomic.AddInt32(&done, 1)
				if err := lock.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most != 1 || done != workers*rounds {
		t.Fatalf("at most %d inside at once (want 1), %d rounds done (want %d)", most, done, workers*rounds)
	}
}

func TestReadLocksCoexistAndExcludeAWriter(t *testing.T) {
	db, ctx := database(t), context.Background()
	a, b, writer := lockOn(t, db, 910021), lockOn(t, db, 910021), lockOn(t, db, 910021)
	got, err := a.RLock(ctx)
	must(t, got, err, true, "a reads")
	got, err = b.RLock(ctx)
	must(t, got, err, true, "b reads beside a")
	got, err = writer.Lock(ctx)
	must(t, got, err, false, "the writer waits for the readers")
	deadline, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := writer.WaitAndLock(deadline); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the writer's wait ends at the deadline, got %v", err)
	}
	if err := a.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = writer.Lock(ctx)
	must(t, got, err, true, "the writer, once the readers left")
	reader := lockOn(t, db, 910021)
	deadline, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := reader.WaitAndRLock(deadline); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a reader waits for the writer, got %v", err)
	}
	if err := writer.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := reader.WaitAndRLock(ctx); err != nil {
		t.Fatalf("a reader once the writer left: %v", err)
	}
	if err := reader.RUnlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCloseAfterACancelledWaitReturnsNil(t *testing.T) {
	db := database(t)
	holder := lockOn(t, db, 910022)
	got, err := holder.Lock(context.Background())
	must(t, got, err, true, "holder")
	waiter, err := NewLock(context.Background(), 910022, db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	if err := waiter.WaitAndLock(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("the wait ends with the context's error, got %v", err)
	}
	if err := waiter.Close(); err != nil {
		t.Fatalf("Close after a cancelled wait: %v", err)
	}
}
