// Real errors of the Go standard library and lib/pq, in the wire shape a Go worker sends
// (docs/workers.md, "Go"). Prints one JSON row a line: {"case", "expected", "acceptable"?,
// "exception"}. Run through scripts/capture/capture-other.py, which builds it against
// Debian's packaged lib/pq (GOPATH=/usr/share/gocode, no module downloads) and writes
// tests/data/exceptions-other.jsonl.
//
// Provoked for real: throw-away TCP/HTTP/TLS servers on 127.0.0.1, a closed port,
// /dev/full, a child process under `ulimit -v` for heap exhaustion, and a scratch
// database on the PostgreSQL at $CAPTURE_PG_URL (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable; dropped at the end).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

var cases = map[string]bool{}

// typeName is the package path and name of an error's type: "net.OpError",
// "io/fs.PathError", "github.com/lib/pq.Error".
func typeName(err error) (string, string) {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	if t.PkgPath() == "" {
		return "", t.String()
	}
	return t.PkgPath(), t.Name()
}

// wire is the `exception` object: the outer error's type, the types of the errors it
// wraps (errors.Unwrap, the chain errors.As walks) as `mro`, the first syscall.Errno as
// `errno`, a *pq.Error's SQLSTATE as `code`.
func wire(err error) map[string]any {
	module, name := typeName(err)
	var mro []string
	var errno any
	var code any
	for e := err; e != nil; e = errors.Unwrap(e) {
		pkg, n := typeName(e)
		if pkg != "" {
			n = pkg + "." + n
		}
		mro = append(mro, n)
		var number syscall.Errno
		if errno == nil && errors.As(e, &number) {
			errno = int(number)
		}
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		code = string(pqErr.Code)
	}
	message := err.Error()
	if len(message) > 500 {
		message = message[:500]
	}
	var mod any
	if module != "" {
		mod = module
	}
	return map[string]any{
		"type": name, "module": mod, "mro": mro, "message": message,
		"errno": errno, "http_status": nil, "code": code, "language": "go",
	}
}

func record(name, expected string, err error, acceptable ...string) {
	if cases[name] {
		panic("duplicate case " + name)
	}
	if err == nil {
		panic(name + ": no error")
	}
	cases[name] = true
	row := map[string]any{"case": name, "expected": expected, "exception": wire(err)}
	if len(acceptable) > 0 {
		row["acceptable"] = acceptable
	}
	line, _ := json.Marshal(row)
	fmt.Println(string(line))
}

// recovered runs f and returns the runtime error it panicked with.
func recovered(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = r.(error)
		}
	}()
	f()
	return nil
}

func closedPort() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	return addr
}

func listener(behaviour string) string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	var kept []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			switch behaviour {
			case "reset":
				c.(*net.TCPConn).SetLinger(0)
				time.Sleep(50 * time.Millisecond)
				c.Close()
			case "close":
				c.Close()
			default:
				kept = append(kept, c)
			}
		}
	}()
	return l.Addr().String()
}

func netFamily(closed string) {
	_, err := net.Dial("tcp", closed)
	record("net.Dial closed port (connection refused)", "EXTERNAL_API_DOWN", err)

	conn, _ := net.Dial("tcp", listener("silent"))
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	record("conn.Read past its deadline (i/o timeout)", "EXTERNAL_TIMEOUT", err, "TRANSIENT_NETWORK")
	conn.Close()

	conn, _ = net.Dial("tcp", listener("reset"))
	conn.Write([]byte("x"))
	_, err = conn.Read(make([]byte, 1))
	record("conn.Read after a reset (connection reset by peer)", "TRANSIENT_NETWORK", err)

	conn, _ = net.Dial("tcp", listener("close"))
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 1000 && err == nil || i == 0; i++ {
		_, err = conn.Write(make([]byte, 65536))
		time.Sleep(5 * time.Millisecond)
	}
	record("conn.Write after the peer closed (broken pipe)", "TRANSIENT_NETWORK", err)

	_, err = net.LookupHost("sidecar-capture.invalid")
	record("net.LookupHost unknown host (DNSError)", "TRANSIENT_NETWORK", err)
	_, err = net.DialTimeout("tcp", "sidecar-capture.invalid:80", time.Second)
	record("net.Dial unknown host (dial tcp: lookup)", "TRANSIENT_NETWORK", err)
}

func httpFamily(closed string) {
	_, err := http.Get("http://" + closed + "/")
	record("http.Get closed port (url.Error, connection refused)", "EXTERNAL_API_DOWN", err)

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	client := &http.Client{Timeout: 200 * time.Millisecond}
	_, err = client.Get(slow.URL)
	record("http.Client.Timeout awaiting headers", "EXTERNAL_TIMEOUT", err)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	request, _ := http.NewRequestWithContext(ctx, "GET", slow.URL, nil)
	_, err = http.DefaultClient.Do(request)
	cancel()
	record("http request with a context deadline", "EXTERNAL_TIMEOUT", err)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	<-ctx.Done()
	record("ctx.Err() after the deadline (context deadline exceeded)", "EXTERNAL_TIMEOUT",
		ctx.Err(), "TRANSIENT_NETWORK")
	cancel()

	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}))
	defer hangup.Close()
	_, err = http.Get(hangup.URL)
	record("http.Get server hangs up (EOF)", "TRANSIENT_NETWORK", err)

	tlsServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsServer.Close()
	_, err = http.Get(tlsServer.URL)
	record("http.Get self-signed certificate (x509)", "CONFIG_INVALID_SETTING", err)
	_, err = http.Get(strings.Replace(slow.URL, "http://", "https://", 1))
	record("http.Get https to a plain HTTP server", "CONFIG_INVALID_SETTING", err)
	_, err = http.Get("http://sidecar-capture.invalid/")
	record("http.Get unknown host", "TRANSIENT_NETWORK", err)
	_, err = url.Parse("http://example.com/%zz")
	record("url.Parse bad escape (EscapeError)", "PERMANENT_VALIDATION", err, "CONFIG_INVALID_SETTING")
}

func filesFamily(tmp string) {
	_, err := os.Open(filepath.Join(tmp, "missing", "report.csv"))
	record("os.Open missing file (fs.ErrNotExist)", "PERMANENT_NOT_FOUND", err)
	file := filepath.Join(tmp, "a.txt")
	os.WriteFile(file, []byte("x"), 0o600)
	_, err = os.ReadDir(file)
	record("os.ReadDir on a file (not a directory)", "PERMANENT_NOT_FOUND", err)
	err = os.WriteFile("/dev/full", make([]byte, 10000), 0o600)
	record("os.WriteFile to /dev/full (no space left on device)", "SYSTEM_DISK_FULL", err)
	noexec := filepath.Join(tmp, "not-executable.sh")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o600)
	record("exec a non-executable file (permission denied)", "PERMANENT_PERMISSION",
		exec.Command(noexec).Run())
	record("exec a missing program (exec.ErrNotFound)", "CONFIG_MISSING_SERVICE",
		exec.Command("sidecar-capture-no-such-tool").Run(), "PERMANENT_NOT_FOUND")
	_, err = os.ReadFile(tmp)
	record("os.ReadFile on a directory (is a directory)", "PERMANENT_LOGIC", err)
}

func dataFamily() {
	_, err := strconv.Atoi("abc")
	record("strconv.Atoi('abc') (NumError)", "PERMANENT_VALIDATION", err)
	_, err = strconv.ParseInt("99999999999999999999", 10, 64)
	record("strconv.ParseInt out of range (NumError)", "PERMANENT_VALIDATION", err)
	var v map[string]any
	record("json.Unmarshal('{') (SyntaxError)", "PERMANENT_VALIDATION", json.Unmarshal([]byte("{"), &v))
	var n struct{ Amount int }
	record("json.Unmarshal string into int (UnmarshalTypeError)", "PERMANENT_VALIDATION",
		json.Unmarshal([]byte(`{"Amount": "12"}`), &n))
	_, err = time.Parse("2006-01-02", "next tuesday")
	record("time.Parse bad date (ParseError)", "PERMANENT_VALIDATION", err)

	record("index out of range (runtime error)", "PERMANENT_LOGIC", recovered(func() {
		s := []int{1, 2, 3}
		i := 5
		_ = s[i]
	}))
	record("nil pointer dereference (runtime error)", "PERMANENT_LOGIC", recovered(func() {
		var p *struct{ ID int }
		_ = p.ID
	}))
	record("integer divide by zero (runtime error)", "PERMANENT_LOGIC", recovered(func() {
		zero := 0
		_ = 1 / zero
	}))
	record("assignment to entry in nil map (runtime error)", "PERMANENT_LOGIC", recovered(func() {
		var m map[string]int
		m["x"] = 1
	}))
	record("interface conversion (runtime.TypeAssertionError)", "PERMANENT_LOGIC", recovered(func() {
		var x any = "s"
		_ = x.(int)
	}))

	self, _ := os.Executable()
	out, _ := exec.Command("sh", "-c", `ulimit -v 4000000; exec "$0" oom`, self).CombinedOutput()
	var fatal string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "fatal error:") {
			fatal = line
			break
		}
	}
	if fatal == "" {
		panic("no fatal error: " + string(out))
	}
	// What a supervisor of the worker process reports: the child's last words.
	record("heap exhaustion under ulimit -v (fatal error: out of memory)", "SYSTEM_OUT_OF_MEMORY",
		fmt.Errorf("worker process exited: %s", fatal))
}

func postgresFamily(closed string) {
	base := os.Getenv("CAPTURE_PG_URL")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	admin, err := sql.Open("postgres", base)
	must(err)
	defer admin.Close()
	must1(admin.Exec("DROP DATABASE IF EXISTS sidecar_capture_go"))
	must1(admin.Exec("DROP ROLE IF EXISTS sidecar_capture_go_role"))
	must1(admin.Exec("CREATE DATABASE sidecar_capture_go"))
	must1(admin.Exec("CREATE ROLE sidecar_capture_go_role LOGIN CONNECTION LIMIT 1"))
	defer func() {
		admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'sidecar_capture_go'")
		admin.Exec("DROP DATABASE IF EXISTS sidecar_capture_go")
		admin.Exec("DROP ROLE IF EXISTS sidecar_capture_go_role")
	}()
	u, _ := url.Parse(base)
	u.Path = "/sidecar_capture_go"
	dsn := u.String()
	as := func(user, db string) string {
		v := *u
		v.User = url.User(user)
		v.Path = "/" + db
		return v.String()
	}
	db, err := sql.Open("postgres", dsn)
	must(err)
	defer db.Close()
	must1(db.Exec(`CREATE TABLE customer (id int PRIMARY KEY, email text UNIQUE NOT NULL,
		balance int NOT NULL DEFAULT 0)`))
	must1(db.Exec(`INSERT INTO customer VALUES (1, 'a@example.com'), (2, 'b@example.com')`))

	_, err = db.Exec(`INSERT INTO customer VALUES (3, 'a@example.com')`)
	record("pq unique_violation (23505)", "PERMANENT_VALIDATION", err)
	_, err = db.Exec(`SELECT 'abc'::int`)
	record("pq invalid_text_representation (22P02)", "PERMANENT_VALIDATION", err)
	_, err = db.Exec(`SELECT * FROM orders`)
	record("pq undefined_table (42P01)", "PERMANENT_LOGIC", err)
	var email string
	err = db.QueryRow(`SELECT email FROM customer WHERE id = 99`).Scan(&email)
	record("database/sql QueryRow no row (sql.ErrNoRows)", "PERMANENT_NOT_FOUND", err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = db.ExecContext(ctx, `SELECT pg_sleep(3)`)
	cancel()
	record("pq query cancelled by a context deadline (57014)", "TRANSIENT_DATABASE", err,
		"EXTERNAL_TIMEOUT")
	record("pq deadlock_detected (40P01)", "TRANSIENT_DATABASE", deadlock(dsn))

	bad, _ := sql.Open("postgres", as("no_such_role", "sidecar_capture_go"))
	record("pq role does not exist (28000)", "PERMANENT_PERMISSION", bad.Ping())
	bad.Close()
	bad, _ = sql.Open("postgres", as("postgres", "no_such_db"))
	record("pq database does not exist (3D000)", "CONFIG_INVALID_SETTING", bad.Ping())
	bad.Close()
	first, _ := sql.Open("postgres", as("sidecar_capture_go_role", "sidecar_capture_go"))
	must(first.Ping())
	second, _ := sql.Open("postgres", as("sidecar_capture_go_role", "sidecar_capture_go"))
	record("pq too many connections for role (53300)", "TRANSIENT_DATABASE", second.Ping())
	_, err = first.Exec(`SELECT * FROM customer`)
	record("pq insufficient_privilege (42501)", "PERMANENT_PERMISSION", err)
	first.Close()
	second.Close()
	down, _ := sql.Open("postgres", "postgres://x@"+closed+"/x?sslmode=disable")
	record("pq connect to a closed port (connection refused)", "TRANSIENT_DATABASE", down.Ping(),
		"EXTERNAL_API_DOWN")

	victim, _ := sql.Open("postgres", dsn)
	victim.SetMaxOpenConns(1)
	var pid int
	must(victim.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))
	must1(admin.Exec(`SELECT pg_terminate_backend($1)`, pid))
	time.Sleep(200 * time.Millisecond)
	conn, _ := victim.Conn(context.Background())
	_, err = conn.ExecContext(context.Background(), `SELECT 1`)
	record("database/sql on a terminated backend (driver: bad connection)", "TRANSIENT_DATABASE", err)
	_, err = conn.ExecContext(context.Background(), `SELECT 1`)
	record("database/sql after the backend was terminated (connection is already closed)",
		"TRANSIENT_DATABASE", err)
	conn.Close()
	victim.Close()
}

func deadlock(dsn string) error {
	db, _ := sql.Open("postgres", dsn)
	defer db.Close()
	a, _ := db.Begin()
	b, _ := db.Begin()
	defer a.Rollback()
	defer b.Rollback()
	a.Exec(`SET LOCAL deadlock_timeout = '100ms'`)
	b.Exec(`SET LOCAL deadlock_timeout = '100ms'`)
	must1(a.Exec(`UPDATE customer SET balance = balance + 1 WHERE id = 1`))
	must1(b.Exec(`UPDATE customer SET balance = balance + 1 WHERE id = 2`))
	errs := make(chan error, 2)
	go func() { _, err := a.Exec(`UPDATE customer SET balance = 1 WHERE id = 2`); errs <- err }()
	go func() { _, err := b.Exec(`UPDATE customer SET balance = 1 WHERE id = 1`); errs <- err }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func must1(_ any, err error) { must(err) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "oom" {
		var hog [][]byte
		for {
			hog = append(hog, make([]byte, 64<<20))
			hog[len(hog)-1][0] = 1
		}
	}
	tmp, _ := os.MkdirTemp("", "capture-go-")
	defer os.RemoveAll(tmp)
	closed := closedPort()
	netFamily(closed)
	httpFamily(closed)
	filesFamily(tmp)
	dataFamily()
	postgresFamily(closed)
	fmt.Fprintf(os.Stderr, "go %s: %d cases\n", strings.TrimPrefix(runtime.Version(), "go"), len(cases))
}
