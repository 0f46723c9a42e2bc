// Package pglock is go-pglock's API (github.com/allisson/go-pglock/v3) on top of the pglock
// PostgreSQL extension: change the import line and keep your code. Locks by int64 id are the
// same PostgreSQL advisory locks go-pglock takes, so both libraries exclude each other on one id.
// pglock adds names (NewNamedLock), waits with a timeout that return false instead of an
// error (LockWithTimeout), the depth this lock holds (Held), and a Close that releases.
package pglock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Locker is the interface go-pglock's Lock satisfies.
type Locker interface {
	Lock(ctx context.Context) (bool, error)
	WaitAndLock(ctx context.Context) error
	Unlock(ctx context.Context) error
	Close() error
}

// Lock is one advisory lock on a connection of its own (a session lock lives as long as its
// connection, so the connection is the lock's, not the pool's).
type Lock struct {
	conn *sql.Conn
	// The SQL argument that names the lock: the id (bigint) or the name (text).
	arg interface{}
	// The cast that picks pglock's bigint or text overload.
	cast string
	// The lock's key in SQL, from $1.
	key string
}

var _ Locker = Lock{}

// NewLock takes a connection of its own from db for the lock with this id: the advisory lock
// pg_advisory_lock(id) takes, as go-pglock's NewLock.
func NewLock(ctx context.Context, id int64, db *sql.DB) (Lock, error) {
	return newLock(ctx, db, id, "bigint", "$1::bigint")
}

// NewNamedLock is NewLock for a lock named by a string: the key is pglock.key(name), the same
// key Rust's sqlx uses for the name, and any client of pglock locks it by the same name.
func NewNamedLock(ctx context.Context, name string, db *sql.DB) (Lock, error) {
	return newLock(ctx, db, name, "text", "pglock.key($1::text)")
}

func newLock(ctx context.Context, db *sql.DB, arg interface{}, cast, key string) (Lock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return Lock{}, err
	}
	return Lock{conn: conn, arg: arg, cast: cast, key: key}, nil
}

func (l Lock) call(ctx context.Context, function string, extra ...interface{}) (bool, error) {
	query := fmt.Sprintf("SELECT pglock.%s($1::%s", function, l.cast)
	args := []interface{}{l.arg}
	for i, value := range extra {
		query += fmt.Sprintf(", $%d::interval", i+2)
		args = append(args, value)
	}
	var result bool
	err := l.conn.QueryRowContext(ctx, query+")", args...).Scan(&result)
	return result, err
}

// Lock takes the lock if it is free (or already this lock's), without waiting; true if taken.
// Taking it again stacks: each Lock needs its Unlock.
func (l Lock) Lock(ctx context.Context) (bool, error) {
	return l.call(ctx, "try_lock")
}

// WaitAndLock waits in PostgreSQL's queue until the lock is taken, or until ctx is done, and
// then returns ctx's error.
//
// A deadline on ctx becomes the wait's own timeout in the server, so the wait ends there and
// the lock's connection goes on. A cancellation without a deadline can only reach the server as
// a cancel request, after which lib/pq drops the connection: the Lock is then unusable (it held
// nothing, since a lock already held is taken again at once), and a new one is needed.
func (l Lock) WaitAndLock(ctx context.Context) error {
	if deadline, ok := ctx.Deadline(); ok {
		// The query runs under a context that the deadline does not end (the server's timeout
		// does that, a moment later, without a cancel request); a cancellation still ends it.
		query, stop := context.WithTimeout(context.Background(), time.Until(deadline)+deadlineGrace)
		defer stop()
		go func() {
			select {
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.Canceled) {
					stop()
				}
			case <-query.Done():
			}
		}()
		granted, err := l.call(query, "lock", interval(time.Until(deadline)))
		switch {
		case err == nil && !granted:
			return context.DeadlineExceeded
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		}
		return err
	}
	_, err := l.call(ctx, "lock")
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// deadlineGrace is how long past ctx's deadline a wait's query may run before the client
// cancels it: the server ends the wait at the deadline itself.
const deadlineGrace = 10 * time.Second

// interval is d as a PostgreSQL interval (0 for a duration already past: one try).
func interval(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return fmt.Sprintf("%d microseconds", d.Microseconds())
}

// LockWithTimeout waits at most timeout for the lock; false (and no error) when it is not
// granted in time. A timeout of 0 is one try.
func (l Lock) LockWithTimeout(ctx context.Context, timeout time.Duration) (bool, error) {
	return l.call(ctx, "lock", interval(timeout))
}

// Unlock gives back one acquisition. Like go-pglock's, it is no error to unlock a lock this
// session does not hold.
func (l Lock) Unlock(ctx context.Context) error {
	_, err := l.call(ctx, "unlock")
	return err
}

// Held says how many times this lock's session holds it (0 when not held).
func (l Lock) Held(ctx context.Context) (int, error) {
	var depth int
	err := l.conn.QueryRowContext(ctx, fmt.Sprintf(
		"SELECT coalesce(sum(depth), 0)::int FROM pglock.held() "+
			"WHERE key = %s AND scope = 'session' AND mode = 'exclusive'", l.key),
		l.arg).Scan(&depth)
	return depth, err
}

// Close releases every hold of this lock's session and returns the connection to the pool.
// (go-pglock's Close returns the connection with its locks still held, so they last until the
// pool closes that connection.)
func (l Lock) Close() error {
	if l.conn == nil {
		return nil
	}
	_, unlockErr := l.conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock_all()")
	closeErr := l.conn.Close()
	if unlockErr != nil {
		return unlockErr
	}
	return closeErr
}
