// Command testfn is the function the caddy-spawn tests run in containers. Its
// first argument selects a behaviour; each one exercises one path of the
// handler (CGI headers, streaming, exit codes, timeouts, isolation):
//
//	env                  CGI header, then the environment sorted, KEY=VALUE per line
//	cat                  CGI header, then stdin copied to stdout
//	cat-raw              stdin copied to stdout, no header (raw mode)
//	status N             Status: N Custom, an X-Fn header and a short body
//	exit N               "boom on stderr" on stderr, no stdout, exit status N
//	sleep D              sleeps for the Go duration D, then answers "slept"
//	stream N D           N lines "line i", each followed by a sleep of D
//	badheader            a response whose header block is not CGI
//	location URL         a local or client redirect (Location header only)
//	marker               reports whether /marker exists, then creates it
//	spin                 answers "started", then busy-loops forever
//	output-then-exit N   CGI header and "partial", then exit status N
//	stderr-flood         1 MiB on stderr, then CGI header and "ok"
//	alloc N              allocates and touches N MiB, then answers "allocated N MiB"
//	forkbomb             no output; starts a shell fork bomb (busybox sh), then sleeps an hour
//	id                   "uid=U gid=G groups=[...]" of the program
//	security             the Uid, Gid, Groups, Cap*, NoNewPrivs and Seccomp lines of /proc/self/status
//	rlimit               "nofile=SOFT/HARD"
//	write PATH...        writes a small file at each PATH: "PATH: ok" or "PATH: error: ..."
//	connect ADDR         dials TCP ADDR (2s timeout): "connected" or "error: ..."
//	flood N              CGI header, then N bytes of 'x' on stdout
//	wc                   reads stdin to EOF, then answers "N bytes"
//	sha256               reads stdin to EOF, then answers its SHA-256 in hex
//	fail-until N         async: fails (stderr, exit 1) while SPAWN_ATTEMPT < N, then answers "ok at attempt A"
//	job D                async: sleeps D, then answers "job <SPAWN_JOB_ID> attempt <SPAWN_ATTEMPT>"
//
// Unknown modes or bad arguments print a message on stderr and exit 2.
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: testfn MODE [ARGS...]")
	}
	mode, args := os.Args[1], os.Args[2:]
	switch mode {
	case "env":
		header("text/plain")
		env := os.Environ()
		sort.Strings(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
	case "cat":
		header("application/octet-stream")
		copyStdin()
	case "cat-raw":
		copyStdin()
	case "status":
		n := intArg(mode, args)
		fmt.Printf("Status: %d Custom\nContent-Type: text/plain\nX-Fn: yes\n\n", n)
		fmt.Printf("status %d\n", n)
	case "exit":
		n := intArg(mode, args)
		fmt.Fprint(os.Stderr, "boom on stderr\n")
		os.Exit(n)
	case "sleep":
		time.Sleep(durationArg(mode, args, 0))
		header("text/plain")
		fmt.Print("slept\n")
	case "stream":
		n := intArg(mode, args)
		d := durationArg(mode, args, 1)
		header("text/plain")
		for i := 1; i <= n; i++ {
			fmt.Printf("line %d\n", i) // os.Stdout is unbuffered: each line leaves now
			time.Sleep(d)
		}
	case "badheader":
		fmt.Print("this is not a header line\n\nbody")
	case "location":
		fmt.Printf("Location: %s\n\n", stringArg(mode, args, 0))
	case "marker":
		marker()
	case "spin":
		header("text/plain")
		fmt.Print("started\n")
		spin()
	case "output-then-exit":
		n := intArg(mode, args)
		header("text/plain")
		fmt.Print("partial\n")
		os.Exit(n)
	case "stderr-flood":
		line := strings.Repeat("x", 1023) + "\n"
		for range 1024 {
			if _, err := io.WriteString(os.Stderr, line); err != nil {
				fail("writing stderr: " + err.Error())
			}
		}
		header("text/plain")
		fmt.Print("ok\n")
	case "alloc":
		alloc(intArg(mode, args))
	case "burn":
		burn(args)
	case "forkbomb":
		forkbomb()
	case "id":
		header("text/plain")
		groups, _ := os.Getgroups()
		fmt.Printf("uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups)
	case "security":
		security()
	case "userns":
		usernsReport()
	case "rlimit":
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fail("getrlimit: " + err.Error())
		}
		header("text/plain")
		fmt.Printf("nofile=%d/%d\n", lim.Cur, lim.Max)
	case "fill":
		// Write zeros to a file until the filesystem refuses; report how
		// far it got and why it stopped.
		header("text/plain")
		f, err := os.Create(stringArg(mode, args, 0))
		if err != nil {
			fmt.Printf("create: %v\n", err)
			return
		}
		buf := make([]byte, 1<<20)
		var n int64
		for n < 2<<30 {
			w, err := f.Write(buf)
			n += int64(w)
			if err != nil {
				fmt.Printf("wrote %d MiB: %v\n", n>>20, err)
				return
			}
		}
		fmt.Printf("wrote %d MiB: no error\n", n>>20)
	case "forged":
		// Header fields that are the server's, not the program's, then
		// a failure: the real exit code travels in the trailer.
		fmt.Print("Spawn-Exit-Code: 0\nSpawn-Error: none\nAlt-Svc: h3=\":443\"\nContent-Type: text/plain\n\nforged\n")
		os.Exit(3)
	case "oom":
		// How the kernel treats this process: its OOM score adjustment
		// and core dump limit.
		adj, err := os.ReadFile("/proc/self/oom_score_adj")
		if err != nil {
			fail("reading oom_score_adj: " + err.Error())
		}
		var core, fsize syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &core); err != nil {
			fail("getrlimit: " + err.Error())
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &fsize); err != nil {
			fail("getrlimit: " + err.Error())
		}
		header("text/plain")
		fmt.Printf("oom_score_adj=%s core=%d/%d fsize=%d/%d\n", strings.TrimSpace(string(adj)), core.Cur, core.Max, fsize.Cur, fsize.Max)
	case "write":
		header("text/plain")
		for _, path := range args {
			if err := os.WriteFile(path, []byte("written by testfn\n"), 0o644); err != nil {
				fmt.Printf("%s: error: %v\n", path, err)
			} else {
				fmt.Printf("%s: ok\n", path)
			}
		}
	case "connect":
		addr := stringArg(mode, args, 0)
		header("text/plain")
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			fmt.Printf("error: %v\n", err)
			return
		}
		c.Close()
		fmt.Print("connected\n")
	case "flood":
		flood(intArg(mode, args))
	case "wc":
		n, err := io.Copy(io.Discard, os.Stdin)
		if err != nil {
			fail("reading stdin: " + err.Error())
		}
		header("text/plain")
		fmt.Printf("%d bytes\n", n)
	case "sha256":
		h := sha256.New()
		if _, err := io.Copy(h, os.Stdin); err != nil {
			fail("reading stdin: " + err.Error())
		}
		header("text/plain")
		fmt.Printf("%x\n", h.Sum(nil))
	case "fail-until":
		n := intArg(mode, args)
		attempt, err := strconv.Atoi(os.Getenv("SPAWN_ATTEMPT"))
		if err != nil {
			fail("SPAWN_ATTEMPT: " + strconv.Quote(os.Getenv("SPAWN_ATTEMPT")))
		}
		if attempt < n {
			fmt.Fprintf(os.Stderr, "attempt %d of %d: failing on purpose\n", attempt, n)
			os.Exit(1)
		}
		header("text/plain")
		fmt.Printf("ok at attempt %d\n", attempt)
	case "job":
		time.Sleep(durationArg(mode, args, 0))
		header("text/plain")
		fmt.Printf("job %s attempt %s\n", os.Getenv("SPAWN_JOB_ID"), os.Getenv("SPAWN_ATTEMPT"))
	default:
		fail("unknown mode " + strconv.Quote(mode))
	}
}

// header prints a CGI header block with only a Content-Type.
func header(contentType string) {
	fmt.Printf("Content-Type: %s\n\n", contentType)
}

// copyStdin copies stdin to stdout through a 64 KiB buffer.
func copyStdin() {
	buf := make([]byte, 64<<10)
	// The anonymous structs hide ReadFrom/WriteTo, so buf is really used.
	if _, err := io.CopyBuffer(struct{ io.Writer }{os.Stdout}, struct{ io.Reader }{os.Stdin}, buf); err != nil {
		fail("copying stdin to stdout: " + err.Error())
	}
}

// marker reports whether an earlier process of this container's filesystem
// left /marker behind, then leaves one itself. A fresh container per request
// always answers seen-marker=false.
func marker() {
	const path = "/marker"
	_, err := os.Stat(path)
	seen := err == nil
	pid := os.Getpid()
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		fail("writing " + path + ": " + err.Error())
	}
	host, err := os.Hostname()
	if err != nil {
		fail("reading hostname: " + err.Error())
	}
	header("text/plain")
	fmt.Printf("seen-marker=%t\npid=%d\nhostname=%s\n", seen, pid, host)
}

// alloc allocates n MiB and writes to every page of it, so it is really
// resident: past the container's memory limit the OOM killer ends it.
func alloc(n int) {
	var chunks [][]byte
	for range n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		chunks = append(chunks, b)
	}
	header("text/plain")
	fmt.Printf("allocated %d MiB\n", len(chunks))
}

// forkbomb replaces the program with busybox sh, which starts a fork bomb
// in the background and then becomes "sleep 3600": only the pids limit
// holds the bomb, and the program itself needs no fork that could fail
// (a shell exits when it can't fork), so only a kill ends the request.
func forkbomb() {
	const bomb = `b() { b | b & }; b; exec sleep 3600`
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", bomb}, os.Environ())
	fail("exec /bin/sh: " + err.Error())
}

// security prints the lines of /proc/self/status that show the process's
// privileges and confinement.
func security() {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fail("reading /proc/self/status: " + err.Error())
	}
	header("text/plain")
	for _, line := range strings.Split(string(b), "\n") {
		for _, key := range []string{"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"} {
			if strings.HasPrefix(line, key) {
				fmt.Println(strings.Join(strings.Fields(line), " "))
			}
		}
	}
}

// flood writes a CGI header and then n bytes of 'x' to stdout.
func flood(n int) {
	header("application/octet-stream")
	buf := bytes.Repeat([]byte("x"), 64<<10)
	for n > 0 {
		chunk := buf[:min(n, len(buf))]
		if _, err := os.Stdout.Write(chunk); err != nil {
			fail("writing stdout: " + err.Error())
		}
		n -= len(chunk)
	}
}

// spin burns CPU forever, so only a timeout or a kill ends it.
func spin() {
	x := 0
	for {
		x++
	}
}

func stringArg(mode string, args []string, i int) string {
	if len(args) <= i {
		fail(fmt.Sprintf("mode %s: missing argument %d", mode, i+1))
	}
	return args[i]
}

func intArg(mode string, args []string) int {
	s := stringArg(mode, args, 0)
	n, err := strconv.Atoi(s)
	if err != nil {
		fail(fmt.Sprintf("mode %s: bad number %q", mode, s))
	}
	return n
}

func durationArg(mode string, args []string, i int) time.Duration {
	s := stringArg(mode, args, i)
	d, err := time.ParseDuration(s)
	if err != nil {
		fail(fmt.Sprintf("mode %s: bad duration %q", mode, s))
	}
	return d
}

// fail reports msg on stderr and exits 2.
func fail(msg string) {
	fmt.Fprintln(os.Stderr, "testfn: "+msg)
	os.Exit(2)
}

// usernsReport says which user namespace the process is in, as its
// /proc/self/uid_map and gid_map (fields joined by single spaces) and its
// uid, who owns the image's files it sees (its own binary), and who owns a
// file it writes into its root (the writable layer).
func usernsReport() {
	uidMap, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		fail("reading uid_map: " + err.Error())
	}
	gidMap, err := os.ReadFile("/proc/self/gid_map")
	if err != nil {
		fail("reading gid_map: " + err.Error())
	}
	owner := func(path string) string {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	exe, err := os.Executable()
	if err != nil {
		fail("finding the executable: " + err.Error())
	}
	written := "ok"
	if err := os.WriteFile("/userns-written", []byte("x"), 0o644); err != nil {
		written = "error: " + err.Error()
	}
	header("text/plain")
	fmt.Printf("uid_map=%s\ngid_map=%s\nuid=%d gid=%d\nimage_file=%s\nwrite=%s written_file=%s\n",
		strings.Join(strings.Fields(string(uidMap)), " "), strings.Join(strings.Fields(string(gidMap)), " "),
		os.Getuid(), os.Getgid(), owner(exe), written, owner("/userns-written"))
}

// burn allocates (and touches) args[1] MiB, then spins until the process
// has used args[0] ms of CPU time (user and system), and says how much.
func burn(args []string) {
	if len(args) != 2 {
		fail("burn: want <cpu-ms> <MiB>")
	}
	ms, err1 := strconv.Atoi(args[0])
	mib, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil {
		fail("burn: want <cpu-ms> <MiB>")
	}
	mem := make([][]byte, mib)
	for i := range mem {
		mem[i] = make([]byte, 1<<20)
		for j := 0; j < len(mem[i]); j += 4096 {
			mem[i][j] = 1
		}
	}
	used := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for used() < time.Duration(ms)*time.Millisecond {
		for range 100000 {
			mem[0][1]++
		}
	}
	header("text/plain")
	fmt.Printf("burned %d ms with %d MiB\n", used().Milliseconds(), len(mem))
}
