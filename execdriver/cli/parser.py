"""The argument parser of the ``execdriver`` command: every verb, its flags and help.

Only argparse is imported here, so ``execdriver --help`` stays fast. Each verb
names its handler as ``"module:function"`` inside this package; main imports
it only when that verb runs.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_ROOT = "/run/execdriver"
DEFAULT_DRIVER = "native"
FORMATS = ("text", "json")


class UsageError(Exception):
    """Bad command line (argparse would have exited 2; we exit 125)."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, self.prog)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def default_root() -> str:
    from ..userroot import user_root
    return os.environ.get("EXECDRIVER_ROOT") or user_root(DEFAULT_ROOT)


MAIN_DESCRIPTION = """\
Run Linux containers through pluggable execution drivers (native, lxc, chroot,
and any third-party driver registered under the entry-point group
execdriver.drivers)."""

MAIN_EPILOG = """\
examples:
  execdriver rootfs busybox ./rootfs                 build a small busybox rootfs
  execdriver run --rootfs ./rootfs -- /bin/echo hi   run a command, exit with its code
  execdriver run -d --name web1 --rootfs ./rootfs --memory 64M -- /bin/sh -c 'sleep 1d'
  execdriver list                                    containers and their status
  execdriver exec web1 -- /bin/ps                    run another process inside web1
  execdriver kill web1 KILL && execdriver rm web1
  execdriver drivers                                 which drivers work on this host

exit status: the container's own code for run and exec (128+N when killed by
signal N); 125 when execdriver itself fails (one line on stderr); 130 on Ctrl-C.
state root: --root, else $EXECDRIVER_ROOT, else /run/execdriver."""


def _common(root_default: object) -> argparse.ArgumentParser:
    """--root and --debug, accepted before or after the verb."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", metavar="DIR", default=root_default,
                   help="state root (default: $EXECDRIVER_ROOT, else /run/execdriver; "
                   "rootless: $XDG_RUNTIME_DIR/execdriver)")
    debug_default = argparse.SUPPRESS if root_default is argparse.SUPPRESS else False
    p.add_argument("--debug", action="store_true", default=debug_default,
                   help="show tracebacks of errors")
    return p


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="output as aligned text (default) or JSON")


def _id(p: argparse.ArgumentParser, help: str = "container id") -> None:
    p.add_argument("id", metavar="ID", help=help)


def _process_flags(p: argparse.ArgumentParser) -> None:
    """The flags run and exec share."""
    p.add_argument("--env-file", metavar="FILE", action="append", default=[],
                   help="read KEY=VAL lines (# comments) into the environment (repeatable)")
    p.add_argument("-e", "--env", metavar="KEY=VAL", action="append", default=[],
                   help="set an environment variable (repeatable); KEY alone copies it "
                        "from the caller's environment")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="UID[:GID]",
                   help="user (and group) to run as: numbers, or names from the rootfs's "
                        "/etc/passwd and /etc/group")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-d", "--detach", action="store_true",
                   help="do not wait: print the id (run) and return at once")


def _device_flags(ov: argparse._ArgumentGroup) -> None:
    """run's --device and --privileged (docker's)."""
    ov.add_argument("--device", metavar="HOST[:CONTAINER][:PERMS]", action="append", default=[],
                    help="give the container host device HOST, at CONTAINER (default: the same "
                         "path), with PERMS from r, w, m (default rwm), e.g. /dev/fuse or "
                         "/dev/null:/dev/mynull:rw (repeatable)")
    ov.add_argument("--privileged", action="store_true",
                    help="docker's privileged mode: every capability, no seccomp filter, no "
                         "masked or read-only paths, /sys writable, every host device node")


def _verb(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: str,
          common: argparse.ArgumentParser, *, help: str, description: str = "", epilog: str = "",
          aliases: tuple[str, ...] = (), usage: str | None = None,
          like: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """A verb's parser; ``like``: with all the options of that verb's parser (create: run's)."""
    p = sub.add_parser(name, aliases=list(aliases), help=help, usage=usage,
                       parents=[like] if like is not None else [common], add_help=like is None,
                       description=description or help[:1].upper() + help[1:] + ".",
                       epilog=epilog, formatter_class=_Formatter)
    p.set_defaults(handler=handler, verb=name)
    return p


_built: dict[str, Parser] = {}


def cached_parser() -> Parser:
    """build_parser(), once per default root: parsing does not change a parser, and
    building one costs milliseconds (a warm server's workers all share the first)."""
    root = default_root()
    if root not in _built:
        _built[root] = build_parser()
    return _built[root]


def build_parser() -> Parser:
    parser = Parser(prog="execdriver", description=MAIN_DESCRIPTION, epilog=MAIN_EPILOG,
                    formatter_class=_Formatter, parents=[_common(default_root())])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=Parser)
    common = _common(argparse.SUPPRESS)

    # -- run ------------------------------------------------------------------
    p = _verb(sub, "run", "run:cmd_run", common, help="create and run a container",
              usage="%(prog)s [options] [--rootfs DIR | --spec FILE | SPEC_OR_BUNDLE] "
                    "[-- CMD [ARG...]]",
              description="""\
Create a container and run it. In the foreground (the default) execdriver waits
for it, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH
to it, removes it when it ends and exits with its exit code. With -d it prints
the id and returns; the container keeps running.

The starting spec is SPEC_OR_BUNDLE (a spec JSON file, or a directory holding
spec.json) or --spec FILE; with only --rootfs DIR it is the driver's default
spec. The flags below override the spec; the result is validated again.""",
              epilog="""\
examples:
  execdriver run --rootfs ./rootfs -- /bin/sh -c 'exit 7'; echo $?     # 7
  execdriver run --driver chroot --rootfs ./rootfs -- /bin/echo hi
  execdriver run -d --name web1 --rootfs ./rootfs -p 8080:80 --network bridge \\
      --memory 64M --cpus 0.5 --pids-limit 100 -- /bin/httpd -f -p 80
  execdriver run ./bundle                        # ./bundle/spec.json
  execdriver run --spec spec.json -e DEBUG=1 -v /srv/data:/data:ro
  execdriver run --rootfs ./rootfs --device /dev/fuse -- /bin/ls -l /dev/fuse""")
    p.add_argument("bundle", metavar="SPEC_OR_BUNDLE", nargs="?",
                   help="a spec JSON file, or a directory holding spec.json")
    p.add_argument("--driver", metavar="NAME", default=DEFAULT_DRIVER,
                   help=f"execution driver (default: {DEFAULT_DRIVER}; see 'execdriver drivers')")
    p.set_defaults(command=[])  # only after --, so SPEC_OR_BUNDLE is never mistaken for it
    src = p.add_argument_group("what to run")
    src.add_argument("--rootfs", metavar="DIR", help="root filesystem directory")
    src.add_argument("--spec", metavar="FILE", help="spec JSON file to start from")
    src.add_argument("--name", metavar="ID", help="container id (default: a random one)")
    src.add_argument("--rm", action="store_true",
                     help="remove the container when it exits (the default in the foreground)")
    src.add_argument("--keep", action="store_true",
                     help="keep a foreground container once it exited (docker's default), "
                          "for info, logs and rm")
    src.add_argument("--init", action="store_true",
                     help="run a tiny init as pid 1 that forwards signals to the command and "
                          "reaps zombies (docker's --init)")
    _process_flags(p)
    ov = p.add_argument_group("spec overrides")
    ov.add_argument("--hostname", metavar="NAME", help="host name inside the container")
    ov.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 64M, 1G")
    ov.add_argument("--memory-swappiness", metavar="0-100", type=int,
                    help="the kernel's swap tendency for the container (cgroup v1; -1: the "
                         "kernel's default)")
    ov.add_argument("--oom-kill-disable", action="store_true",
                    help="at the memory limit, wait instead of being OOM-killed (cgroup v1)")
    ov.add_argument("--cpus", metavar="N", help="CPU limit in CPUs, e.g. 1.5 (quota per 100ms period)")
    ov.add_argument("--pids-limit", metavar="N", type=int, help="maximum number of processes")
    ov.add_argument("--cap-add", metavar="CAP", action="append", default=[],
                    help="add a capability, e.g. NET_ADMIN, or ALL (repeatable)")
    ov.add_argument("--cap-drop", metavar="CAP", action="append", default=[],
                    help="drop a capability, or ALL (repeatable)")
    ov.add_argument("--read-only", action="store_true", help="mount the rootfs read-only")
    ov.add_argument("-v", "--volume", metavar="SRC:DST[:ro]", action="append", default=[],
                    help="bind-mount host path SRC at DST (repeatable)")
    ov.add_argument("--network", metavar="MODE",
                    help="none, host, bridge, slirp4netns[:allow_host_loopback=true] (user-mode "
                    "networking: rootless), container:<id> or ns:<path>")
    ov.add_argument("-p", "--publish", metavar="[IP:]HOSTPORT:PORT[/PROTO]", action="append",
                    default=[], help="publish a container port (needs --network bridge)")
    ov.add_argument("--mount", metavar="type=bind|tmpfs,...", action="append", default=[],
                    help="docker's long form: type=bind,source=SRC,target=DST[,readonly] or "
                         "type=tmpfs,target=DST[,tmpfs-size=N][,tmpfs-mode=OCTAL] (repeatable)")
    ov.add_argument("--tmpfs", metavar="DST[:OPTIONS]", action="append", default=[],
                    help="mount a tmpfs at DST, e.g. /run:size=64m,mode=755 (repeatable)")
    ov.add_argument("--ulimit", metavar="NAME=SOFT[:HARD]", action="append", default=[],
                    help="resource limit, e.g. nofile=1024:4096 (repeatable)")
    ov.add_argument("--sysctl", metavar="KEY=VALUE", action="append", default=[],
                    help="namespaced kernel parameter, e.g. net.ipv4.ip_forward=1 (repeatable)")
    ov.add_argument("--cpuset-cpus", metavar="LIST", help="CPUs the container may use, e.g. 0-1")
    ov.add_argument("--dns", metavar="IP", action="append", default=[],
                    help="nameserver for the container's resolv.conf (repeatable)")
    ov.add_argument("--annotation", metavar="KEY=VALUE", action="append", default=[],
                    help="annotation recorded with the container (repeatable)")
    ov.add_argument("--security-opt", metavar="OPT", action="append", default=[],
                    help="no-new-privileges[=true|false], seccomp=unconfined|FILE.json, "
                         "apparmor=PROFILE (repeatable)")
    _device_flags(ov)
    run = p

    # -- create, start, update ------------------------------------------------
    _verb(sub, "create", "lifecycle:cmd_create", common, like=run,
          help="create a container without starting it",
          usage="%(prog)s [run's options] [--rootfs DIR | --spec FILE | SPEC_OR_BUNDLE] "
                "[-- CMD [ARG...]]",
          description="""\
Set a container up as 'run -d' would (same options), print its id and leave its
process waiting before exec: status 'created' until 'execdriver start ID'. Not
with -d, -t, -i, --rm or --keep: the container is detached, what it writes goes
to 'execdriver logs' (and to 'start -a').""",
          epilog="""\
examples:
  id=$(execdriver create --rootfs ./rootfs --memory 64M -- /bin/echo hi)
  execdriver start -a "$id"                      # prints hi, exits with its code
  execdriver create --name web1 --init --rootfs ./rootfs -- /bin/httpd -f -p 80""")
    p = _verb(sub, "start", "lifecycle:cmd_start", common,
              help="start created containers",
              description="Start containers made by 'execdriver create' (their process execs "
                          "now) and print each id. With --attach (one container): stay in the "
                          "foreground, print what it writes (stdout and stderr), forward "
                          "signals to it and exit with its exit code; it is kept afterwards.",
              epilog="examples:\n  execdriver start web1 web2\n  execdriver start -a job1; echo $?")
    p.add_argument("ids", metavar="ID", nargs="+", help="container ids")
    p.add_argument("-a", "--attach", action="store_true",
                   help="wait in the foreground with its output, exit with its code")
    # -- checkpoint, restore ------------------------------------------------------
    p = _verb(sub, "checkpoint", "checkpoints:cmd_checkpoint", common,
              help="save a running container's processes to disk (CRIU)",
              description="""\
Save the processes of a running container (memory, open files, namespaces) with
CRIU >= 4.1 into an image directory, and print its path. The container then
stops (its state keeps the checkpoint), unless --leave-running. 'execdriver
restore' brings it back, as the same container or a copy under a new id.
Not for containers with a terminal (-t) or on the bridge network.""",
              epilog="""\
examples:
  execdriver checkpoint job1                     # -> $ROOT/.checkpoints/job1
  execdriver restore job1                        # job1 runs on from where it was
  execdriver checkpoint --leave-running --image-path /var/tmp/job1.ck job1
  execdriver restore --image-path /var/tmp/job1.ck --name job1-copy

CRIU: $EXECDRIVER_CRIU, else the one scripts/build-criu.sh built
(/usr/local/lib/execdriver-criu/criu), else criu on PATH.""")
    _id(p)
    p.add_argument("--image-path", metavar="DIR",
                   help="where to write the checkpoint (default: .checkpoints/ID in the "
                        "state root)")
    p.add_argument("--work-path", metavar="DIR", help="where CRIU writes its log (default: "
                   "the image directory)")
    p.add_argument("--leave-running", action="store_true",
                   help="keep the container running after the checkpoint")
    p.add_argument("--tcp-established", action="store_true",
                   help="also save established TCP connections")
    p.add_argument("--file-locks", action="store_true", help="also save file locks")
    p = _verb(sub, "restore", "checkpoints:cmd_restore", common,
              help="run a checkpointed container again (CRIU)",
              description="""\
Make a running, detached container from a checkpoint and print its id: its
processes go on from where they were saved. The id is --name, else ID (the
stopped, checkpointed container of that id is replaced), else the id saved in
the checkpoint.""",
              epilog="""\
examples:
  execdriver restore job1
  execdriver restore --name job2 job1            # a copy of job1's checkpoint as job2
  execdriver restore --image-path /var/tmp/job1.ck --name job1-copy""")
    p.add_argument("id", metavar="ID", nargs="?",
                   help="the checkpointed container (its checkpoint's default place)")
    p.add_argument("--image-path", metavar="DIR",
                   help="the checkpoint to restore (default: .checkpoints/ID in the state root)")
    p.add_argument("--work-path", metavar="DIR", help="where CRIU writes its log (default: "
                   "the container's state directory)")
    p.add_argument("--name", metavar="NEWID", help="the restored container's id")
    p = _verb(sub, "update", "lifecycle:cmd_update", common,
              help="change the resource limits of containers",
              description="Change the cgroup limits of created, running or paused containers. "
                          "Only what is given changes; the new limits are validated with the "
                          "ones each container has, and kept with it (info --format json).",
              epilog="""\
examples:
  execdriver update --memory 256M --memory-swap 512M web1
  execdriver update --cpus 0.5 --pids-limit 200 web1 web2
  execdriver update --cpuset-cpus 0 --cpu-shares 512 --blkio-weight 300 web1""")
    p.add_argument("ids", metavar="ID", nargs="+", help="container ids")
    for flag, help in (("memory", "memory limit, e.g. 64M, 1G"),
                       ("memory-swap", "memory + swap limit, or -1 for unlimited swap"),
                       ("cpus", "CPU limit in CPUs, e.g. 1.5 (quota per 100ms period)"),
                       ("cpu-quota", "CFS quota in microseconds per period"),
                       ("cpu-period", "CFS period in microseconds"),
                       ("cpu-shares", "relative CPU weight (default 1024)"),
                       ("cpuset-cpus", "CPUs the container may use, e.g. 0-1"),
                       ("pids-limit", "maximum number of processes"),
                       ("blkio-weight", "block I/O weight, 10-1000")):
        p.add_argument(f"--{flag}", metavar="VALUE", help=help)
    _format(p)

    # -- exec -----------------------------------------------------------------
    p = _verb(sub, "exec", "run:cmd_exec", common,
              help="run another process in a running container",
              usage="%(prog)s [options] ID -- CMD [ARG...]",
              description="""\
Run a command inside a running container, with the container's environment,
user and working directory unless overridden. Exits with the command's exit code
(with -d: prints the process id and returns).""",
              epilog="""\
examples:
  execdriver exec web1 -- /bin/ps
  execdriver exec -e DEBUG=1 -w /tmp -u 65534 web1 -- /bin/sh -c 'id; pwd'
  execdriver exec -t -i web1 -- /bin/sh""")
    _id(p)
    p.add_argument("command", metavar="CMD", nargs="*", help="command and arguments (after --)")
    _process_flags(p)

    # -- kill, pause, unpause ------------------------------------------------
    p = _verb(sub, "kill", "containers:cmd_kill", common, help="send a signal to a container",
              description="Send a signal (default TERM) to a container's init process, or to "
                          "every process in it with --all.",
              epilog="""\
examples:
  execdriver kill web1              # SIGTERM
  execdriver kill web1 KILL         # also SIGKILL, kill, 9
  execdriver kill --all web1 HUP""")
    _id(p)
    p.add_argument("signal", metavar="SIGNAL", nargs="?", help="name or number (default: TERM)")
    p.add_argument("-s", "--signal", dest="signal_opt", metavar="SIGNAL", help="same as SIGNAL")
    p.add_argument("-a", "--all", action="store_true", help="signal every process in the container")

    p = _verb(sub, "stop", "containers:cmd_stop", common,
              help="stop containers: TERM, then KILL after a grace period",
              description="Send SIGTERM (or --signal) to each container's init; if it has not "
                          "stopped after --time seconds, SIGKILL everything in it. Prints each "
                          "id once it stopped. The container is kept (remove it with rm).",
              epilog="examples:\n  execdriver stop web1\n  execdriver stop -t 0 web1 web2")
    p.add_argument("ids", metavar="ID", nargs="+", help="container ids")
    p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                   help="grace period before SIGKILL (default %(default)g)")
    p.add_argument("-s", "--signal", default="TERM", metavar="SIGNAL",
                   help="the first signal (default %(default)s)")
    p = _verb(sub, "pause", "containers:cmd_pause", common, help="freeze every process in a container",
              epilog="example:\n  execdriver pause web1")
    _id(p)
    p = _verb(sub, "unpause", "containers:cmd_unpause", common, aliases=("resume",),
              help="thaw a paused container", epilog="example:\n  execdriver resume web1")
    _id(p)

    # -- queries --------------------------------------------------------------
    p = _verb(sub, "info", "containers:cmd_info", common, aliases=("state",),
              help="show a container's status, pid and exit status",
              epilog="examples:\n  execdriver info web1\n  execdriver state --format json web1")
    _id(p)
    _format(p)
    p = _verb(sub, "list", "containers:cmd_list", common, aliases=("ls",),
              help="list containers of every driver",
              epilog="examples:\n  execdriver list\n  execdriver ls -q\n  execdriver list --format json")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
    _format(p)
    p = _verb(sub, "logs", "containers:cmd_logs", common,
              help="print what a detached container wrote",
              description="Print the stdout and stderr (interleaved) of a container started "
                          "with --detach and no other output; kept until it is removed.",
              epilog="example:\n  execdriver logs web1")
    _id(p)
    p = _verb(sub, "events", "containers:cmd_events", common,
              help="follow a container's lifecycle events until it exits",
              description="Print the container's state now (start or pause), then each "
                          "change as it happens -- pause, resume, oom, exit (with its code), "
                          "destroy -- and return when it has exited or was removed. Works for "
                          "a container another process started.",
              epilog="examples:\n  execdriver events web1\n  execdriver events --format json web1")
    _id(p)
    p.add_argument("--interval", type=float, default=0.05, metavar="SECONDS",
                   help="how often to look (default %(default)g)")
    _format(p)
    p = _verb(sub, "wait", "containers:cmd_wait", common,
              help="wait for a container to stop and print its exit code",
              description="Block until the container stops, then print its exit code "
                          "(128+N when killed by signal N). Works from any shell, for a "
                          "container another process started.",
              epilog="examples:\n  execdriver wait web1\n  execdriver wait --timeout 30 "
                     "--format json web1")
    _id(p)
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up after SECONDS (an error, exit 125)")
    _format(p)
    p = _verb(sub, "ps", "containers:cmd_ps", common, help="list the processes in a container",
              epilog="example:\n  execdriver ps web1")
    _id(p)
    _format(p)
    p = _verb(sub, "stats", "stats:cmd_stats", common,
              help="show CPU, memory, pids, network and block I/O usage",
              description="""\
Show resource usage of the given containers, or of every running one. Once by
default; with --watch, a live view refreshed every second until Ctrl-C (with
--format json: one JSON line per refresh).""",
              epilog="examples:\n  execdriver stats\n  execdriver stats --watch web1 web2\n"
                     "  execdriver stats --format json web1")
    p.add_argument("ids", metavar="ID", nargs="*", help="containers (default: all running)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")
    mode.add_argument("--no-stream", action="store_true", help="print once and exit (the default)")
    _format(p)

    # -- terminate ------------------------------------------------------------
    p = _verb(sub, "terminate", "containers:cmd_terminate", common, aliases=("delete", "rm"),
              help="remove containers and all they created",
              description="""\
Remove containers: kill what is left of them and undo everything they created
(cgroups, mounts, network interfaces, state). A running or paused container is
refused unless --force is given.""",
              epilog="examples:\n  execdriver rm web1\n  execdriver terminate --force web1 web2")
    p.add_argument("ids", metavar="ID", nargs="+", help="container ids")
    p.add_argument("-f", "--force", action="store_true", help="remove even if it is running")

    # -- spec, drivers, rootfs ------------------------------------------------
    p = _verb(sub, "spec", "specfile:cmd_spec", common,
              help="print a default spec, or the spec's JSON Schema",
              usage="%(prog)s [options] [-- CMD [ARG...]]",
              description="""\
Print a default spec for a driver as JSON (to edit and give to 'run --spec' or
to put in a bundle directory as spec.json), or the JSON Schema of the spec.
A relative root path is taken from the spec file's folder.""",
              epilog="""\
examples:
  mkdir bundle && execdriver rootfs busybox bundle/rootfs
  execdriver spec -o bundle/spec.json && execdriver run bundle
  execdriver spec --driver lxc --rootfs /srv/rootfs -- /bin/httpd -f
  execdriver spec --schema > spec.schema.json""")
    p.add_argument("--driver", metavar="NAME", default=DEFAULT_DRIVER,
                   help=f"whose default spec (default: {DEFAULT_DRIVER})")
    p.add_argument("--rootfs", metavar="DIR", default="rootfs",
                   help="root.path of the spec (default: rootfs)")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema instead")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("command", metavar="CMD", nargs="*", help="process.args (after --)")

    p = _verb(sub, "drivers", "drivers:cmd_drivers", common,
              help="list drivers, whether they work here, and features",
              epilog="examples:\n  execdriver drivers\n  execdriver drivers --format json")
    _format(p)

    p = _verb(sub, "completion", "completion:cmd_completion", common,
              help="print a shell completion script",
              description="Print a completion script for bash or zsh, generated from this "
                          "command line's own parser: commands, options, paths and container ids.",
              epilog="examples:\n  source <(execdriver completion bash)\n"
                     "  execdriver completion bash > /etc/bash_completion.d/execdriver\n"
                     "  execdriver completion zsh > \"${fpath[1]}/_execdriver\"")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")

    p = _verb(sub, "server", "server:cmd_server", common,
              help="a warm server that makes every later command start fast",
              description="""\
Start, stop or query the warm server. A cold execdriver process spends most of
its time importing (pydantic, the spec models, the drivers); while a server
runs, execdriver and execdriver-oci (state, start, kill, delete, ...) hand
their command line, stdio, cwd and environment to it, and a worker forked from
the already-loaded server runs the same command. Signals to the client reach
the worker; killing the client kills the worker, as it would kill a cold
execdriver. A client in other namespaces, of another user or installation, or
after the code changed runs the command itself. Set EXECDRIVER_SERVER=off to
never use a server; EXECDRIVER_SERVER_SOCKET picks another socket.""",
              epilog="""\
examples:
  execdriver server start                 detach a server (default socket)
  execdriver server status --format json
  execdriver server run --idle-timeout 600   in the foreground (systemd, tests)
  execdriver server stop""")
    p.add_argument("action", choices=("start", "stop", "status", "run"), metavar="ACTION",
                   help="start (detached), run (in the foreground), stop, or status")
    p.add_argument("--socket", metavar="PATH",
                   help="socket path (default: $EXECDRIVER_SERVER_SOCKET, else one per "
                        "installation under /run/execdriver-server)")
    p.add_argument("--idle-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="exit after this long without a client (default 0: never)")
    p.add_argument("--leave-cgroup", action="store_true",
                   help="run: move into the root cgroup first, so the server does not keep "
                        "the cgroup of whatever started it in use (start, and the start on "
                        "first use, always do)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="stop: how long to wait for the server to end (default 10)")
    _format(p)

    p = _verb(sub, "rootfs", "missing", common, help="build or import a root filesystem",
              epilog="""\
examples:
  execdriver rootfs busybox ./rootfs
  execdriver rootfs import alpine.tar.gz ./alpine
  docker export web | execdriver rootfs import - ./web""")
    rsub: argparse._SubParsersAction[argparse.ArgumentParser] = p.add_subparsers(
        title="rootfs commands", metavar="ACTION", parser_class=Parser)
    r = rsub.add_parser("busybox", parents=[common], formatter_class=_Formatter,
                        help="a minimal rootfs from the host's static busybox",
                        description="Create a minimal rootfs in DIR: the host's static busybox, "
                                    "its applet links and a few /etc files.",
                        epilog="example:\n  execdriver rootfs busybox ./rootfs")
    r.add_argument("dir", metavar="DIR")
    r.set_defaults(handler="rootfs:cmd_busybox", verb="rootfs busybox")
    r = rsub.add_parser("import", parents=[common], formatter_class=_Formatter,
                        help="unpack an exported image tarball (tar, .gz, .bz2, .xz, or - for stdin)",
                        description="""\
Unpack an exported image tarball (docker/podman export) into DIR, which must be
empty or missing. Members that would land outside DIR (absolute paths, '..',
symlinks or hardlinks leading out, writes through symlinks) are refused, as are
device nodes unless --allow-devices; on any error DIR is left as it was.""",
                        epilog="""\
examples:
  execdriver rootfs import alpine.tar.gz ./alpine
  podman export web | execdriver rootfs import - ./web""")
    r.add_argument("tarball", metavar="TARBALL", help="the archive, or - for stdin")
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--allow-devices", action="store_true", help="create device nodes too")
    r.set_defaults(handler="rootfs:cmd_import", verb="rootfs import")
    return parser
