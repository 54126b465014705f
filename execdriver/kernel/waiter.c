/* execdriver-waiter: the native driver's container monitor, in C.
 *
 * stage-1 (init.py) forks the container init, then execve()s this program
 * instead of staying a forked Python process:
 *     waiter EXIT_FD INIT_PID
 * EXIT_FD is the exit-status file stage-1 already opened as host root
 * (init.open_exit_file), passed without O_CLOEXEC; -1 for none. The
 * child-subreaper attribute survives execve, so the waiter reaps the init
 * and any orphan re-parented to it, writes {"wait_status": N} in one
 * write(2) + fsync (as init.write_exit does) and exits with the init's code
 * (128+N when killed by signal N).
 *
 * It keeps ~0.1 MiB resident instead of the ~3.5 MiB (embedded API) or
 * ~19-23 MiB (CLI, once the CLI exited) of a forked Python monitor.
 * scripts/setup.sh builds it (execdriver.kernel.waiter.build); without it the
 * Python monitor in init.py does the same job with more memory.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 126;
    int exit_fd = atoi(argv[1]);
    pid_t init = (pid_t)atoi(argv[2]);
    int status = -1, st;
    pid_t pid;
    /* execve made us dumpable again: stay out of reach of ptrace and /proc/PID/exe. */
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    for (;;) {
        pid = waitpid(-1, &st, 0);
        if (pid < 0) break;
        if (pid == init) {
            status = st;
            if (exit_fd >= 0) {
                char buf[64];
                int n = snprintf(buf, sizeof buf, "{\"wait_status\": %d}", st);
                if (write(exit_fd, buf, n) == n) fsync(exit_fd);
                close(exit_fd);
                exit_fd = -1;
            }
        }
    }
    if (status < 0) return 126;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
