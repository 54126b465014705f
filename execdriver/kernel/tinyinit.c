/* execdriver-init: the tiny pid 1 of ``execdriver run --init`` (docker's --init).
 *
 * Bind-mounted read-only into the container at /dev/init and run as its
 * process:   /dev/init -- CMD [ARG...]
 * It forks CMD (pid 2 in a new pid namespace), forwards every signal it can
 * catch to it, reaps every process re-parented to it (no zombies), and when
 * CMD ends exits with CMD's exit code (128+N when CMD was killed by signal N).
 * Statically linked: the container's rootfs may have no libc at all.
 * A command that cannot be executed: 127 when not found, else 126 (as the shells).
 * Built by execdriver.kernel.tinyinit (cc -static) on first use.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Signals that report a fault of this process, or stop it from a terminal:
 * never forwarded, left to their default action. */
static int synchronous(int sig) {
    return sig == SIGFPE || sig == SIGILL || sig == SIGSEGV || sig == SIGBUS ||
           sig == SIGABRT || sig == SIGTRAP || sig == SIGSYS || sig == SIGTTIN ||
           sig == SIGTTOU || sig == SIGKILL || sig == SIGSTOP;
}

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--") == 0) first = 2;
    if (argc <= first) {
        fprintf(stderr, "execdriver-init: usage: %s -- CMD [ARG...]\n", argv[0]);
        return 125;
    }
    sigset_t all, old;
    sigemptyset(&all);
    for (int sig = 1; sig < NSIG; sig++)
        if (!synchronous(sig)) sigaddset(&all, sig);
    /* Blocked before the fork: nothing is lost between the fork and the wait. */
    if (sigprocmask(SIG_BLOCK, &all, &old) < 0) {
        perror("execdriver-init: sigprocmask");
        return 125;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("execdriver-init: fork");
        return 125;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[first], argv + first);
        int err = errno;
        fprintf(stderr, "execdriver-init: exec %s: %s\n", argv[first], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0) {
            if (errno == EINTR) continue;
            perror("execdriver-init: sigwaitinfo");
            return 125;
        }
        if (sig != SIGCHLD) {
            kill(child, sig);       /* (ESRCH: it has just ended; SIGCHLD follows) */
            continue;
        }
        for (;;) {      /* one SIGCHLD may stand for several ended children */
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) break;
            if (pid == child) {
                if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
                return WEXITSTATUS(status);
            }
        }
    }
}
