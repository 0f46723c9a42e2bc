package pglock_test

// go-pglock's README examples, run through this client. The repository keeps no copy of them:
// the test reads go-pglock's documentation page (pkg.go.dev's page as text), takes the examples
// from it by their titles, writes them as they are into a package of a module of its own that
// imports this client under go-pglock's package name, adds the driver in testdata/readme (ours),
// and runs `go test` there against the server PGLOCK_TEST_DSN names.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/scanner"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// readmePageEnv names the page's text when it is not where the suite keeps it.
const readmePageEnv = "PGLOCK_GO_PGLOCK_README"

// The page's places, after $PGLOCK_GO_PGLOCK_README: relative to clients/go, then absolute.
var readmePagePaths = []string{
	"../../../shared/reference/go-pglock-v3.txt",
	"/work/shared/reference/go-pglock-v3.txt",
}

// readmeExamples are the examples run, by their titles under the page's "Examples" heading,
// with the names of the driver's subtests; readmeExamplesEnd is the heading after the last.
var readmeExamples = []struct{ title, subtest string }{
	{"Distributed Task Execution", "task"},
	{"Leader Election", "leader"},
	{"Resource Pool Management", "pool"},
	{"Database Migration Lock", "migration"},
	{"Scheduled Job Coordination", "job"},
}

const readmeExamplesEnd = "Best Practices"

// go-pglock's import path (package pglock), which the examples assume, and this client's.
const (
	goPglockImport = `"github.com/allisson/go-pglock/v3"`
	clientImport   = `pglock "github.com/pglock/pglock/clients/go"`
)

// readmeExample is one example's code as the page prints it, byte for byte, less its top-level
// func main blocks.
type readmeExample struct {
	title  string
	code   string
	pieces []string // the page's text that code is made of (more than one around a main)
	mains  int      // func main blocks left out
}

// extractReadmeExamples finds each title (a line of its own) after the line "Examples" and takes
// the lines from the first one starting with "type " or "func " up to the next heading (one of the
// titles, or end), then leaves out the top-level func main blocks.
func extractReadmeExamples(page string, titles []string, end string) ([]readmeExample, error) {
	lines := strings.Split(page, "\n")
	heading := map[string]bool{end: true}
	for _, title := range titles {
		heading[title] = true
	}
	section := -1
	for i, line := range lines {
		if strings.TrimSpace(line) == "Examples" {
			section = i
			break
		}
	}
	if section < 0 {
		return nil, fmt.Errorf(`no "Examples" heading`)
	}
	var examples []readmeExample
	for _, title := range titles {
		at := -1
		for i := section + 1; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == title {
				at = i
				break
			}
		}
		if at < 0 {
			return nil, fmt.Errorf("no example titled %q after the Examples heading", title)
		}
		first, next := -1, len(lines)
		for i := at + 1; i < len(lines); i++ {
			if heading[strings.TrimSpace(lines[i])] {
				next = i
				break
			}
			if first < 0 && (strings.HasPrefix(lines[i], "type ") || strings.HasPrefix(lines[i], "func ")) {
				first = i
			}
		}
		if first < 0 {
			return nil, fmt.Errorf("example %q: no line starting with type or func before the next heading", title)
		}
		code := strings.TrimRight(strings.Join(lines[first:next], "\n"), "\n")
		pieces, mains, err := dropMains(code)
		if err != nil {
			return nil, fmt.Errorf("example %q: %v", title, err)
		}
		examples = append(examples, readmeExample{title, strings.TrimRight(strings.Join(pieces, ""), "\n"), pieces, mains})
	}
	return examples, nil
}

// dropMains removes each top-level `func main() { ... }` (its braces matched by Go's scanner,
// so braces in strings and comments do not count), from the start of its line through the end
// of the line that closes it, and returns the pieces of code left, byte for byte.
func dropMains(code string) ([]string, int, error) {
	src := []byte(code)
	fset := token.NewFileSet()
	file := fset.AddFile("example", fset.Base(), len(src))
	var errs scanner.ErrorList
	var s scanner.Scanner
	s.Init(file, src, func(pos token.Position, msg string) { errs.Add(pos, msg) }, 0)
	type tok struct {
		offset int
		tok    token.Token
		lit    string
	}
	var toks []tok
	for {
		pos, t, lit := s.Scan()
		if t == token.EOF {
			break
		}
		toks = append(toks, tok{file.Offset(pos), t, lit})
	}
	if errs.Len() > 0 {
		return nil, 0, errs.Err()
	}
	var pieces []string
	kept, mains, depth := 0, 0, 0
	for i := 0; i < len(toks); i++ {
		switch toks[i].tok {
		case token.LBRACE:
			depth++
		case token.RBRACE:
			depth--
		case token.FUNC:
			if depth != 0 || i+4 >= len(toks) || toks[i+1].tok != token.IDENT || toks[i+1].lit != "main" ||
				toks[i+2].tok != token.LPAREN || toks[i+3].tok != token.RPAREN || toks[i+4].tok != token.LBRACE {
				continue
			}
			open := 0
			j := i + 4
			for ; j < len(toks); j++ {
				if toks[j].tok == token.LBRACE {
					open++
				} else if toks[j].tok == token.RBRACE {
					if open--; open == 0 {
						break
					}
				}
			}
			if j == len(toks) {
				return nil, 0, fmt.Errorf("func main is not closed")
			}
			start := strings.LastIndex(code[:toks[i].offset], "\n") + 1
			stop := len(code)
			if nl := strings.Index(code[toks[j].offset:], "\n"); nl >= 0 {
				stop = toks[j].offset + nl + 1
			}
			pieces = append(pieces, code[kept:start])
			kept, mains, i = stop, mains+1, j
		}
	}
	return append(pieces, code[kept:]), mains, nil
}

// readmePackage is the generated file: package readme, the standard packages the examples may
// use (each used once below, as not every example uses every one), this client under
// go-pglock's package name in place of go-pglock's import, and the examples as they are.
func readmePackage(examples []readmeExample, source string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `// Code generated by clients/go/readme_test.go from %s. DO NOT EDIT.

// go-pglock's README examples as its page prints them, except for their func main blocks, which
// are left out: they open the placeholder DSN postgres://user:pass@localhost/mydb, and the
// scheduled job's never returns (it loops forever), so they cannot run here; the driver
// (examples_test.go) calls the examples' types instead.
package readme

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"sync"
	"time"

	// The one change: %s (package pglock) is this client.
	%s
)

var (
	_ = context.Background
	_ = sql.Open
	_ = errors.Is
	_ = fmt.Println
	_ = fnv.New64a
	_ = log.Printf
	_ = sync.NewCond
	_ = time.Now
	_ = pglock.NewLock
)
`, source, goPglockImport, clientImport)
	for _, example := range examples {
		dropped := ""
		if example.mains > 0 {
			dropped = " (func main left out)"
		}
		fmt.Fprintf(&b, "\n// go-pglock README, %q%s:\n\n%s\n", example.title, dropped, example.code)
	}
	return b.Bytes()
}

// readmePage reads go-pglock's page from the first place that has it.
func readmePage(t *testing.T) (string, string) {
	t.Helper()
	paths := readmePagePaths
	if env := os.Getenv(readmePageEnv); env != "" {
		paths = []string{env}
	}
	for _, path := range paths {
		text, err := os.ReadFile(path)
		if err == nil {
			abs, _ := filepath.Abs(path)
			return abs, string(text)
		}
		if !os.IsNotExist(err) {
			t.Fatalf("go-pglock's documentation page: %v", err)
		}
	}
	t.Fatalf("go-pglock's documentation page (pkg.go.dev's page for github.com/allisson/go-pglock/v3 "+
		"as text) is not at %s; set %s to its path", strings.Join(paths, " nor at "), readmePageEnv)
	return "", ""
}

// goModule is what `go mod edit -json` says of clients/go/go.mod.
type goModule struct {
	Module  struct{ Path string }
	Go      string
	Require []struct{ Path, Version string }
	Replace []struct {
		Old, New struct{ Path, Version string }
	}
}

// goCommand is the go command of the toolchain running this test (else the one on PATH).
func goCommand() string {
	if root := runtime.GOROOT(); root != "" {
		if path := filepath.Join(root, "bin", "go"); fileExists(path) {
			return path
		}
	}
	return "go"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readmeModule is the go.mod of the examples' module: this client and its requirements, with
// this client replaced by this directory and its own local replacements (lib/pq's) kept.
func readmeModule(t *testing.T, goBin string) []byte {
	t.Helper()
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := exec.Command(goBin, "mod", "edit", "-json").Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var mod goModule
	if err := json.Unmarshal(raw, &mod); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "module readme\n\ngo %s\n\nrequire %s v0.0.0\n", mod.Go, mod.Module.Path)
	for _, req := range mod.Require {
		fmt.Fprintf(&b, "require %s %s\n", req.Path, req.Version)
	}
	fmt.Fprintf(&b, "\nreplace %s => %s\n", mod.Module.Path, here)
	for _, rep := range mod.Replace {
		old := strings.TrimSpace(rep.Old.Path + " " + rep.Old.Version)
		if rep.New.Version != "" {
			fmt.Fprintf(&b, "replace %s => %s %s\n", old, rep.New.Path, rep.New.Version)
			continue
		}
		path := rep.New.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(here, path)
		}
		fmt.Fprintf(&b, "replace %s => %s\n", old, path)
	}
	return b.Bytes()
}

func TestGoPglockReadmeExamplesRunThroughThisClient(t *testing.T) {
	if os.Getenv("PGLOCK_TEST_DSN") == "" {
		t.Fatal("PGLOCK_TEST_DSN is not set: this test needs a server with pglock")
	}
	source, page := readmePage(t)
	if !strings.Contains(page, goPglockImport) {
		t.Fatalf("%s does not import go-pglock as %s: not the page this test knows", source, goPglockImport)
	}
	var titles []string
	for _, example := range readmeExamples {
		titles = append(titles, example.title)
	}
	examples, err := extractReadmeExamples(page, titles, readmeExamplesEnd)
	if err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	for _, example := range examples {
		// What is kept of an example is the page's text.
		for _, piece := range example.pieces {
			if !strings.Contains(page, piece) {
				t.Fatalf("example %q: the extracted code is not the page's text:\n%s", example.title, piece)
			}
		}
		t.Logf("%q: %d lines, %d func main left out", example.title, strings.Count(example.code, "\n")+1, example.mains)
	}

	goBin := goCommand()
	dir := t.TempDir()
	driver, err := os.ReadFile(filepath.Join("testdata", "readme", "examples_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"go.mod":           readmeModule(t, goBin),
		"readme.go":        readmePackage(examples, source),
		"examples_test.go": driver,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// -parallel: the five examples run at once, whatever the number of cores.
	cmd := exec.CommandContext(ctx, goBin, "test", "-count=1", "-v", "-parallel=8", "-timeout=120s", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test of go-pglock's README examples: %v\n%s", err, out)
	}
	t.Logf("go test of go-pglock's README examples:\n%s", out)
	if bytes.Contains(out, []byte("--- SKIP")) {
		t.Fatal("an example's test was skipped")
	}
	for _, example := range readmeExamples {
		if !bytes.Contains(out, []byte("--- PASS: TestReadmeExamples/examples/"+example.subtest+" ")) {
			t.Fatalf("the %q example (subtest %s) did not pass", example.title, example.subtest)
		}
	}
}

// The extraction on a page of our own: only top-level mains go, whatever braces the strings and
// comments hold; each example stops at the next heading.
func TestReadmeExtractionLeavesOutOnlyTopLevelMains(t *testing.T) {
	page := strings.Join([]string{
		"Examples",
		"First",
		"Some prose.",
		"",
		"type T struct{}",
		"",
		"func (T) main() { _ = \"}\" }",
		"",
		"func main() {",
		"    s := \"{ not a brace\" // }",
		"    for { if s != \"\" { break } }",
		"}",
		"",
		"func after() {}",
		"Second",
		"func g() {",
		"    main := func() {}",
		"    main()",
		"}",
		"End",
		"func h() {}",
	}, "\n")
	examples, err := extractReadmeExamples(page, []string{"First", "Second"}, "End")
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeExample{
		{"First", "type T struct{}\n\nfunc (T) main() { _ = \"}\" }\n\n\nfunc after() {}",
			[]string{"type T struct{}\n\nfunc (T) main() { _ = \"}\" }\n\n", "\nfunc after() {}"}, 1},
		{"Second", "func g() {\n    main := func() {}\n    main()\n}",
			[]string{"func g() {\n    main := func() {}\n    main()\n}"}, 0},
	}
	if fmt.Sprint(examples) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", examples, want)
	}
}
