"""The argparse command line of ``execdriver-oci`` (not imported for the hot verbs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..userroot import user_root
from .errors import UsageError
from .state import DEFAULT_ROOT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations (as runc): "--cri" must not become "--criu" and take the verb as its
    # value -- the warm server decides what it serves from the words before the verb.
    p = _Parser(prog="execdriver-oci", description="OCI runtime (runc-compatible) over "
                "execdriver's native driver", allow_abbrev=False)
    p.add_argument("--root", default=os.environ.get("EXECDRIVER_OCI_ROOT") or user_root(DEFAULT_ROOT),
                   help="state directory (default %(default)s)")
    p.add_argument("--log", help="log file (default: stderr)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text or JSON objects (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="log debug messages too")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="cgroups through systemd: each container a transient scope unit "
                   "(cgroupsPath slice:prefix:name); pure cgroup v2 hosts with systemd as "
                   "init")
    p.add_argument("--rootless", default="auto", choices=("true", "false", "auto"),
                   help="auto (rootless when not root), true (the same; refused as root) or false")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true",
                   help="print the version and the runtime-spec version")
    sub = p.add_subparsers(dest="verb", parser_class=_Parser)

    def verb(name: str, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        v = sub.add_parser(name, help=help_text, description=help_text)
        if with_id:
            v.add_argument("id", help="container id")
        return v

    c = verb("create", "create a container; its process waits until start")
    _create_options(c)
    ck = verb("checkpoint", "save a running container's processes with CRIU (>= 4.1)")
    _criu_options(ck)
    ck.add_argument("--leave-running", action="store_true",
                    help="leave the container running after the checkpoint")
    for flag in ("--pre-dump", "--lazy-pages", "--auto-dedup"):
        ck.add_argument(flag, action="store_true", help="not supported" if flag != "--auto-dedup"
                        else "accepted, ignored")
    for flag in ("--parent-path", "--page-server", "--status-fd"):
        ck.add_argument(flag, help="not supported")
    rs = verb("restore", "make a running container from a checkpoint (CRIU >= 4.1)")
    _criu_options(rs)
    _create_options(rs)
    rs.add_argument("-d", "--detach", action="store_true", help="do not wait for the container")
    rs.add_argument("--no-subreaper", "-no-subreaper", action="store_true",
                    help="accepted (containerd's shim spells it -no-subreaper)")
    rs.add_argument("--auto-dedup", action="store_true", help="accepted, ignored")
    rs.add_argument("--lazy-pages", action="store_true", help="not supported")
    for flag in ("--lsm-profile", "--lsm-mount-context"):
        rs.add_argument(flag, help="not supported (no LSM on this host kind)")
    verb("start", "run the user process of a created container")
    verb("state", "print the OCI state of a container")
    k = sub.add_parser("kill", help="send a signal to the container's init (default SIGTERM)")
    k.add_argument("-a", "--all", action="store_true", help="signal every process of the container")
    k.add_argument("id", help="container id")
    k.add_argument("signal", nargs="?", default="SIGTERM",
                   help="name (KILL, SIGKILL) or number (default %(default)s)")
    d = sub.add_parser("delete", help="delete a stopped container (--force: any)")
    d.add_argument("-f", "--force", action="store_true",
                   help="kill a running or paused container first")
    d.add_argument("id", help="container id")
    r = verb("run", "create and start a container; wait for it unless --detach")
    _create_options(r)
    r.add_argument("-d", "--detach", action="store_true",
                   help="return once the container runs (its exit is not waited for)")
    r.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    r.add_argument("--no-subreaper", action="store_true", help=argparse.SUPPRESS)
    e = sub.add_parser("exec", help="run a process in a running container")
    e.add_argument("-p", "--process", help="OCI process JSON file")
    e.add_argument("-t", "--tty", action="store_true", help="give the process a terminal")
    e.add_argument("-d", "--detach", action="store_true",
                   help="return once the process runs (its exit is not waited for)")
    e.add_argument("--pid-file", help="write the process's host pid to this file")
    e.add_argument("--console-socket",
                   help="unix socket to send the terminal's master to (with --tty)")
    e.add_argument("-e", "--env", action="append", default=[],
                   help="KEY=VALUE added to the environment (repeatable)")
    e.add_argument("--cwd", help="working directory inside the container")
    e.add_argument("-u", "--user", help="UID[:GID]")
    e.add_argument("-g", "--additional-gids", action="append", type=int, default=[],
                   help="supplementary group id (repeatable)")
    e.add_argument("-c", "--cap", action="append", default=[],
                   help="capability added to the process's sets (repeatable)")
    e.add_argument("--no-new-privs", action="store_true", help="set no_new_privs")
    e.add_argument("--apparmor", help="AppArmor profile of the process")
    e.add_argument("--process-label", help="SELinux label (refused: SELinux is not supported)")
    e.add_argument("--preserve-fds", type=int, default=0,
                   help="pass fds 3 .. 3+N-1 of ours on to the process")
    e.add_argument("--ignore-paused", action="store_true",
                   help="exec into a paused container too (the process starts frozen)")
    e.add_argument("--cgroup", action="append", default=[],
                   help="a sub-cgroup to join (refused: the process joins the "
                        "container's cgroup)")
    e.add_argument("id", help="container id")
    e.add_argument("command", nargs=argparse.REMAINDER,
                   help="command and arguments (unless --process)")
    verb("pause", "freeze every process of the container")
    verb("resume", "thaw a paused container")
    ps = sub.add_parser("ps", help="processes of the container")
    ps.add_argument("-f", "--format", choices=("table", "json"), default="table",
                    help="table (ps output) or json (the pids)")
    ps.add_argument("id", help="container id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER, help="options passed to ps")
    lst = sub.add_parser("list", help="containers under --root")
    lst.add_argument("-f", "--format", choices=("table", "json"), default="table",
                     help="output format (default %(default)s)")
    lst.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    verb("features", "what this runtime supports (JSON)", with_id=False)
    sp = verb("spec", "write a default config.json", with_id=False)
    sp.add_argument("-b", "--bundle", default=".",
                    help="directory to write config.json in (default %(default)s)")
    sp.add_argument("--rootless", action="store_true",
                    help="a spec for a rootless container: a user namespace mapping container "
                         "root to you, the host's network, no cgroup resources")
    u = sub.add_parser("update", help="change a running container's resource limits")
    u.add_argument("-r", "--resources", help="OCI LinuxResources JSON file, or - for stdin")
    for flag in ("memory", "memory-reservation", "memory-swap", "cpu-shares", "cpu-quota",
                 "cpu-period", "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight"):
        u.add_argument(f"--{flag}", help=f"new {flag.replace('-', ' ')} (as runc update)")
    for flag in ("kernel-memory", "kernel-memory-tcp", "cpu-rt-period", "cpu-rt-runtime",
                 "cpu-idle", "l3-cache-schema", "mem-bw-schema"):
        u.add_argument(f"--{flag}", dest=f"unsupported_{flag.replace('-', '_')}",
                       help=argparse.SUPPRESS)
    u.add_argument("id", help="container id")
    ev = sub.add_parser("events", help="resource usage of a container (--stats: once)")
    ev.add_argument("--stats", action="store_true", help="print the stats once and exit")
    ev.add_argument("--interval", default="5s",
                    help="time between stats events (default %(default)s)")
    ev.add_argument("id", help="container id")
    return p


def _criu_options(v: argparse.ArgumentParser) -> None:
    """The options runc's checkpoint and restore share."""
    v.add_argument("--image-path", help="the checkpoint's directory (default ./checkpoint)")
    v.add_argument("--work-path", help="where CRIU writes its log (default: the image path "
                   "when checkpointing, the container's state directory when restoring)")
    v.add_argument("--tcp-established", action="store_true",
                   help="established TCP connections too")
    v.add_argument("--ext-unix-sk", action="store_true", help="external unix sockets")
    v.add_argument("--shell-job", action="store_true", help="a shell job (a terminal)")
    v.add_argument("--file-locks", action="store_true", help="file locks too")
    v.add_argument("--manage-cgroups-mode", help="accepted: the cgroups are the config's "
                   "(CRIU's ignore mode)")
    v.add_argument("--empty-ns", action="append", default=[], help="not supported")


def _create_options(v: argparse.ArgumentParser) -> None:
    v.add_argument("-b", "--bundle", default=".",
                   help="bundle directory holding config.json (default %(default)s)")
    v.add_argument("--pid-file", help="write the container init's host pid to this file")
    v.add_argument("--console-socket",
                   help="unix socket to send the terminal's master to (process.terminal)")
    v.add_argument("--no-pivot", action="store_true",
                   help="chroot instead of pivot_root (for a rootfs on a ramfs)")
    v.add_argument("--no-new-keyring", action="store_true",
                   help="accepted: the init never creates a session keyring")
    v.add_argument("--preserve-fds", type=int, default=0,
                   help="pass fds 3 .. 3+N-1 of ours on to the container's process")
