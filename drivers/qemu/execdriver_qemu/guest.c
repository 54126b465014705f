/* execdriver-guest: PID 1 of a qemu driver guest, after the initramfs /init set it up.
 *
 * The container's root is mounted at /newroot (9p), the virtio-serial ports are at
 * /dev/port-<name>. Runs the container's process as /execdriver/config says (NUL-separated
 * fields: cwd, uid, gid, n, n gids, n, n env entries, n, n args, umask (octal),
 * no_new_privs, oom_score_adj or "", the bounding, effective, permitted, inheritable and
 * ambient capability masks, n, n times resource soft hard), with the stdin/stdout/
 * stderr ports as its stdio; reports "started <pid>" and "exit <code> <signal>" (its real
 * wait status) on the control port; serves signals (port "signal": a line "[a]N", acked
 * "ok") and exec (port "agent": frames of 1 type byte + 4-byte big-endian length + data)
 * until the process ends, then powers the guest off.
 *
 * Agent frames, host -> guest: 'x' exec (a config blob as above), 'i' stdin data, 'c' stdin
 * closed, 'k' a signal (decimal) for the exec'd process; guest -> host: 'p' started (pid),
 * 'o' stdout, 'e' stderr, 'x' exited ("<code> <signal>"). One exec at a time per
 * connection (qemu accepts one client on the socket); a host that disconnects kills its exec.
 * Built static by execdriver_qemu.initramfs; compiled with cc -static -Os.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct proc {
    char *cwd;
    uid_t uid;
    gid_t gid;
    int ngroups;
    gid_t *groups;
    char **env;
    char **args;
    mode_t umask;
    int no_new_privs;
    char *oom_score_adj;              /* "" for none */
    unsigned long long caps[5];       /* bounding, effective, permitted, inheritable, ambient */
    int nrlimits;
    struct { int resource; struct rlimit limit; } *rlimits;
};

static int control_fd = -1;

static void say(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Parse a config blob: NUL-separated fields. Returns 0, or -1 if malformed. */
static int parse(char *buf, size_t len, struct proc *p) {
    char *end = buf + len, *cur = buf;
#define NEXT() ({ char *_s = cur; if (cur >= end) return -1; cur += strlen(cur) + 1; _s; })
    p->cwd = NEXT();
    p->uid = (uid_t)strtoul(NEXT(), NULL, 10);
    p->gid = (gid_t)strtoul(NEXT(), NULL, 10);
    p->ngroups = atoi(NEXT());
    p->groups = calloc((size_t)p->ngroups + 1, sizeof(gid_t));
    for (int i = 0; i < p->ngroups; i++) p->groups[i] = (gid_t)strtoul(NEXT(), NULL, 10);
    int nenv = atoi(NEXT());
    p->env = calloc((size_t)nenv + 1, sizeof(char *));
    for (int i = 0; i < nenv; i++) p->env[i] = NEXT();
    int nargs = atoi(NEXT());
    if (nargs < 1) return -1;
    p->args = calloc((size_t)nargs + 1, sizeof(char *));
    for (int i = 0; i < nargs; i++) p->args[i] = NEXT();
    p->umask = (mode_t)strtoul(NEXT(), NULL, 8);
    p->no_new_privs = atoi(NEXT());
    p->oom_score_adj = NEXT();
    for (int i = 0; i < 5; i++) p->caps[i] = strtoull(NEXT(), NULL, 10);
    p->nrlimits = atoi(NEXT());
    p->rlimits = calloc((size_t)p->nrlimits + 1, sizeof *p->rlimits);
    for (int i = 0; i < p->nrlimits; i++) {
        p->rlimits[i].resource = atoi(NEXT());
        p->rlimits[i].limit.rlim_cur = strtoull(NEXT(), NULL, 10);
        p->rlimits[i].limit.rlim_max = strtoull(NEXT(), NULL, 10);
    }
#undef NEXT
    return 0;
}

/* In the forked child: enter the container's root as the process, then exec. */
static void enter(struct proc *p) {
    char msg[512];
    const char *step = "chroot";
    if (chroot("/newroot") < 0) goto fail;
    step = "cwd";
    if (chdir(p->cwd) < 0) goto fail;
    umask(p->umask);
    step = "oom_score_adj";
    if (p->oom_score_adj[0]) {
        int fd = open("/proc/self/oom_score_adj", O_WRONLY);
        if (fd < 0 || write(fd, p->oom_score_adj, strlen(p->oom_score_adj)) < 0) goto fail;
        close(fd);
    }
    step = "rlimits";
    for (int i = 0; i < p->nrlimits; i++)
        if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].limit) < 0) goto fail;
    step = "bounding set";
    for (int cap = 0; cap < 64; cap++)
        if (!(p->caps[0] >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            goto fail;
    step = "keepcaps";
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) goto fail;
    step = "setgroups";
    if (setgroups((size_t)p->ngroups, p->groups) < 0) goto fail;
    step = "setgid";
    if (setgid(p->gid) < 0) goto fail;
    step = "setuid";
    if (setuid(p->uid) < 0) goto fail;
    step = "capabilities";
    {
        struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        for (int i = 0; i < 2; i++) {
            data[i].effective = (unsigned)(p->caps[1] >> (32 * i));
            data[i].permitted = (unsigned)(p->caps[2] >> (32 * i));
            data[i].inheritable = (unsigned)(p->caps[3] >> (32 * i));
        }
        if (syscall(SYS_capset, &head, data) < 0) goto fail;
        for (int cap = 0; cap < 64; cap++)
            if (p->caps[4] >> cap & 1 &&
                prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0) goto fail;
    }
    step = "no_new_privs";
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) goto fail;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    environ = p->env;
    if (!getenv("PATH")) putenv("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    execvp(p->args[0], p->args);
    snprintf(msg, sizeof msg, "exec %s: %s\n", p->args[0], strerror(errno));
    say(2, msg);
    _exit(errno == ENOENT ? 127 : 126);
fail:
    snprintf(msg, sizeof msg, "%s %s: %s\n", step, step[0] == 'c' && step[1] == 'w' ? p->cwd : "",
             strerror(errno));
    say(2, msg);
    _exit(step[0] == 'c' && step[1] == 'w' ? 1 : 125);
}

static void status_text(int ws, char *out, size_t n) {
    if (WIFSIGNALED(ws))
        snprintf(out, n, "%d %d", 128 + WTERMSIG(ws), WTERMSIG(ws));
    else
        snprintf(out, n, "%d -", WEXITSTATUS(ws));
}

/* --- the agent connection -------------------------------------------------------------- */
static int agent_fd = -1;
static char abuf[1 << 16];
static size_t alen;
static pid_t exec_pid = -1;
static int exec_in = -1, exec_out = -1, exec_err = -1;
static char *exec_cfg;

/* Write all of data to a host-side port (non-blocking fd). The guest may read a request
 * before it learns that the host connected (the control message that says so is handled
 * asynchronously): a port that looks hung up is retried for a few seconds before what we
 * write is dropped. Returns 0, or -1 if dropped. */
static int put(int fd, const char *data, size_t n) {
    int hup_waits = 0;
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w >= 0) {
            data += w;
            n -= (size_t)w;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return -1;
        struct pollfd pf = {fd, POLLOUT, 0};
        if (poll(&pf, 1, 1000) > 0 && (pf.revents & POLLHUP)) {
            if (++hup_waits > 300) return -1;  /* the host is gone */
            usleep(10000);
        }
    }
    return 0;
}

/* Write a frame to the agent's host. */
static void frame(char type, const char *data, size_t len) {
    unsigned char head[5] = {(unsigned char)type, (unsigned char)(len >> 24),
                             (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                             (unsigned char)len};
    if (put(agent_fd, (const char *)head, 5) == 0) put(agent_fd, data, len);
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void drain(int *fd, char type) {
    char buf[16384];
    while (*fd >= 0) {
        ssize_t r = read(*fd, buf, sizeof buf);
        if (r > 0) {
            frame(type, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) return;
        close_fd(fd);
    }
}

static void start_exec(const char *data, size_t len) {
    struct proc p;
    free(exec_cfg);
    exec_cfg = malloc(len + 1);
    memcpy(exec_cfg, data, len);
    exec_cfg[len] = 0;
    if (parse(exec_cfg, len, &p) < 0) {
        frame('e', "agent: bad exec request\n", 24);
        frame('x', "125 -", 5);
        return;
    }
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        frame('x', "125 -", 5);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        setsid();
        enter(&p);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(in[1]); close(out[0]); close(err[0]);
        frame('x', "125 -", 5);
        return;
    }
    exec_pid = pid;
    exec_in = in[1];
    exec_out = out[0];
    exec_err = err[0];
    fcntl(exec_out, F_SETFL, O_NONBLOCK);
    fcntl(exec_err, F_SETFL, O_NONBLOCK);
    char text[32];
    snprintf(text, sizeof text, "%d", pid);
    frame('p', text, strlen(text));
}

/* Handle the complete frames in abuf. */
static void agent_frames(void) {
    size_t off = 0;
    while (alen - off >= 5) {
        unsigned char *h = (unsigned char *)abuf + off;
        size_t len = ((size_t)h[1] << 24) | ((size_t)h[2] << 16) | ((size_t)h[3] << 8) | h[4];
        if (len > sizeof abuf - 5) {  /* garbage: start over */
            alen = 0;
            return;
        }
        if (alen - off - 5 < len) break;
        const char *data = abuf + off + 5;
        switch (h[0]) {
        case 'x':
            if (exec_pid < 0) start_exec(data, len);
            break;
        case 'i':
            if (exec_in >= 0) {
                size_t done = 0;
                while (done < len) {
                    ssize_t w = write(exec_in, data + done, len - done);
                    if (w < 0) {
                        if (errno == EINTR) continue;
                        close_fd(&exec_in);
                        break;
                    }
                    done += (size_t)w;
                }
            }
            break;
        case 'c':
            close_fd(&exec_in);
            break;
        case 'k': {
            char num[16] = {0};
            memcpy(num, data, len < 15 ? len : 15);
            if (exec_pid > 0) kill(exec_pid, atoi(num));
            break;
        }
        }
        off += 5 + len;
    }
    memmove(abuf, abuf + off, alen - off);
    alen -= off;
}

static void agent_gone(void) {
    alen = 0;
    if (exec_pid > 0) kill(exec_pid, SIGKILL);
    close_fd(&exec_in);
}

/* --- PID 1 --------------------------------------------------------------------------------- */
static int sigchld_pipe[2];

static void on_sigchld(int sig) {
    (void)sig;
    int e = errno;
    if (write(sigchld_pipe[1], "c", 1) < 0) {}
    errno = e;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

static void power_off(void) {
    sync();
    reboot(RB_AUTOBOOT);  /* qemu runs with -no-reboot: it exits */
    for (;;) pause();
}

int main(void) {
    char line[256];
    control_fd = open("/dev/port-control", O_WRONLY | O_CLOEXEC);
    if (control_fd < 0) power_off();
    size_t len;
    char *cfg = read_file("/execdriver/config", &len);
    struct proc p;
    if (!cfg || parse(cfg, len, &p) < 0) {
        say(control_fd, "error bad /execdriver/config\n");
        power_off();
    }
    if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) power_off();
    signal(SIGCHLD, on_sigchld);
    int sig_fd = open("/dev/port-signal", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    agent_fd = open("/dev/port-agent", O_RDWR | O_NONBLOCK | O_CLOEXEC);

    pid_t main_pid = fork();
    if (main_pid == 0) {
        int fds[3] = {open("/dev/port-stdin", O_RDONLY), open("/dev/port-stdout", O_WRONLY),
                      open("/dev/port-stderr", O_WRONLY)};
        for (int i = 0; i < 3; i++) {
            if (fds[i] < 0) fds[i] = open("/dev/null", O_RDWR);
            dup2(fds[i], i);
        }
        for (int i = 0; i < 3; i++)
            if (fds[i] > 2) close(fds[i]);
        setsid();
        enter(&p);
    }
    if (main_pid < 0) {
        say(control_fd, "error fork failed\n");
        power_off();
    }
    snprintf(line, sizeof line, "started %d\n", main_pid);
    say(control_fd, line);

    char sbuf[64];
    size_t slen = 0;
    long sig_back = 0, agent_back = 0;  /* host not connected: retry after this time */
    long agent_hup_since = 0;
    for (;;) {
        struct pollfd pf[6];
        int n = 0, i_sig = -1, i_agent = -1, i_out = -1, i_err = -1;
        long t = now_ms();
        pf[n++] = (struct pollfd){sigchld_pipe[0], POLLIN, 0};
        if (sig_fd >= 0 && t >= sig_back) { i_sig = n; pf[n++] = (struct pollfd){sig_fd, POLLIN, 0}; }
        if (agent_fd >= 0 && t >= agent_back) { i_agent = n; pf[n++] = (struct pollfd){agent_fd, POLLIN, 0}; }
        if (exec_out >= 0) { i_out = n; pf[n++] = (struct pollfd){exec_out, POLLIN, 0}; }
        if (exec_err >= 0) { i_err = n; pf[n++] = (struct pollfd){exec_err, POLLIN, 0}; }
        int timeout = (i_sig < 0 && sig_fd >= 0) || (i_agent < 0 && agent_fd >= 0) ? 20 : -1;
        if (poll(pf, (nfds_t)n, timeout) < 0 && errno != EINTR) continue;
        if (i_out >= 0 && pf[i_out].revents) drain(&exec_out, 'o');
        if (i_err >= 0 && pf[i_err].revents) drain(&exec_err, 'e');
        if (i_sig >= 0 && pf[i_sig].revents) {
            ssize_t r = read(sig_fd, sbuf + slen, sizeof sbuf - 1 - slen);
            if (r <= 0) {
                if (r == 0 || errno != EAGAIN) { slen = 0; sig_back = now_ms() + 20; }
            } else {
                slen += (size_t)r;
                sbuf[slen] = 0;
                char *nl;
                while ((nl = strchr(sbuf, '\n'))) {
                    *nl = 0;
                    int all = sbuf[0] == 'a';
                    int signum = atoi(sbuf + all);
                    int rc = signum > 0 ? kill(all ? -1 : main_pid, signum) : -1;
                    const char *ack = rc == 0 ? "ok\n" : "error\n";
                    put(sig_fd, ack, strlen(ack));
                    size_t used = (size_t)(nl - sbuf) + 1;
                    memmove(sbuf, nl + 1, slen - used + 1);
                    slen -= used;
                }
                if (slen >= sizeof sbuf - 1) slen = 0;
            }
        }
        if (i_agent >= 0 && pf[i_agent].revents) {
            ssize_t r = read(agent_fd, abuf + alen, sizeof abuf - alen);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                /* The host is not connected (or we have not heard yet that it is: the
                 * news comes asynchronously, after a new host's data at times): its exec
                 * is killed once that has lasted a second. */
                long t_now = now_ms();
                if (!agent_hup_since) agent_hup_since = t_now;
                if (t_now - agent_hup_since > 1000) agent_gone();
                agent_back = t_now + 20;
            } else {
                agent_hup_since = 0;
                if (r > 0) {
                    alen += (size_t)r;
                    agent_frames();
                }
            }
        }
        if (pf[0].revents) {
            char c[64];
            while (read(sigchld_pipe[0], c, sizeof c) > 0) {}
            int ws;
            pid_t pid;
            while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
                char text[32];
                if (pid == main_pid) {
                    status_text(ws, text, sizeof text);
                    snprintf(line, sizeof line, "exit %s\n", text);
                    say(control_fd, line);
                    power_off();
                }
                if (pid == exec_pid) {
                    drain(&exec_out, 'o');
                    drain(&exec_err, 'e');
                    close_fd(&exec_out);
                    close_fd(&exec_err);
                    close_fd(&exec_in);
                    exec_pid = -1;
                    status_text(ws, text, sizeof text);
                    frame('x', text, strlen(text));
                }
            }
        }
    }
}
