/*
 * execdriver-client: the compiled front of the `execdriver` and `execdriver-oci`
 * commands (built by `python -m execdriver.cli.client_build`, see there).
 *
 * It speaks warm.py's protocol to a running `execdriver server`: the command
 * line, environment and umask go to the server, whose forked worker takes our
 * stdio fds and cwd and runs the command; signals are passed on; the worker's
 * exit status becomes ours. With no server to use (none running, EXECDRIVER_SERVER=off, or the
 * server answers "fallback") it execs the Python implementation with the same
 * argv, pid, fds and environment: exactly what the Python console script does.
 * A cold Python start costs ~25 ms before any work; this costs ~1 ms.
 *
 * As warm.py: the server gets EXECDRIVER_SERVER_TIMEOUT (default TIMEOUT) seconds
 * to answer the request, else we run Python (at once if its backlog is full); a
 * command line warm.servable() refuses never goes to the server at all.
 *
 * The interpreter is found when the command runs, so a wheel built elsewhere and a
 * moved venv work: $EXECDRIVER_PYTHON, else python3.N, python3 or python beside this
 * binary (a venv's bin), else PYTHON, the interpreter that built it. The installation
 * key and the default socket follow from it as warm.install_key()/socket_path() do.
 *
 * Build-time constants (client_build.py, from warm.py): PYTHON, PYNAME (python3.N),
 * SOCKET_DIR, PROTOCOL, TIMEOUT, AUTOSTART_IDLE, and warm.CLASSIFICATION as space-separated words:
 * <P>_SERVED, <P>_VALUES, <P>_FLAGS and <P>_BARE for P = EXECDRIVER and OCI.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PYTHON
#error "build with -DPYTHON=..."
#endif

static char python[PATH_MAX];                 /* the interpreter to exec */
static char key[PATH_MAX + 32];              /* warm.install_key() */

extern char **environ;

static int sock = -1;
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
                                SIGWINCH, SIGALRM};
#define NFORWARDED (int)(sizeof(forwarded) / sizeof(forwarded[0]))

/* --- a growing buffer and JSON strings ------------------------------------------ */

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) { perror("execdriver: realloc"); exit(125); }
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void putint(struct buf *b, long v)
{
    char tmp[32];
    put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%ld", v));
}

/* A JSON string; bytes >= 0x80 pass through (UTF-8). Invalid UTF-8 makes the
 * server refuse the request: we then run the Python implementation. */
static void putstr(struct buf *b, const char *s, size_t n)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            put(b, e, (size_t)snprintf(e, sizeof e, "\\u%04x", c));
        } else {
            put(b, (const char *)&s[i], 1);
        }
    }
    put(b, "\"", 1);
}

/* --- falling back to Python ----------------------------------------------------- */

static void reap_forker(int unused);

static void run_python(const char *prog, int argc, char **argv)
{
    reap_forker(1);     /* nothing ran: it has forked nothing */
    const char *module = strcmp(prog, "execdriver-oci") == 0 ? "execdriver.cli.oci" : "execdriver";
    char **args = calloc((size_t)argc + 5, sizeof(char *));
    if (!args) { perror("execdriver: calloc"); exit(125); }
    args[0] = python;
    args[1] = "-P";         /* not the cwd first on sys.path: a checkout's execdriver/ there */
    args[2] = "-m";         /* must not shadow the installed package */
    args[3] = (char *)module;
    for (int i = 1; i < argc; i++)
        args[i + 3] = argv[i];
    /* Tell warm.py not to ask the server again (it takes the variable out). */
    setenv("EXECDRIVER_SERVER_TRIED", "1", 1);
    execv(python, args);
    fprintf(stderr, "%s: exec %s: %s\n", prog, python, strerror(errno));
    exit(125);
}

/* A forked verb (warm.FORKED): the worker runs the command; the container's first process
 * is forked by our child, a small Python (kernel/forkserver.py: serve_forker), so that it
 * descends from our caller (conmon, containerd-shim reap it). It is started as soon as
 * the server answers the connection, and imports the stdlib it needs while the worker
 * prepares; the worker tells it where to import execdriver from. */
static pid_t forker_pid = -1;
static int forker_fd = -1;              /* the worker's end, sent with "go" */

static void spawn_forker(void)
{
    static const char boot[] =
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is our parent's\n"
        "import array, ctypes, errno, faulthandler, fcntl, json, os, pickle\n"
        "import resource, select, socket, stat, struct, sys, termios\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        "root = s.recv(4096).decode()\n"
        "if not root:\n"
        "    sys.exit(0)  # no worker after all: the command runs in our parent\n"
        "sys.path.insert(0, root)\n"
        "from execdriver.kernel.forkserver import serve_forker\n"
        "serve_forker(s)\n";
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        return;
    pid_t pid = fork();
    if (pid < 0) {
        close(pair[0]);
        close(pair[1]);
        return;
    }
    if (pid == 0) {
        char fd[16];
        snprintf(fd, sizeof fd, "%d", pair[0]);
        if (fcntl(pair[0], F_SETFD, 0) == 0) {
            char *args[] = {python, "-I", "-S", "-c", (char *)boot, fd, NULL};
            execv(python, args);
        }
        _exit(127);
    }
    close(pair[0]);
    forker_pid = pid;
    forker_fd = pair[1];
}

/* The forker ends when the worker has closed its end (or never got it); one that was
 * never used is ended at once (ours: we started it), not waited for through its
 * imports. */
static void reap_forker(int unused)
{
    if (forker_pid <= 0)
        return;
    if (forker_fd >= 0)
        close(forker_fd);
    forker_fd = -1;
    if (unused)
        kill(forker_pid, SIGKILL);
    while (waitpid(forker_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    forker_pid = -1;
}

/* --- which installation this is --------------------------------------------------- */

static int executable(const char *path) { return access(path, X_OK) == 0; }

/* python (see the top), and key = "<the real directory of python>:<PYNAME>". */
static void locate(void)
{
    const char *env = getenv("EXECDRIVER_PYTHON");
    char self[PATH_MAX], dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    python[0] = 0;
    if (env && *env && strlen(env) < sizeof python && executable(env)) {
        strcpy(python, env);
    } else if (n > 0) {
        self[n] = 0;
        const char *bin = dirname(self);
        static const char *const names[] = {PYNAME, "python3", "python"};
        for (size_t i = 0; i < sizeof names / sizeof names[0] && !python[0]; i++) {
            snprintf(python, sizeof python, "%s/%s", bin, names[i]);
            if (!executable(python))
                python[0] = 0;
        }
    }
    if (!python[0])
        snprintf(python, sizeof python, "%s", PYTHON);
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", python);
    if (!realpath(dirname(copy), dir))
        snprintf(dir, sizeof dir, "%s", dirname(copy));
    snprintf(key, sizeof key, "%s:%s", dir, PYNAME);
}

/* FNV-1a, 32 bits: the default socket's name (warm.socket_path()). */
static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* FNV-1a of our namespaces and root, "INO:...:DEV:INO" (warm.namespace_hash()); 0 when
 * /proc cannot tell. A server serves only clients in its own namespaces: each set of them
 * has its default socket. */
static uint32_t namespace_hash(void)
{
    static const char *const names[] = {"mnt", "net", "pid", "ipc", "uts", "cgroup", "user"};
    char text[512], path[64];
    size_t off = 0;
    struct stat st;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "/proc/self/ns/%s", names[i]);
        if (stat(path, &st) < 0)
            return 0;
        off += (size_t)snprintf(text + off, sizeof text - off, "%s%llu", i ? ":" : "",
                                (unsigned long long)st.st_ino);
    }
    if (stat("/proc/self/root", &st) < 0)
        return 0;
    snprintf(text + off, sizeof text - off, ":%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    return fnv1a(text);
}

/* --- a server on first use --------------------------------------------------------- */

/* No server answers on the default socket: start one, detached (own session, stdio on
 * /dev/null, cwd /, root cgroups), for the next commands; this one still runs in Python. It exits
 * after $EXECDRIVER_SERVER_IDLE seconds (default AUTOSTART_IDLE) without a client, and
 * when our code changes. Not for other users than root, with EXECDRIVER_SERVER=manual
 * or off, or with an explicit socket. The server's own lock makes concurrent starts one. */
static void autostart(void)
{
    const char *v = getenv("EXECDRIVER_SERVER_IDLE");
    char *end;
    double idle = v && *v ? strtod(v, &end) : -1;
    if (!(v && *v && !*end && idle > 0 && idle < 1e7))
        idle = AUTOSTART_IDLE;
    char idle_arg[32];
    snprintf(idle_arg, sizeof idle_arg, "%g", idle);
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        if (setsid() < 0 || fork() != 0)
            _exit(0);
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            _exit(0);
        close_range(3, ~0U, 0);
        if (chdir("/") < 0)
            _exit(0);
        char *args[] = {python, "-P", "-m", "execdriver", "server", "run", "--leave-cgroup",
                        "--idle-timeout", idle_arg, NULL};
        execv(python, args);
        _exit(127);
    }
    (void)waitpid(pid, NULL, 0);
}

/* --- talking to the server ------------------------------------------------------ */

static void forward(int sig)
{
    char msg[32];
    int n = snprintf(msg, sizeof msg, "{\"signal\": %d}", sig);
    int saved = errno;
    (void)send(sock, msg, (size_t)n, MSG_NOSIGNAL);
    errno = saved;
}

/* --- what may be served (warm.servable) ------------------------------------------ */

struct classification { const char *served, *forked, *values, *flags; int bare; };
static const struct classification execdriver_table = {
    EXECDRIVER_SERVED, EXECDRIVER_FORKED, EXECDRIVER_VALUES, EXECDRIVER_FLAGS, EXECDRIVER_BARE};
static const struct classification oci_table = {OCI_SERVED, OCI_FORKED, OCI_VALUES, OCI_FLAGS,
                                                OCI_BARE};

/* Whether word[0..n) is one of the space-separated words of list. */
static int listed(const char *list, const char *word, size_t n)
{
    while (n && *list) {
        size_t len = strcspn(list, " ");
        if (len == n && memcmp(list, word, n) == 0)
            return 1;
        list += len;
        list += strspn(list, " ");
    }
    return 0;
}

/* Where the verb is (argc: none; -1: a word before it is not a known global option:
 * "--opt VALUE", "--opt=VALUE" or a flag). */
static int verb_index(const struct classification *t, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            return i;
        size_t n = strcspn(a, "=");
        if (listed(t->values, a, n)) {
            if (!a[n])
                i++;                    /* its value is the next word */
        } else if (a[n] || !listed(t->flags, a, n)) {
            return -1;
        }
    }
    return argc;
}

/* warm.servable(): the verb decides (no verb: t->bare). */
static int servable(const struct classification *t, int argc, char **argv)
{
    int i = verb_index(t, argc, argv);
    return i < 0 ? 0 : i == argc ? t->bare : listed(t->served, argv[i], strlen(argv[i]));
}

/* warm.forkable(): served with a forker (this process, exec'd into Python, forks the
 * container), never with --preserve-fds (our fds, which the worker does not get). */
static int forkable(const struct classification *t, int argc, char **argv)
{
    int i = verb_index(t, argc, argv);
    if (i < 0 || i == argc || !listed(t->forked, argv[i], strlen(argv[i])))
        return 0;
    for (int j = i + 1; j < argc; j++)
        if (strncmp(argv[j], "--preserve-fds", 14) == 0)
            return 0;
    return 1;
}

/* --- the time the server gets ---------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double timeout_seconds(void)
{
    const char *v = getenv("EXECDRIVER_SERVER_TIMEOUT");
    char *end;
    double t = v && *v ? strtod(v, &end) : 0;
    return v && *v && !*end && t > 0 && t < 3600 ? t : TIMEOUT;
}

/* SO_SNDTIMEO or SO_RCVTIMEO: until the deadline (0: no limit). */
static void limit(int opt, double deadline)
{
    double left = deadline ? deadline - now() : 0;
    if (deadline && left < 0.001)
        left = 0.001;
    struct timeval tv = {.tv_sec = (time_t)left,
                         .tv_usec = (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    (void)setsockopt(sock, SOL_SOCKET, opt, &tv, sizeof tv);
}

static void debug_fallback(const char *prog, const char *why, int len)
{
    if (getenv("EXECDRIVER_DEBUG"))
        fprintf(stderr, "%s: debug: the server did not take the command (%.*s): running it "
                "here\n", prog, len, why);
}

/* The value after "key": in a small JSON object, or NULL. */
static const char *field(const char *msg, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(msg, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

int main(int argc, char **argv)
{
    locate();
    const char *prog = strcmp(basename(argv[0]), "execdriver-oci") == 0 ? "execdriver-oci"
                                                                        : "execdriver";
    const char *mode = getenv("EXECDRIVER_SERVER");
    const struct classification *table =
        strcmp(prog, "execdriver-oci") == 0 ? &oci_table : &execdriver_table;
    int forker = !servable(table, argc, argv) && forkable(table, argc, argv);
    if ((mode && strcmp(mode, "off") == 0) || !(forker || servable(table, argc, argv)))
        run_python(prog, argc, argv);

    const char *path = getenv("EXECDRIVER_SERVER_SOCKET");
    char socket_path[sizeof ((struct sockaddr_un *)0)->sun_path + 64];
    if (!path || !*path) {
        snprintf(socket_path, sizeof socket_path, "%s/%08x-%08x.sock", SOCKET_DIR, fnv1a(key),
                 namespace_hash());
        path = socket_path;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        run_python(prog, argc, argv);
    strcpy(addr.sun_path, path);
    double deadline = now() + timeout_seconds();
    /* Non-blocking connect(), as warm.py's: a full backlog is EAGAIN at once ("busy"). */
    sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0)
        run_python(prog, argc, argv);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (errno == EAGAIN)
            debug_fallback(prog, "busy", 4);
        /* Not from a forked verb: its caller (conmon, containerd-shim) is a child
         * subreaper, which would inherit the detached server and wait for it. */
        else if ((errno == ENOENT || errno == ECONNREFUSED) && path == socket_path
                 && geteuid() == 0 && !(mode && strcmp(mode, "manual") == 0) && !forker)
            autostart();
        run_python(prog, argc, argv);
    }
    if (fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) & ~O_NONBLOCK) < 0)
        run_python(prog, argc, argv);
    if (forker)
        spawn_forker();
    if (forker && forker_pid < 0)
        run_python(prog, argc, argv);

    /* the request (as warm.py builds it) */
    int fds[6], nfds = 0;
    struct buf b = {0};
    puts_(&b, "{\"v\": ");
    putint(&b, PROTOCOL);
    puts_(&b, ", \"key\": ");
    putstr(&b, key, strlen(key));
    puts_(&b, ", \"prog\": ");
    putstr(&b, prog, strlen(prog));
    puts_(&b, ", \"argv\": [");
    for (int i = 1; i < argc; i++) {
        if (i > 1) puts_(&b, ", ");
        putstr(&b, argv[i], strlen(argv[i]));
    }
    puts_(&b, "], \"env\": {");
    int first = 1;
    for (char **e = environ; *e; e++) {
        char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        if (!first) puts_(&b, ", ");
        first = 0;
        putstr(&b, *e, (size_t)(eq - *e));
        puts_(&b, ": ");
        putstr(&b, eq + 1, strlen(eq + 1));
    }
    mode_t mask = umask(0);
    umask(mask);
    puts_(&b, "}, \"umask\": ");
    putint(&b, (long)mask);
    puts_(&b, ", \"fds\": [");
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0)
            continue;
        if (nfds) puts_(&b, ", ");
        putint(&b, fd);
        fds[nfds++] = fd;
    }
    puts_(&b, "], \"ignored\": [");
    first = 1;
    for (int i = 0; i < NFORWARDED; i++) {
        struct sigaction old;
        /* SIGINT is never passed as ignored: main() takes Ctrl-C back (as warm.py) */
        if (forwarded[i] != SIGINT && sigaction(forwarded[i], NULL, &old) == 0 &&
            old.sa_handler == SIG_IGN) {
            if (!first) puts_(&b, ", ");
            first = 0;
            putint(&b, forwarded[i]);
        }
    }
    puts_(&b, forker ? "], \"forker\": 1}" : "]}");
    limit(SO_SNDTIMEO, deadline);
    if (send(sock, b.p, b.n, MSG_NOSIGNAL) < 0) {
        if (errno == EAGAIN)
            debug_fallback(prog, "timed out", 9);
        run_python(prog, argc, argv);
    }
    free(b.p);

    char msg[65536];
    ssize_t n;
    do {
        limit(SO_RCVTIMEO, deadline);
        n = recv(sock, msg, sizeof msg - 1, 0);
    } while (n < 0 && errno == EINTR && now() < deadline);
    if (n < 0 && errno == EAGAIN)
        debug_fallback(prog, "timed out", 9);
    if (n <= 0)
        run_python(prog, argc, argv);   /* no "go" sent: the worker, if any, runs nothing */
    msg[n] = 0;
    if (!field(msg, "ok")) {
        const char *why = field(msg, "fallback");
        if (why)
            debug_fallback(prog, why, (int)strcspn(why, "}"));
        close(sock);
        run_python(prog, argc, argv);          /* "fallback": nothing ran */
    }

    /* Ours now: the command takes as long as it takes. "go" carries our stdio and
     * cwd, to the worker (never held by a server that might be stuck). */
    limit(SO_RCVTIMEO, 0);
    limit(SO_SNDTIMEO, 0);
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd < 0)
        run_python(prog, argc, argv);   /* the worker gets EOF, not "go": it runs nothing */
    fds[nfds++] = cwd;
    if (forker)
        fds[nfds++] = forker_fd;
    struct iovec iov = {.iov_base = "{\"go\": 1}", .iov_len = 9};
    union { char buf[CMSG_SPACE(sizeof(int) * 6)]; struct cmsghdr align; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
        run_python(prog, argc, argv);
    close(cwd);
    if (forker) {                       /* the worker has it now */
        close(forker_fd);
        forker_fd = -1;
    }

    struct sigaction sa = {.sa_handler = forward};
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < NFORWARDED; i++) {
        struct sigaction old;
        if (sigaction(forwarded[i], NULL, &old) == 0 &&
            (old.sa_handler != SIG_IGN || forwarded[i] == SIGINT))
            sigaction(forwarded[i], &sa, NULL);
    }
    for (;;) {
        n = recv(sock, msg, sizeof msg - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            reap_forker(0);
            fprintf(stderr, "%s: the execdriver server went away before the command ended\n",
                    prog);
            return strcmp(prog, "execdriver-oci") == 0 ? 1 : 125;
        }
        msg[n] = 0;
        const char *v;
        if ((v = field(msg, "fallback"))) {  /* the worker refused our fds: nothing ran */
            debug_fallback(prog, v, (int)strcspn(v, "}"));
            close(sock);
            run_python(prog, argc, argv);
        }
        if ((v = field(msg, "exit"))) {
            reap_forker(0);
            return atoi(v) & 0xff;
        }
        if ((v = field(msg, "signal"))) {
            /* die the way the worker died */
            int sig = atoi(v);
            reap_forker(0);
            signal(sig, SIG_DFL);
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, sig);
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            raise(sig);
            return 128 + sig;
        }
    }
}
