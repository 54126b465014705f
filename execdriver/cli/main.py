"""The ``execdriver`` command: parse, dispatch to a verb, turn errors into exit codes.

Only os and sys are imported up front (a warm server may run the command:
see warm.py); argparse, each verb's module and what it needs (pydantic, a
driver) are imported when the command runs here.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False   # (typing itself costs 3 ms at start-up; mypy treats this as True)
if TYPE_CHECKING:   # argparse only when a command is parsed here, not for the warm server
    import argparse

EXIT_ERROR = 125        # execdriver itself failed (docker's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_PIPE = 141         # stdout closed early (128 + SIGPIPE)
EXIT_NOT_EXECUTABLE = 126   # the command exists but cannot be run (docker, the shells)
EXIT_NOT_FOUND = 127        # the command was not found


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split at the first ``--``: options before, the container's command after."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line (UsageError on bad input); the command after -- goes to args.command."""
    from execdriver.cli.parser import UsageError, cached_parser

    parser = cached_parser()
    head, command = split_command(argv)
    args, extra = parser.parse_known_args(head)
    if args.version or getattr(args, "handler", None) is None:
        if extra:       # (e.g. a mistyped global option with no command)
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}", "execdriver")
        return args
    prog = f"execdriver {args.verb}"
    if extra:
        hint = " (put the container's command after --)" if hasattr(args, "command") else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}{hint}", prog)
    if args.handler == "missing":
        raise UsageError("missing action: busybox or import", prog)
    if command is not None:
        if not hasattr(args, "command"):
            raise UsageError(f"unexpected arguments after --: {' '.join(command)}", prog)
        args.command = list(args.command) + command
    return args


def one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).strip()


def error_lines(exc: BaseException) -> list[str]:
    """What to print (after ``execdriver: ``) for an error: one line, or one per spec problem."""
    from execdriver.cli.parser import UsageError
    from execdriver.errors import ExecDriverError, SpecError

    if isinstance(exc, UsageError):
        verb = exc.prog.removeprefix("execdriver").strip()
        return [f"{verb + ': ' if verb else ''}{exc} (see '{exc.prog} --help')"]
    if isinstance(exc, SpecError):
        return exc.lines()
    if isinstance(exc, ExecDriverError):
        return [str(exc)]
    if isinstance(exc, OSError) and exc.strerror:
        where = f" path={exc.filename}" if exc.filename else ""
        return [f"{type(exc).__name__}{where}: {exc.strerror}"]
    return [f"internal error: {type(exc).__name__}: {exc}"]


def report(exc: BaseException, debug: bool = False) -> None:
    if debug:
        import traceback
        traceback.print_exception(exc, file=sys.stderr)
    for line in error_lines(exc):
        print(f"execdriver: {one_line(line)}", file=sys.stderr)


def run_verb(args: argparse.Namespace) -> int:
    module, func = args.handler.split(":")
    # __import__ (not importlib) so that -X importtime shows the verb's module too.
    handler = getattr(__import__(f"execdriver.cli.{module}", fromlist=[func]), func)
    return int(handler(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """The console script: through a running ``execdriver server`` if there is one."""
    if argv is None and not os.environ.pop("EXECDRIVER_SERVER_TRIED", None):
        # (the compiled front sets it when it asked a server already: then nothing of
        # the client, not even its imports, is worth paying for again)
        from execdriver.cli import warm
        code = warm.call("execdriver", sys.argv[1:])
        if code is not None:
            return code
    return run_main(sys.argv[1:] if argv is None else list(argv))


def run_main(argv: list[str]) -> int:
    """Parse and run one command line in this process."""
    import signal
    # A shell starts background jobs with SIGINT ignored, and Python then keeps
    # it ignored: Ctrl-C (or kill -INT) must still stop us cleanly.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    debug = "--debug" in argv or bool(os.environ.get("EXECDRIVER_DEBUG"))
    try:
        args = parse_args(argv)
        debug = debug or bool(getattr(args, "debug", False))
        if args.version:
            from execdriver import __version__
            print(f"execdriver {__version__}")
            return 0
        if getattr(args, "handler", None) is None:
            from execdriver.cli.parser import build_parser
            build_parser().print_help()
            return 0
        return run_verb(args)
    except KeyboardInterrupt:
        if debug:
            import traceback
            traceback.print_exc()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Reader went away (``execdriver list | head``): be quiet, also at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_PIPE
    except SystemExit:
        raise  # --help and --version
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and 125
        report(exc, debug)
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """125, or as docker and the shells: 127 for a command not found, 126 for one
    that cannot be executed (the container's process never started)."""
    import errno
    step = getattr(exc, "step", None) or ""
    if step.startswith("exec args="):
        if getattr(exc, "errno", None) == errno.ENOENT:
            return EXIT_NOT_FOUND
        if getattr(exc, "errno", None) in (errno.EACCES, errno.ENOEXEC, errno.EISDIR):
            return EXIT_NOT_EXECUTABLE
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
