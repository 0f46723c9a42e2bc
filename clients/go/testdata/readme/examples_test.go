// The driver of go-pglock's README examples. ../../readme_test.go generates package readme (the
// examples as go-pglock's page prints them, importing this client in go-pglock's place) into a
// module of its own, copies this file next to it and runs `go test` there: each example runs
// against the server PGLOCK_TEST_DSN names, and a plain session doing what go-pglock does
// (pg_try_advisory_lock on a connection of its own) checks that what the examples hold are
// advisory locks on go-pglock's ids.
package readme

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

// printed is what the examples print: os.Stdout is a pipe while they run (they all run at once,
// and their lines tell them apart).
var printed struct {
	sync.Mutex
	lines []string
}

// count is how many printed lines equal line.
func count(line string) int {
	return len(printedLines(func(l string) bool { return l == line }))
}

// containing is how many printed lines contain part.
func containing(part string) int {
	return len(printedLines(func(l string) bool { return strings.Contains(l, part) }))
}

func printedLines(match func(string) bool) []string {
	printed.Lock()
	defer printed.Unlock()
	var lines []string
	for _, line := range printed.lines {
		if match(line) {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestReadmeExamples(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	read := make(chan struct{})
	go func() {
		defer close(read)
		lines := bufio.NewScanner(r)
		for lines.Scan() {
			printed.Lock()
			printed.lines = append(printed.lines, lines.Text())
			printed.Unlock()
		}
	}()
	t.Run("examples", func(t *testing.T) {
		t.Run("task", testTask)
		t.Run("leader", testLeader)
		t.Run("pool", testPool)
		t.Run("migration", testMigration)
		t.Run("job", testJob)
	})
	os.Stdout = stdout
	w.Close()
	<-read
	for _, line := range printedLines(func(string) bool { return true }) {
		t.Log("printed: " + line)
	}
}

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

// waitUntil polls done for up to 20 s.
func waitUntil(t *testing.T, what string, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// receive is the next of results, within 20 s.
func receive(t *testing.T, results <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-results:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// plainSessionTakes says whether go-pglock's own call, pg_try_advisory_lock(id) on a connection
// of its own, gets the lock (and gives it back at once if so).
func plainSessionTakes(t *testing.T, db *sql.DB, id int64) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var taken bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", id).Scan(&taken); err != nil {
		t.Fatal(err)
	}
	if taken {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", id); err != nil {
			t.Fatal(err)
		}
	}
	return taken
}

func heldFromPlainSessions(t *testing.T, db *sql.DB, id int64, what string) {
	t.Helper()
	if plainSessionTakes(t, db, id) {
		t.Fatalf("%s, a plain session took advisory lock %d: the example does not hold it", what, id)
	}
}

func releasedEventually(t *testing.T, db *sql.DB, id int64) {
	t.Helper()
	waitUntil(t, "advisory lock "+strconv.FormatInt(id, 10)+" is free again", func() bool {
		return plainSessionTakes(t, db, id)
	})
}

// Two processors of one task at once: one does it, the other is told it is being processed.
func testTask(t *testing.T) {
	t.Parallel()
	db := database(t)
	const taskID = "readme-task-42"
	results := make(chan error, 2)
	for i := 0; i < 2; i++ {
		processor := &TaskProcessor{db: db}
		go func() { results <- processor.ProcessTask(taskID) }()
	}
	waitUntil(t, "a processor runs the task", func() bool { return count("Processing task "+taskID+"...") == 1 })
	heldFromPlainSessions(t, db, hashToInt64(taskID), "while the task runs")
	var done, refused int
	for i := 0; i < 2; i++ {
		switch err := receive(t, results, "ProcessTask"); {
		case err == nil:
			done++
		case err.Error() == "task "+taskID+" is already being processed":
			refused++
		default:
			t.Fatalf("ProcessTask: %v", err)
		}
	}
	if done != 1 || refused != 1 {
		t.Fatalf("%d processed the task and %d were refused, want 1 and 1", done, refused)
	}
	waitUntil(t, "the task is completed", func() bool { return count("Task "+taskID+" completed") == 1 })
	if n := count("Processing task " + taskID + "..."); n != 1 {
		t.Fatalf("the task was processed %d times", n)
	}
	releasedEventually(t, db, hashToInt64(taskID))
}

// Two electors of one cluster: one leads until its context ends, the other sees a leader.
func testLeader(t *testing.T) {
	t.Parallel()
	db := database(t)
	const cluster = "readme-leader-cluster"
	electors := []*LeaderElector{NewLeaderElector(db, cluster), NewLeaderElector(db, cluster)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := time.Now()
	results := make(chan error, 2)
	for _, elector := range electors {
		elector := elector
		go func() { results <- elector.RunElection(ctx) }()
	}
	waitUntil(t, "one elector leads and the other sees a leader", func() bool {
		return (electors[0].IsLeader() || electors[1].IsLeader()) &&
			containing("Became leader") == 1 && count("Another instance is the leader") == 1
	})
	if err := receive(t, results, "the follower's RunElection"); err != nil {
		t.Fatalf("the follower's RunElection: %v", err)
	}
	if electors[0].IsLeader() == electors[1].IsLeader() {
		t.Fatalf("IsLeader: %v and %v, want one leader", electors[0].IsLeader(), electors[1].IsLeader())
	}
	heldFromPlainSessions(t, db, hashToInt64(cluster), "while an elector leads")
	time.Sleep(300*time.Millisecond - time.Since(started))
	if !electors[0].IsLeader() && !electors[1].IsLeader() {
		t.Fatal("the leader stopped leading before its context ended")
	}
	heldFromPlainSessions(t, db, hashToInt64(cluster), "still, until the leader's context ends")
	cancel()
	if err := receive(t, results, "the leader's RunElection"); err != nil {
		t.Fatalf("the leader's RunElection: %v", err)
	}
	waitUntil(t, "the leader lets go", func() bool { return containing("Lost leadership") == 1 })
	if electors[0].IsLeader() || electors[1].IsLeader() {
		t.Fatal("an elector still says it leads")
	}
	if n := containing("Became leader"); n != 1 {
		t.Fatalf("%d electors became leader", n)
	}
	releasedEventually(t, db, hashToInt64(cluster))
}

// A pool of 3: three acquisitions get slots 1 to 3, a fourth is refused, and a slot given back
// is the one the next acquisition gets.
func testPool(t *testing.T) {
	t.Parallel()
	db := database(t)
	ctx := context.Background()
	pool := NewResourcePool(db, 3)
	releases := map[int]func(){}
	defer func() {
		for _, release := range releases {
			release()
		}
	}()
	var ids []int
	for i := 0; i < 3; i++ {
		id, release, err := pool.AcquireResource(ctx)
		if err != nil {
			t.Fatalf("acquisition %d: %v", i+1, err)
		}
		if releases[id] != nil {
			t.Fatalf("resource %d acquired twice", id)
		}
		releases[id] = release
		ids = append(ids, id)
	}
	sort.Ints(ids)
	if !reflect.DeepEqual(ids, []int{1, 2, 3}) {
		t.Fatalf("acquired resources %v, want 1, 2 and 3", ids)
	}
	id, release, err := pool.AcquireResource(ctx)
	if err == nil || err.Error() != "no resources available in pool" || id != 0 || release != nil {
		t.Fatalf("the fourth acquisition: resource %d, %v; want the pool's refusal", id, err)
	}
	for slot := int64(1); slot <= 3; slot++ {
		heldFromPlainSessions(t, db, 10000+slot, "while the pool's resources are out")
	}
	releases[2]()
	delete(releases, 2)
	id, release, err = pool.AcquireResource(ctx)
	if err != nil || id != 2 {
		t.Fatalf("after resource 2 was given back: resource %d, %v; want 2", id, err)
	}
	releases[2] = release
	heldFromPlainSessions(t, db, 10002, "once resource 2 is out again")
	for id, release := range releases {
		release()
		delete(releases, id)
	}
	for slot := int64(1); slot <= 3; slot++ {
		releasedEventually(t, db, 10000+slot)
	}
}

// Two runners at once: both succeed, one after the other.
func testMigration(t *testing.T) {
	t.Parallel()
	db := database(t)
	const migrationLockID = 999999
	const acquired, running, completed = "Migration lock acquired, checking migration status...",
		"Running migrations...", "Migrations completed successfully"
	started := time.Now()
	results := make(chan error, 2)
	for i := 0; i < 2; i++ {
		runner := &MigrationRunner{db: db}
		go func() { results <- runner.RunMigrations(context.Background()) }()
	}
	waitUntil(t, "a runner holds the migration lock", func() bool { return count(acquired) >= 1 })
	heldFromPlainSessions(t, db, migrationLockID, "while migrations run")
	for i := 0; i < 2; i++ {
		if err := receive(t, results, "RunMigrations"); err != nil {
			t.Fatalf("RunMigrations: %v", err)
		}
	}
	// Each runner migrates for 2 s under the lock: one after the other takes at least 4 s.
	if took := time.Since(started); took < 4*time.Second {
		t.Fatalf("both runners were done in %v: not one after the other", took)
	}
	waitUntil(t, "both runners are done", func() bool { return count(completed) == 2 })
	if n := count("Attempting to acquire migration lock..."); n != 2 {
		t.Fatalf("%d runners tried the migration lock", n)
	}
	steps := printedLines(func(l string) bool {
		return l == acquired || l == running || l == completed || l == "Database is up to date"
	})
	if want := []string{acquired, running, completed, acquired, running, completed}; !reflect.DeepEqual(steps, want) {
		t.Fatalf("the runners printed\n%s\nwant one's steps after the other's", strings.Join(steps, "\n"))
	}
	releasedEventually(t, db, migrationLockID)
}

// Two instances of one scheduled job at once: one runs it, the other says it is running
// elsewhere. The job would run for 5 s; its context ends it once both have spoken.
func testJob(t *testing.T) {
	t.Parallel()
	db := database(t)
	const jobID = "readme-job-cleanup"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan error, 2)
	for _, job := range []*ScheduledJob{NewScheduledJob(db, jobID), NewScheduledJob(db, jobID)} {
		job := job
		go func() { results <- job.Execute(ctx) }()
	}
	waitUntil(t, "one instance runs the job and the other skips it", func() bool {
		return count("Executing job "+jobID+"...") == 1 &&
			count("Job "+jobID+" is already running on another instance") == 1
	})
	if err := receive(t, results, "the skipping instance's Execute"); err != nil {
		t.Fatalf("the skipping instance's Execute: %v", err)
	}
	heldFromPlainSessions(t, db, hashToInt64(jobID), "while the job runs")
	cancel()
	err := receive(t, results, "the running instance's Execute")
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "job execution failed: ") {
		t.Fatalf("the running instance's Execute once its context ended: %v", err)
	}
	if n := count("Job " + jobID + " completed"); n != 0 {
		t.Fatalf("the job completed %d times although cancelled", n)
	}
	if n := count("Executing job " + jobID + "..."); n != 1 {
		t.Fatalf("the job ran %d times", n)
	}
	releasedEventually(t, db, hashToInt64(jobID))
}
