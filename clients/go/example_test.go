package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	_ "github.com/lib/pq"
	pglock "github.com/pglock/pglock/clients/go"
)

// go-pglock's job de-duplication, by name: the second instance skips the job while the first
// runs it, and waits with a timeout that answers false instead of failing.
func Example() {
	ctx := context.Background()
	db, err := sql.Open("postgres", os.Getenv("PGLOCK_TEST_DSN"))
	if err != nil {
		panic(err)
	}
	defer db.Close()

	first, err := pglock.NewNamedLock(ctx, "example:nightly-report", db)
	if err != nil {
		panic(err)
	}
	defer first.Close()
	second, err := pglock.NewNamedLock(ctx, "example:nightly-report", db)
	if err != nil {
		panic(err)
	}
	defer second.Close()

	acquired, _ := first.Lock(ctx)
	fmt.Println("first instance runs the job:", acquired)
	acquired, _ = second.Lock(ctx)
	fmt.Println("second instance runs it too:", acquired)
	acquired, _ = second.LockWithTimeout(ctx, 100*time.Millisecond)
	fmt.Println("second instance, after waiting 100 ms:", acquired)

	_ = first.Unlock(ctx)
	acquired, _ = second.Lock(ctx)
	fmt.Println("second instance, once the first is done:", acquired)
	// Output:
	// first instance runs the job: true
	// second instance runs it too: false
	// second instance, after waiting 100 ms: false
	// second instance, once the first is done: true
}
