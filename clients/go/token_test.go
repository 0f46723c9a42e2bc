//go:build tokens

package pglock

// Token-owned locks need pglock preloaded: scripts/test.sh runs these with -tags tokens on its
// preloaded server (clients/go/test.sh tokens).

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTokenLeaseRenewsItselfUntilRelease(t *testing.T) {
	db, ctx := database(t), context.Background()
	lease, err := Acquire(ctx, db, "go: token lease", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lease.Token() <= 0 {
		t.Fatalf("token %d", lease.Token())
	}
	time.Sleep(2500 * time.Millisecond) // two and a half TTLs: only the renewals keep it
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := Acquire(short, db, "go: token lease", time.Second); !errors.Is(err, ErrNotAcquired) {
		t.Fatalf("taken while the lease holds it: %v", err)
	}
	var fenced bool
	if err := db.QueryRow("SELECT pglock.fence_ok('go: token lease', $1)", lease.Token()).
		Scan(&fenced); err != nil || !fenced {
		t.Fatalf("fence_ok with the lease's token: %v %v", fenced, err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if lease.Err() != nil {
		t.Fatalf("Err after Release: %v", lease.Err())
	}
	next, err := Acquire(ctx, db, "go: token lease", time.Second)
	if err != nil {
		t.Fatalf("free after Release: %v", err)
	}
	if next.Token() <= lease.Token() {
		t.Fatalf("tokens grow: %d then %d", lease.Token(), next.Token())
	}
	if err := next.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTokenLeaseLostIsReported(t *testing.T) {
	db, ctx := database(t), context.Background()
	lease, err := Acquire(ctx, db, "go: token lost", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Someone with the token (the same role) releases it behind the lease's back.
	var released bool
	if err := db.QueryRow("SELECT pglock.release('go: token lost', $1)", lease.Token()).
		Scan(&released); err != nil || !released {
		t.Fatalf("release: %v %v", released, err)
	}
	select {
	case <-lease.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the lease did not notice")
	}
	if !errors.Is(lease.Err(), ErrLeaseLost) {
		t.Fatalf("Err: %v", lease.Err())
	}
	if err := lease.Release(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Release of a lost lease: %v", err)
	}
}

func TestTokenLeaseEndsWithItsContext(t *testing.T) {
	db := database(t)
	ctx, cancel := context.WithCancel(context.Background())
	lease, err := Acquire(ctx, db, "go: token context", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-lease.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the lease outlived its context")
	}
	if !errors.Is(lease.Err(), context.Canceled) {
		t.Fatalf("Err: %v", lease.Err())
	}
	// It was released: taken again at once.
	next, err := Acquire(context.Background(), db, "go: token context", time.Second)
	if err != nil {
		t.Fatalf("not released when its context ended: %v", err)
	}
	if err := next.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}
