"""``execdriver-oci``: runc's command line over the native driver.

Global options come before the verb (``execdriver-oci --root R --log F
--log-format json create --bundle B ID``). Errors are one line, exit status 1
(255 for ``exec``, as runc). ``state``, ``start``, ``kill`` and ``delete`` are
parsed by hand (argparse alone costs more than the verb) and, for a stopped
container, never load pydantic or a driver; the other verbs use parser.py.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

from ..userroot import user_root
from .errors import UsageError
from .log import Log
from .state import DEFAULT_ROOT, OCI_VERSION

EXIT_ERROR = 1
EXIT_EXEC_ERROR = 255


# --- verbs ---------------------------------------------------------------------

def _context(args: Any, log: Log) -> Any:
    from .lifecycle import Context
    return Context(root=args.root, warn=log.warning, debug=log.debug,
                   systemd_cgroup=bool(getattr(args, "systemd_cgroup", False)))


def dispatch(args: Any, log: Log) -> int:
    from . import lifecycle
    verb, root = args.verb, args.root
    ctx = _context(args, log)
    if verb == "state":
        print(json.dumps(lifecycle.state_of(ctx, args.id), indent=2))
    elif verb == "start":
        lifecycle.start(ctx, args.id)
    elif verb == "kill":
        from ..signals import parse_signal
        lifecycle.kill(ctx, args.id, parse_signal(args.signal), args.all)
    elif verb == "delete":
        lifecycle.delete(ctx, args.id, args.force)
    elif verb in ("create", "run"):
        if args.preserve_fds < 0:
            raise UsageError(f"{verb} --preserve-fds: must be >= 0")
        common = {"pid_file": args.pid_file, "console_socket": args.console_socket,
                  "no_pivot": args.no_pivot, "preserve_fds": args.preserve_fds}
        if verb == "create":
            lifecycle.create(ctx, args.id, args.bundle, **common)
        else:
            if args.no_subreaper and not args.detach:
                raise UsageError("run --no-subreaper: not supported (run reaps the container "
                                 "itself)")
            return lifecycle.run(ctx, args.id, args.bundle, detach=args.detach,
                                 keep=args.keep, **common)
    elif verb in ("checkpoint", "restore"):
        return _checkpoint_restore(args, ctx)
    elif verb == "exec":
        return _exec(args, log)
    elif verb in ("pause", "resume"):
        getattr(lifecycle, verb)(ctx, args.id)
    elif verb == "ps":
        from .queries import ps
        sys.stdout.write(ps(root, args.id, args.format, args.ps_args))
    elif verb == "list":
        from .queries import format_list, list_states
        sys.stdout.write(format_list(list_states(root), args.format, args.quiet))
    elif verb == "features":
        from .queries import features
        print(json.dumps(features(), indent=4))
    elif verb == "spec":
        from .queries import write_spec
        write_spec(args.bundle, rootless=args.rootless)
    elif verb == "update":
        _update(args)
    elif verb == "events":
        from .queries import events, parse_duration
        events(root, args.id, args.stats, parse_duration(args.interval))
    return 0


def _checkpoint_restore(args: Any, ctx: Any) -> int:
    from . import lifecycle
    verb = args.verb
    refused = [flag for flag, given in (
        ("--pre-dump", getattr(args, "pre_dump", False)),
        ("--lazy-pages", args.lazy_pages),
        ("--parent-path", getattr(args, "parent_path", None)),
        ("--page-server", getattr(args, "page_server", None)),
        ("--status-fd", getattr(args, "status_fd", None)),
        ("--empty-ns", args.empty_ns),
        ("--lsm-profile", getattr(args, "lsm_profile", None)),
        ("--lsm-mount-context", getattr(args, "lsm_mount_context", None))) if given]
    if refused:
        raise UsageError(f"{verb} {refused[0]}: not supported")
    if args.criu:
        os.environ["EXECDRIVER_CRIU"] = args.criu
    common = {"work_path": args.work_path, "tcp_established": args.tcp_established,
              "file_locks": args.file_locks}
    if verb == "checkpoint":
        lifecycle.checkpoint(ctx, args.id, args.image_path, leave_running=args.leave_running,
                             ext_unix_sk=args.ext_unix_sk, shell_job=args.shell_job, **common)
        return 0
    return lifecycle.restore(ctx, args.id, args.bundle, args.image_path, pid_file=args.pid_file,
                             console_socket=args.console_socket, detach=args.detach,
                             no_pivot=args.no_pivot, **common)


def _exec(args: Any, log: Log) -> int:
    from . import lifecycle
    if args.cgroup:
        raise UsageError("exec --cgroup: sub-cgroups are not supported")
    if args.process_label:
        raise UsageError("exec --process-label: SELinux is not supported")
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    opts = lifecycle.ExecOptions(
        command=command, process_file=args.process, detach=args.detach, pid_file=args.pid_file,
        env=args.env, cwd=args.cwd, user=args.user, additional_gids=args.additional_gids,
        caps=args.cap, no_new_privs=args.no_new_privs, apparmor=args.apparmor,
        preserve_fds=args.preserve_fds, ignore_paused=args.ignore_paused, tty=args.tty,
        console_socket=args.console_socket)
    return lifecycle.exec_(_context(args, log), args.id, opts)


def _update(args: Any) -> None:
    from .queries import UPDATE_FLAGS, resource_changes, update
    for key, value in vars(args).items():
        if key.startswith("unsupported_") and value is not None:
            flag = key.removeprefix("unsupported_").replace("_", "-")
            raise UsageError(f"update --{flag}: not supported")
    resources = None
    if args.resources:
        from .config import read_json
        resources = read_json(args.resources, f"update --resources {args.resources}")
    flags = {name: getattr(args, name) for name in UPDATE_FLAGS}
    changes = resource_changes(resources, flags)
    if not changes:
        raise UsageError("update: nothing to change (give --resources or a limit flag)")
    update(args.root, args.id, changes)


# --- entry point -----------------------------------------------------------------

FAST_VERBS = {"state": (), "start": (), "kill": ("-a", "--all"), "delete": ("-f", "--force")}
_GLOBAL_VALUES = {"--root", "--log", "--log-format", "--rootless", "--criu"}
_GLOBAL_FLAGS = {"--debug", "--systemd-cgroup", "-v", "--version"}


def parse_fast(argv: list[str]) -> Any:
    """Parse the hot verbs (state, start, kill, delete) without argparse, whose
    import alone costs more than the verb. None: let argparse do it."""
    ns = SimpleNamespace(root=os.environ.get("EXECDRIVER_OCI_ROOT") or user_root(DEFAULT_ROOT),
                            log=None, log_format="text", debug=False, systemd_cgroup=False,
                            rootless="auto", criu=None, version=False, verb=None)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name, eq, value = argv[i].partition("=")
        if name in _GLOBAL_VALUES:
            if not eq:
                i += 1
                if i == len(argv):
                    return None
                value = argv[i]
            setattr(ns, name[2:].replace("-", "_"), value)
        elif name in _GLOBAL_FLAGS and not eq:
            key = "version" if name == "-v" else name[2:].replace("-", "_")
            setattr(ns, key, True)
        else:
            return None
        i += 1
    if ns.log_format not in ("text", "json") or ns.rootless not in ("true", "false", "auto"):
        return None
    if i == len(argv) or argv[i] not in FAST_VERBS or ns.version:
        return None
    ns.verb, rest = argv[i], argv[i + 1:]
    flags = FAST_VERBS[ns.verb]
    ns.all = ns.force = False
    while rest and rest[0] in flags:
        setattr(ns, "all" if ns.verb == "kill" else "force", True)
        rest = rest[1:]
    if not rest or rest[0].startswith("-"):
        return None
    ns.id = rest[0]
    if ns.verb == "kill" and len(rest) <= 2:
        ns.signal = rest[1] if len(rest) == 2 else "SIGTERM"
        return ns
    return ns if len(rest) == 1 else None


def error_message(exc: BaseException) -> str:
    from ..errors import ExecDriverError, SpecError
    if isinstance(exc, SpecError):
        return "invalid config.json: " + "; ".join(exc.problems)
    if isinstance(exc, ExecDriverError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _parse(argv: list[str]) -> Any:
    from .parser import build_parser
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    log = Log(debug="--debug" in argv)
    verb = None
    try:
        args = parse_fast(argv) or _parse(argv)
        log = Log(args.log, args.log_format, args.debug)
        verb = args.verb
        if args.version:
            from .. import __version__
            print(f"execdriver-oci version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if verb is None:
            from .parser import build_parser
            build_parser().print_help()
            return 0
        if args.rootless == "true" and os.geteuid() == 0:
            raise UsageError("--rootless true: as root it is not supported; run execdriver-oci "
                             "as the unprivileged user (rootless is then automatic)")
        log.debug(f"execdriver-oci {' '.join(argv)}")
        return dispatch(args, log)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``list | head``): be quiet, also at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure is one line, like runc
        if log.level <= 10:
            import traceback
            log.debug(" | ".join(traceback.format_exception(exc)))
        msg = error_message(exc)
        if verb == "exec":
            log.error(f"exec failed: {msg}")
            return EXIT_EXEC_ERROR
        log.error(msg)
        return EXIT_ERROR
