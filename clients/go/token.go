package pglock

// Locks owned by a token (pglock.acquire): held by the server for a TTL, renewed and released
// with the token from any connection of the pool, in the spirit of etcd's concurrency.Session.

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"
)

// ErrLeaseLost is what Lease.Err returns once the lock is gone before Release: a renewal found
// it released or expired, or cut short by pglock.token_max_hold, or no renewal reached the
// server for a whole TTL.
var ErrLeaseLost = errors.New("pglock: the token-owned lock was lost")

// ErrNotAcquired is what Acquire returns when the lock was not granted within ctx's deadline.
var ErrNotAcquired = errors.New("pglock: the token-owned lock was not granted in time")

// Lease is a token-owned lock that renews itself every third of its TTL until Release, or until
// the context given to Acquire is done (then it stops renewing, and releases the lock).
type Lease struct {
	db    *sql.DB
	name  string
	token int64
	ttl   time.Duration
	stop  context.CancelFunc
	done  chan struct{}
	mu    sync.Mutex
	err   error
	// Set by Release before it stops the renewals.
	releasing bool
}

// Acquire takes the exclusive token-owned lock on name for ttl (at least a second), waiting
// until ctx's deadline (none: until granted, or until ctx is cancelled); ErrNotAcquired when it
// was not granted in time. Each statement runs on any connection of db, so a pool of any size
// and a transaction-mode pooler in between both work. Needs pglock preloaded on the server.
func Acquire(ctx context.Context, db *sql.DB, name string, ttl time.Duration) (*Lease, error) {
	var timeout interface{}
	query := ctx
	if deadline, ok := ctx.Deadline(); ok {
		// The server ends the wait at the deadline and answers NULL; the query's own context
		// lasts a little longer, so that the client does not cancel it first (as WaitAndLock).
		timeout = interval(time.Until(deadline))
		var stop context.CancelFunc
		query, stop = withoutDeadline(ctx, deadline)
		defer stop()
	}
	var token sql.NullInt64
	err := db.QueryRowContext(query, "SELECT pglock.acquire($1::text, $2::interval, $3::interval)",
		name, interval(ttl), timeout).Scan(&token)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if !token.Valid {
		return nil, ErrNotAcquired
	}
	keep, stop := context.WithCancel(ctx)
	lease := &Lease{db: db, name: name, token: token.Int64, ttl: ttl, stop: stop,
		done: make(chan struct{})}
	go lease.keepAlive(keep)
	return lease, nil
}

// Token is the lock's fencing token: pass it to pglock.fence_ok in the statements that write.
func (l *Lease) Token() int64 { return l.token }

// Done is closed when the lease stops renewing: after Release, when Acquire's context is done,
// or when the lock is lost (Err then says ErrLeaseLost).
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is nil while the lease holds (and after a Release), ErrLeaseLost once it was lost, or
// the context's error once Acquire's context ended it.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lease) released() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.releasing
}

func (l *Lease) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

func (l *Lease) keepAlive(ctx context.Context) {
	defer close(l.done)
	ticker := time.NewTicker(l.ttl / 3)
	defer ticker.Stop()
	lastRenewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			if !l.released() {
				// Acquire's context ended, not Release: give the lock back.
				l.fail(ctx.Err())
				l.release(context.Background())
			}
			return
		case <-ticker.C:
			var renewed bool
			err := l.db.QueryRowContext(ctx, "SELECT pglock.renew($1::text, $2)",
				l.name, l.token).Scan(&renewed)
			switch {
			case err == nil && renewed:
				lastRenewed = time.Now()
			case err == nil || time.Since(lastRenewed) >= l.ttl:
				if ctx.Err() == nil && !l.released() {
					l.fail(ErrLeaseLost)
					return
				}
			}
		}
	}
}

func (l *Lease) release(ctx context.Context) (bool, error) {
	var released bool
	err := l.db.QueryRowContext(ctx, "SELECT pglock.release($1::text, $2)",
		l.name, l.token).Scan(&released)
	return released, err
}

// Release stops the renewals and releases the lock; nil when it was released, ErrLeaseLost
// when it had been lost already.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.releasing = true
	l.mu.Unlock()
	l.stop()
	<-l.done
	if lost := l.Err(); lost != nil {
		return lost
	}
	released, err := l.release(ctx)
	if err != nil {
		return err
	}
	if !released {
		return ErrLeaseLost
	}
	return nil
}
