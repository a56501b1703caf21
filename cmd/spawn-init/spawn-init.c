/*
 * spawn-init is the first process of every caddy-spawn container,
 * bind-mounted read-only at /.spawn/init:
 *
 *	/.spawn/init <prog> [args...]
 *
 * It blocks reading one request frame (see internal/initframe) from stdin,
 * merges the environment it carries over its own (the image and route
 * environment from the OCI spec; the frame wins on duplicate keys), resolves
 * <prog> like execvp and execs it. It reads exactly the frame's bytes from
 * fd 0, so the request body that follows is left for the program.
 *
 * Exit codes, as in a shell: 125 for a usage or frame error, 126 when the
 * program exists but cannot be executed, 127 when it is not found. The
 * message goes to stderr, prefixed "spawn-init: ".
 *
 * Supervisor mode: when the frame carries SPAWN_EXIT_TOKEN=<hex>, the init
 * removes it from the environment and, instead of exec'ing, starts the
 * program as its child and stays PID 1: it closes its own stdin and stdout
 * (so the program alone holds them and EOF means the program is done),
 * forwards signals, reaps orphans, and when the program exits writes one
 * record to stderr,
 *
 *	"\0SPAWN-EXIT " <token> " " <exit code> "\n"
 *
 * in a single write, then exits with the same code (128+n for signal n).
 * The host reads the exit status from that record instead of waiting for
 * containerd's exit event. The token is random per request and the init
 * makes itself non-dumpable, so the program can't read it from /proc/1/mem
 * and forge a record.
 *
 * Before reading, it writes the record "\0SPAWN-READY\n" to stderr: the
 * host freezes pooled containers only after it, and strips it. From then on
 * it takes the signals it forwards in supervisor mode; one of them before
 * the program is started (SIGWINCH aside) ends it with 128+n, except in
 * supervisor mode once the frame is read: that one goes to the program as
 * soon as it runs.
 *
 * It is paused in every pooled container and runs once per request, so it
 * is C without a C library: a static binary of a few KiB that makes only
 * the system calls it needs, and no runtime threads to thaw. Signals are
 * blocked and read from a signalfd, so there are no handlers at all; the
 * program gets the signal mask the init was started with.
 *
 * spawner/initbin/gen.go builds it, reproducibly, for every architecture
 * (`go generate ./spawner/initbin`), and initbin embeds the result.
 */

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned long uint64;
typedef unsigned int uint32;

#if defined(__x86_64__)
enum {
	SYS_read = 0, SYS_write = 1, SYS_close = 3, SYS_rt_sigprocmask = 14,
	SYS_pipe2 = 293, SYS_clone = 56, SYS_execve = 59, SYS_exit_group = 231,
	SYS_wait4 = 61, SYS_kill = 62, SYS_prctl = 157, SYS_signalfd4 = 289,
	SYS_ppoll = 271, SYS_fcntl = 72,
};
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call start\n"
	"	hlt\n");
#elif defined(__aarch64__)
enum {
	SYS_read = 63, SYS_write = 64, SYS_close = 57, SYS_rt_sigprocmask = 135,
	SYS_pipe2 = 59, SYS_clone = 220, SYS_execve = 221, SYS_exit_group = 94,
	SYS_wait4 = 260, SYS_kill = 129, SYS_prctl = 167, SYS_signalfd4 = 74,
	SYS_ppoll = 73, SYS_fcntl = 25,
};
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	and sp, x0, #-16\n"
	"	bl start\n"
	"	brk #0\n");
#else
#error "spawn-init: unsupported architecture"
#endif

#define sys1(n, a) sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

enum {
	EXIT_FRAME = 125, EXIT_NOEXEC = 126, EXIT_NOTFOUND = 127,

	EINTR = 4, EAGAIN = 11, ENOENT = 2, ENOTDIR = 20, ESTALE = 116, ECHILD = 10,
	ENODEV = 19, ETIMEDOUT = 110, ELOOP = 40, ENAMETOOLONG = 36, EACCES = 13,

	SIG_BLOCK = 0, SIG_SETMASK = 2,
	SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGUSR1 = 10, SIGUSR2 = 12,
	SIGTERM = 15, SIGCHLD = 17, SIGWINCH = 28,
	SFD_CLOEXEC = 02000000, O_CLOEXEC = 02000000,
	POLLIN = 1, WNOHANG = 1, PR_SET_DUMPABLE = 4, F_DUPFD_CLOEXEC = 1030,

	/* internal/initframe */
	HEADER_LEN = 9, VERSION = 1, MAX_PAYLOAD = 1 << 20,
	TOKEN_MIN = 16, TOKEN_MAX = 64,
};

static const char ready_record[] = "\0SPAWN-READY\n";
static const char exit_record[] = "\0SPAWN-EXIT "; /* + token, ' ', code, '\n' */
static const char token_key[] = "SPAWN_EXIT_TOKEN";
/* The PATH containerd gives Linux images that set none. */
static const char default_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/* gcc may emit calls to these for plain loops and struct copies. */
void *memcpy(void *d, const void *s, size_t n)
{
	char *dp = d;
	const char *sp = s;
	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memset(void *d, int c, size_t n)
{
	char *dp = d;
	while (n--)
		*dp++ = (char)c;
	return d;
}

static size_t slen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

/* A message under construction: it is written with one write(2). One that
 * would not fit is cut short, and still ends in a newline (end_msg). */
static char msg[8192];
static size_t msglen;
static int msgcut;

static void put(const char *s, size_t n)
{
	while (n--) {
		if (msglen >= sizeof msg - 1) {
			msgcut = 1;
			return;
		}
		msg[msglen++] = *s++;
	}
}

static void end_msg(void)
{
	if (msgcut && msglen > 0 && msg[msglen - 1] != '\n')
		msg[msglen++] = '\n';
}

static void puts_(const char *s) { put(s, slen(s)); }

static void putu(unsigned long v)
{
	char b[24];
	int i = sizeof b;
	do
		b[--i] = (char)('0' + v % 10);
	while (v /= 10);
	put(b + i, sizeof b - i);
}

static void putc_(char c) { put(&c, 1); }

/* putquoted writes s as Go's strconv.Quote would for ASCII; other bytes
 * become \x escapes. */
static void putquoted(const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	putc_('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		switch (c) {
		case '\a': puts_("\\a"); continue;
		case '\b': puts_("\\b"); continue;
		case '\f': puts_("\\f"); continue;
		case '\n': puts_("\\n"); continue;
		case '\r': puts_("\\r"); continue;
		case '\t': puts_("\\t"); continue;
		case '\v': puts_("\\v"); continue;
		case '"': puts_("\\\""); continue;
		case '\\': puts_("\\\\"); continue;
		}
		if (c >= 0x20 && c < 0x7f) {
			putc_((char)c);
		} else {
			puts_("\\x");
			putc_(hex[c >> 4]);
			putc_(hex[c & 15]);
		}
	}
	putc_('"');
}

/* errstr is Go's text for the errors the init can meet. */
static const char *errstr(long e)
{
	switch (e) {
	case 1: return "operation not permitted";
	case 6: return "no such device or address";
	case EAGAIN: return "resource temporarily unavailable";
	case 32: return "broken pipe";
	case 38: return "function not implemented";
	case ENOENT: return "no such file or directory";
	case 5: return "input/output error";
	case 7: return "argument list too long";
	case 8: return "exec format error";
	case 9: return "bad file descriptor";
	case 12: return "cannot allocate memory";
	case EACCES: return "permission denied";
	case 14: return "bad address";
	case ENODEV: return "no such device";
	case ENOTDIR: return "not a directory";
	case 21: return "is a directory";
	case 22: return "invalid argument";
	case 23: return "too many open files in system";
	case 24: return "too many open files";
	case 26: return "text file busy";
	case ENAMETOOLONG: return "file name too long";
	case ELOOP: return "too many levels of symbolic links";
	case 80: return "accessing a corrupted shared library";
	case ETIMEDOUT: return "connection timed out";
	case ESTALE: return "stale NFS file handle";
	}
	return 0;
}

static void puterr(long e)
{
	const char *s = errstr(e);
	if (s) {
		puts_(s);
	} else {
		puts_("errno ");
		putu((unsigned long)e);
	}
}

static void flush_exit(int code) __attribute__((noreturn));
static void flush_exit(int code)
{
	end_msg();
	sys3(SYS_write, 2, msg, msglen);
	for (;;)
		sys1(SYS_exit_group, code);
}

/* fail starts a "spawn-init: " message; end it with flush_exit. */
static void fail(void)
{
	msglen = 0;
	msgcut = 0;
	puts_("spawn-init: ");
}

/* The signals forwarded to the program, plus SIGCHLD: blocked from the
 * start and read from sigfd. */
static uint64 sigmask;
static uint64 oldmask;
static int sigfd;

static uint64 bit(int sig) { return 1UL << (sig - 1); }

struct signalfd_siginfo {
	uint32 ssi_signo;
	char rest[124];
};

struct pollfd {
	int fd;
	short events, revents;
};

/* take_signal reads one signal from sigfd; 0 if none was pending. */
static int take_signal(void)
{
	struct signalfd_siginfo si;
	long n = sys3(SYS_read, sigfd, &si, sizeof si);
	return n == sizeof si ? (int)si.ssi_signo : 0;
}

struct timespec {
	long tv_sec, tv_nsec;
};

/* end_on_signal reads the pending signals and ends the init with 128+n at
 * the first that is neither SIGWINCH (ignored by default, so by us too)
 * nor SIGCHLD: as PID 1 the init can't re-raise it at itself. */
static void end_on_signal(void)
{
	for (;;) {
		struct pollfd fd = {sigfd, POLLIN, 0};
		struct timespec zero = {0, 0};
		if (sys4(SYS_ppoll, &fd, 1, &zero, 0) <= 0)
			return;
		int sig = take_signal();
		if (!sig)
			return;
		if (sig != SIGWINCH && sig != SIGCHLD)
			for (;;)
				sys1(SYS_exit_group, 128 + sig);
	}
}

/* read_frame_bytes reads exactly n bytes of the frame from fd 0, waiting
 * with ppoll so that a signal ends the wait. It returns 0, or the errno, or
 * -1 for EOF before n bytes. */
static long read_frame_bytes(char *p, size_t n)
{
	while (n > 0) {
		struct pollfd fds[2] = {{0, POLLIN, 0}, {sigfd, POLLIN, 0}};
		long r = sys4(SYS_ppoll, fds, 2, 0, 0);
		if (r == -EINTR)
			continue;
		if (r < 0)
			return -r;
		if (fds[1].revents)
			end_on_signal();
		if (!fds[0].revents)
			continue;
		r = sys3(SYS_read, 0, p, n);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r < 0)
			return -r;
		if (r == 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* frame_fail starts the message for a bad frame, frame_exit ends it and
 * exits with EXIT_FRAME. */
static void frame_fail(void)
{
	fail();
	puts_("reading request frame: initframe: ");
}

static void frame_exit(void) __attribute__((noreturn));
static void frame_exit(void)
{
	putc_('\n');
	flush_exit(EXIT_FRAME);
}

static void read_error(const char *prefix, long e) __attribute__((noreturn));
static void read_error(const char *prefix, long e)
{
	frame_fail();
	puts_(prefix);
	if (e == -1)
		puts_("unexpected EOF");
	else
		puterr(e);
	frame_exit();
}

/* The frame's payload, and the environment built from it: static, so the
 * init allocates nothing (untouched pages cost nothing). */
static char payload[MAX_PAYLOAD + 1];
/* A payload entry takes at least 3 bytes ("K=" and its NUL); 4096 for the
 * init's own environment. */
#define MAX_ENV (MAX_PAYLOAD / 3 + 4096)
static char *envbuf[MAX_ENV + 1];
static size_t nenv;

/* A hash index over envbuf by key, for merge: its first nslots (a power
 * of two, at least twice the entries) are used, so a usual environment
 * touches one page of it. */
static uint32 slots[1 << 20]; /* >= 2 * MAX_ENV; index+1 into envbuf, 0 = empty */
/* Set in a slot once the init's own environment had a KEY= for its key. */
#define OWN_KEY 0x80000000u
static uint32 nslots;

static size_t keylen(const char *e)
{
	size_t n = 0;
	while (e[n] && e[n] != '=')
		n++;
	return n;
}

static int samekey(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return b[n] == '=' || b[n] == 0;
}

/* merge puts e into envbuf: it replaces the entry with the same key in
 * place, or is appended (initframe.Merge). With own set, e is from the
 * init's own environment, read as Go's syscall.Environ did for the Go
 * init: an empty entry is dropped, and a repeated KEY= keeps its first
 * value. */
static void merge(char *e, int own)
{
	if (own && !*e)
		return;
	size_t n = keylen(e);
	uint32 h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)e[i]) * 16777619u;
	for (uint32 s = h & (nslots - 1);; s = (s + 1) & (nslots - 1)) {
		if (!slots[s]) {
			envbuf[nenv++] = e;
			slots[s] = (uint32)nenv | (own && e[n] == '=' ? OWN_KEY : 0);
			return;
		}
		uint32 j = (slots[s] & ~OWN_KEY) - 1;
		char *old = envbuf[j];
		if (keylen(old) == n && samekey(e, old, n)) {
			if (own && e[n] == '=') {
				if (slots[s] & OWN_KEY)
					return; /* a later KEY= of our own: dropped */
				slots[s] |= OWN_KEY;
			}
			envbuf[j] = e;
			return;
		}
	}
}

/* read_frame reads the frame and merges its entries over envp. */
static void read_frame(char **envp)
{
	unsigned char h[HEADER_LEN];
	long e = read_frame_bytes((char *)h, sizeof h);
	if (e)
		read_error("reading header: ", e);
	if (h[0] != 'S' || h[1] != 'P' || h[2] != 'W' || h[3] != 'N') {
		frame_fail();
		puts_("bad magic: got ");
		putquoted(h, 4);
		frame_exit();
	}
	if (h[4] != VERSION) {
		frame_fail();
		puts_("unsupported version: got ");
		putu(h[4]);
		puts_(", want 1");
		frame_exit();
	}
	uint32 n = (uint32)h[5] << 24 | (uint32)h[6] << 16 | (uint32)h[7] << 8 | h[8];
	if (n > MAX_PAYLOAD) {
		frame_fail();
		puts_("payload too large: ");
		putu(n);
		puts_(" bytes, max 1048576");
		frame_exit();
	}
	if (n > 0) {
		e = read_frame_bytes(payload, n);
		if (e)
			read_error("reading payload: ", e);
	}
	if (n > 0 && payload[n - 1] != 0) {
		frame_fail();
		puts_("malformed payload: last entry is not NUL-terminated");
		frame_exit();
	}
	/* Validate every entry before using any, as Decode does. */
	unsigned long i = 0, total = 0;
	for (char *p = payload; p < payload + n; p += slen(p) + 1, i++) {
		size_t k = keylen(p);
		if (p[k] != '=' || k == 0) {
			frame_fail();
			puts_("malformed payload: entry ");
			putu(i);
			puts_(p[k] != '=' ? ": missing '='" : ": empty key");
			frame_exit();
		}
	}
	for (char **p = envp; *p; p++)
		total++;
	if (total > MAX_ENV - i) {
		fail();
		puts_("too many environment entries\n");
		flush_exit(EXIT_FRAME);
	}
	total += i;
	for (nslots = 64; nslots < 2 * total; nslots *= 2)
		;
	for (char **p = envp; *p; p++)
		merge(*p, 1);
	for (char *p = payload; p < payload + n; p += slen(p) + 1)
		merge(p, 0);
}

/* env_index returns the index in envbuf of the entry KEY=..., or -1. Once
 * merged, a key has one entry at most. */
static long env_index(const char *key)
{
	size_t n = slen(key);
	for (size_t i = 0; i < nenv; i++)
		if (keylen(envbuf[i]) == n && envbuf[i][n] == '=' && samekey(key, envbuf[i], n))
			return (long)i;
	return -1;
}

static const char *getenv_(const char *key)
{
	long i = env_index(key);
	return i < 0 ? 0 : envbuf[i] + slen(key) + 1;
}

/* take_token removes the SPAWN_EXIT_TOKEN entry and returns its value if it
 * is 16 to 64 lowercase hex digits; otherwise it leaves the environment as
 * it was and returns 0. */
static const char *take_token(void)
{
	long at = env_index(token_key);
	if (at < 0)
		return 0;
	const char *token = envbuf[at] + slen(token_key) + 1; /* past "KEY=" */
	size_t tl = slen(token);
	if (tl < TOKEN_MIN || tl > TOKEN_MAX)
		return 0;
	for (size_t i = 0; i < tl; i++)
		if (!((token[i] >= '0' && token[i] <= '9') || (token[i] >= 'a' && token[i] <= 'f')))
			return 0;
	for (size_t i = (size_t)at; i + 1 < nenv; i++)
		envbuf[i] = envbuf[i + 1];
	envbuf[--nenv] = 0;
	return token;
}

/* runvp resolves prog like execvp(3) (a prog with '/' as is, else each PATH
 * entry in turn, skipping candidates that are missing or not executable)
 * and execve's it. It returns only on failure, with the exit code, and the
 * message in msg. */
static int runvp(const char *prog, char **argv)
{
	int slash = 0;
	for (const char *p = prog; *p; p++)
		if (*p == '/')
			slash = 1;
	if (slash) {
		long e = -sys3(SYS_execve, prog, argv, envbuf);
		fail();
		puts_(prog);
		puts_(": ");
		puterr(e);
		putc_('\n');
		return e == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC;
	}
	const char *path = getenv_("PATH");
	if (!path)
		path = default_path;
	size_t plen = slen(prog);
	int denied = 0;
	static char file[4096 + 256];
	for (const char *p = path;;) {
		const char *end = p;
		while (*end && *end != ':')
			end++;
		size_t dlen = (size_t)(end - p);
		if ((dlen ? dlen : 1) + 1 + plen + 1 <= sizeof file) {
			size_t f = 0;
			if (dlen == 0) {
				file[f++] = '.'; /* an empty element is the working directory */
			} else {
				memcpy(file, p, dlen);
				f = dlen;
			}
			file[f++] = '/';
			memcpy(file + f, prog, plen + 1);
			long e = -sys3(SYS_execve, file, argv, envbuf);
			switch (e) {
			case EACCES:
				denied = 1;
				break;
			case ENOENT: case ENOTDIR: case ESTALE: case ENODEV:
			case ETIMEDOUT: case ELOOP: case ENAMETOOLONG:
				break;
			default:
				fail();
				puts_(file);
				puts_(": ");
				puterr(e);
				putc_('\n');
				return EXIT_NOEXEC;
			}
		}
		if (!*end)
			break;
		p = end + 1;
	}
	fail();
	puts_(prog);
	puts_(denied ? ": permission denied\n" : ": not found in PATH\n");
	return denied ? EXIT_NOEXEC : EXIT_NOTFOUND;
}

/* report writes the exit record and exits with code. */
static void report(const char *token, int code) __attribute__((noreturn));
static void report(const char *token, int code)
{
	msglen = 0;
	msgcut = 0;
	put(exit_record, sizeof exit_record - 1);
	puts_(token);
	putc_(' ');
	putu((unsigned long)code);
	putc_('\n');
	flush_exit(code);
}

/* supervise starts prog as a child, forwards signals to it and reports its
 * exit (see the top of the file). It does not return. */
static void supervise(const char *token, const char *prog, char **argv) __attribute__((noreturn));
static void supervise(const char *token, const char *prog, char **argv)
{
	/* The child's exec failure comes back on a close-on-exec pipe: its
	 * exit code, then the message. A signal that comes before the child
	 * runs is forwarded to it once it does. */
	int p[2];
	long pid = sys2(SYS_pipe2, p, O_CLOEXEC);
	if (pid == 0)
		pid = sys6(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0);
	if (pid == 0) {
		sys4(SYS_rt_sigprocmask, SIG_SETMASK, &oldmask, 0, 8);
		unsigned char code = (unsigned char)runvp(prog, argv);
		end_msg();
		sys3(SYS_write, p[1], &code, 1);
		sys3(SYS_write, p[1], msg, msglen);
		for (;;)
			sys1(SYS_exit_group, code);
	}
	if (pid < 0) {
		/* As the Go init reported a failed ForkExec. */
		fail();
		puts_(prog);
		puts_(": ");
		puterr(-pid);
		putc_('\n');
		end_msg();
		sys3(SYS_write, 2, msg, msglen);
		report(token, EXIT_NOEXEC);
	}
	sys1(SYS_close, p[1]);
	unsigned char code;
	long n;
	do
		n = sys3(SYS_read, p[0], &code, 1);
	while (n == -EINTR);
	if (n == 1) {
		/* The exec failed: pass its message on, to EOF, then report. */
		for (;;) {
			n = sys3(SYS_read, p[0], msg, sizeof msg);
			if (n == -EINTR)
				continue;
			if (n <= 0)
				break;
			sys3(SYS_write, 2, msg, n);
		}
		int status;
		while (sys4(SYS_wait4, pid, &status, 0, 0) == -EINTR)
			;
		report(token, code);
	}
	sys1(SYS_close, p[0]);
	sys1(SYS_close, 0);
	sys1(SYS_close, 1);
	for (;;) {
		struct signalfd_siginfo si;
		n = sys3(SYS_read, sigfd, &si, sizeof si);
		if (n == -EINTR)
			continue;
		if (n != sizeof si)
			report(token, EXIT_NOEXEC); /* no way left to learn of the exit */
		int sig = (int)si.ssi_signo;
		if (sig != SIGCHLD) {
			sys2(SYS_kill, pid, sig);
			continue;
		}
		/* Reap everything that exited: the program, or orphans
		 * re-parented to us. */
		for (;;) {
			int status = 0;
			long w = sys4(SYS_wait4, -1, &status, WNOHANG, 0);
			if (w == -EINTR)
				continue;
			if (w < 0 && w != -ECHILD)
				report(token, EXIT_NOEXEC);
			if (w <= 0)
				break;
			if (w != pid)
				continue;
			int term = status & 0x7f; /* 0: exited; 0x7f: stopped */
			if (term == 0)
				report(token, (status >> 8) & 0xff);
			if (term != 0x7f)
				report(token, 128 + term);
		}
	}
}

__attribute__((used, noreturn)) void start(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;

	if (argc < 2 || argv[1][0] == 0) {
		fail();
		puts_("usage: spawn-init <prog> [args...]\n");
		flush_exit(EXIT_FRAME);
	}
	/* Keep the program (same uid) from reading the token out of our
	 * memory; exec resets the flag. */
	sys2(SYS_prctl, PR_SET_DUMPABLE, 0);
	sigmask = bit(SIGTERM) | bit(SIGINT) | bit(SIGHUP) | bit(SIGQUIT) | bit(SIGUSR1) |
		  bit(SIGUSR2) | bit(SIGWINCH) | bit(SIGCHLD);
	sys4(SYS_rt_sigprocmask, SIG_BLOCK, &sigmask, &oldmask, 8);
	sigfd = (int)sys4(SYS_signalfd4, -1, &sigmask, 8, SFD_CLOEXEC);
	if (sigfd < 0) {
		fail();
		puts_("signalfd: ");
		puterr(-sigfd);
		putc_('\n');
		flush_exit(EXIT_FRAME);
	}
	if (sigfd < 3) {
		/* Started without all of stdio: keep the signals off the
		 * program's descriptors, which supervisor mode closes. */
		long fd = sys3(SYS_fcntl, sigfd, F_DUPFD_CLOEXEC, 3);
		if (fd >= 0) {
			sys1(SYS_close, sigfd);
			sigfd = (int)fd;
		}
	}
	/* Tell the host we are up and about to wait: only now may it freeze
	 * us. */
	sys3(SYS_write, 2, ready_record, sizeof ready_record - 1);
	read_frame(envp);
	envbuf[nenv] = 0;
	const char *token = take_token();
	if (token)
		supervise(token, argv[1], argv + 1);
	/* A signal since the frame ends the init as one before it would:
	 * unblocked, it would be dropped (PID 1 has no handler). One in the
	 * microseconds from here to the exec still is. */
	end_on_signal();
	sys4(SYS_rt_sigprocmask, SIG_SETMASK, &oldmask, 0, 8);
	flush_exit(runvp(argv[1], argv + 1));
}
