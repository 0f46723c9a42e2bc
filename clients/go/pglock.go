// Package pglock is go-pglock's API (github.com/allisson/go-pglock/v3) on top of the pglock
// PostgreSQL extension: change the import line and keep your code. Locks by int64 id are the
// same PostgreSQL advisory locks go-pglock takes, so both libraries exclude each other on one id.
// go-pglock v3.2's read locks are here too (RLock, WaitAndRLock, RUnlock).
// pglock adds names (NewNamedLock), waits with a timeout that return false instead of an
// error (LockWithTimeout), the depth this lock holds (Held), a Close that releases, and locks
// owned by a token that renew themselves (Acquire, in token.go).
//
// Every function needs the pglock extension in the database that db connects to
// (CREATE EXTENSION pglock): NewLock takes a connection, and the first call fails otherwise.
package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
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
	return l.wait(ctx, "lock")
}

// RLock takes a shared (read) hold if no exclusive holder is in the way, without waiting; true
// if taken. Read holds coexist; each RLock needs its RUnlock.
func (l Lock) RLock(ctx context.Context) (bool, error) {
	return l.call(ctx, "try_lock_shared")
}

// WaitAndRLock waits for a shared (read) hold as WaitAndLock waits for the exclusive one.
func (l Lock) WaitAndRLock(ctx context.Context) error {
	return l.wait(ctx, "lock_shared")
}

// RUnlock gives back one shared hold; no error when there is none.
func (l Lock) RUnlock(ctx context.Context) error {
	_, err := l.call(ctx, "unlock_shared")
	return err
}

// wait runs the waiting pglock function (lock or lock_shared) until granted or ctx is done.
func (l Lock) wait(ctx context.Context, function string) error {
	if deadline, ok := ctx.Deadline(); ok {
		query, stop := withoutDeadline(ctx, deadline)
		defer stop()
		granted, err := l.call(query, function, interval(time.Until(deadline)))
		switch {
		case err == nil && !granted:
			return context.DeadlineExceeded
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		}
		return err
	}
	_, err := l.call(ctx, function)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// withoutDeadline is a context for a query that the server itself ends at deadline: ctx's
// deadline does not end it (the server's timeout does that, a moment later, without a cancel
// request), a cancellation of ctx still does, and so does deadlineGrace past the deadline.
func withoutDeadline(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	query, stop := context.WithTimeout(context.Background(), time.Until(deadline)+deadlineGrace)
	go func() {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				stop()
			}
		case <-query.Done():
		}
	}()
	return query, stop
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
// pool closes that connection.) After a WaitAndLock cancelled without a deadline the driver has
// dropped the connection, and its session with every lock it held: Close then returns nil.
func (l Lock) Close() error {
	if l.conn == nil {
		return nil
	}
	_, unlockErr := l.conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock_all()")
	closeErr := l.conn.Close()
	if errors.Is(unlockErr, driver.ErrBadConn) || errors.Is(unlockErr, sql.ErrConnDone) {
		// The session is gone, and its locks with it: nothing is left to release.
		unlockErr = nil
	}
	if unlockErr != nil {
		return unlockErr
	}
	if errors.Is(closeErr, driver.ErrBadConn) || errors.Is(closeErr, sql.ErrConnDone) {
		return nil
	}
	return closeErr
}
