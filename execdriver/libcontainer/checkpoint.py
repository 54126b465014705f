"""Checkpoint and restore of a container with CRIU.

``checkpoint`` dumps the container's process tree (criu dump of its init, with its
namespaces, mounts, memory and open files) into an image directory, together with
``execdriver-checkpoint.json``: the container's Config (and spec) and how its stdio
was connected, so that ``restore`` can make a container from the directory alone,
under the same id or a new one.

What CRIU cannot see from inside the container is named for it, as runc does:
bind mounts from the host are external mounts (``--external mnt[DEST]:DEST`` on
dump, ``mnt[DEST]:SOURCE`` on restore); the init's stdio, opened on the host, are
external files or pipes that restore hands over again with ``--inherit-fd``; a
network namespace joined by path is an external namespace, joined again on restore.

Restore runs criu as the child of the container's monitor (a child subreaper): the
restored init is re-parented to the monitor when criu exits (``--restore-detached``),
and the monitor then reaps it and records its exit, as for a created container. criu
is placed in the container's new cgroups before it starts, so the restored tasks land
there (``--manage-cgroups=ignore``: the cgroup limits are the Config's, applied anew).

CRIU >= 4.1 is needed on kernels with a split vDSO (6.x): see :func:`find_criu`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ContainerExists, ExecDriverError, InvalidState, StepFailed, UnsupportedHost

if TYPE_CHECKING:
    from ..config import Config
    from ..state import StateStore
    from .container import Container, Warn

#: the oldest CRIU that works on this kernel (split vDSO support came in 4.1)
CRIU_MIN = (4, 1)
#: where scripts/build-criu.sh installs the CRIU it builds (EXECDRIVER_CRIU_DIR overrides)
BUILT_CRIU_DIR = "/usr/local/lib/execdriver-criu"
METADATA_FILE = "execdriver-checkpoint.json"
DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
NETNS_KEY = "extRootNetNS"      # (runc's name for the same external)
RESTORE_TIMEOUT = 120.0

_usable: dict[tuple[str, int], tuple[bool, str, str]] = {}


# --- finding CRIU --------------------------------------------------------------------

def _version(criu: str) -> str:
    try:
        out = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _examine(criu: str) -> tuple[bool, str, str]:
    """(usable, version, why not) for the binary ``criu``; cached per path and mtime."""
    try:
        key = (criu, os.stat(criu).st_mtime_ns)
    except OSError:
        return False, "", "not found"
    if key in _usable:
        return _usable[key]
    version = _version(criu)
    if not version:
        result = (False, "", "`criu --version` says no version")
    else:
        try:
            check = subprocess.run([criu, "check"], capture_output=True, timeout=60,
                                   check=False).returncode == 0
        except (OSError, subprocess.SubprocessError):
            check = False
        new_enough = _version_tuple(version) >= CRIU_MIN
        if new_enough and check:
            result = (True, version, "")
        elif not check:
            result = (False, version, "its `criu check` fails on this kernel")
        else:
            result = (False, version, "too old")
    _usable[key] = result
    return result


def criu_candidates() -> list[str]:
    """Where CRIU is looked for: $EXECDRIVER_CRIU alone when set; else the one
    scripts/build-criu.sh built, then criu on PATH."""
    explicit = os.environ.get("EXECDRIVER_CRIU")
    if explicit:
        return [explicit]
    out = [os.path.join(os.environ.get("EXECDRIVER_CRIU_DIR") or BUILT_CRIU_DIR, "criu")]
    on_path = shutil.which("criu", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if on_path and on_path not in out:
        out.append(on_path)
    return out


def find_criu(verb: str = "checkpoint") -> str:
    """The path of a usable CRIU, or UnsupportedHost in one line saying what is needed."""
    need = f"{verb} needs CRIU >= {'.'.join(map(str, CRIU_MIN))}"
    found = []
    for path in criu_candidates():
        usable, version, why = _examine(path)
        if usable:
            return path
        if why != "not found":
            found.append(f"found {version or 'an unknown version'} at {path} ({why})")
    if not found:
        where = ", ".join(criu_candidates())
        raise UnsupportedHost(f"{need}; none found ({where}): build one with "
                              "scripts/build-criu.sh or set EXECDRIVER_CRIU", step=verb)
    raise UnsupportedHost(f"{need}; {'; '.join(found)}", step=verb)


def criu_available() -> tuple[bool, str]:
    """(True, path) with a usable CRIU, else (False, the reason) (for tests and ``drivers``)."""
    try:
        return True, find_criu()
    except UnsupportedHost as exc:
        return False, str(exc)


# --- checkpoint -----------------------------------------------------------------------

def _descriptor(pid: int, fd: int) -> dict[str, Any]:
    """How the init's stdio fd ``fd`` is connected: its CRIU key and whether it is
    external (dumped as a reference, handed over again on restore)."""
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    if link.startswith(("pipe:", "socket:")):
        return {"fd": fd, "path": link, "key": link, "external": False}
    if link.startswith("anon_inode:"):
        return {"fd": fd, "path": link, "key": "", "external": False}
    st = os.stat(f"/proc/{pid}/fd/{fd}")
    if link.startswith("/dev/pts/") or link == "/dev/console":
        return {"fd": fd, "path": link, "key": f"tty[{st.st_rdev:x}:{st.st_dev:x}]",
                "external": True, "tty": True}
    mnt_id = 0
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                mnt_id = int(line.split()[1])
    return {"fd": fd, "path": link, "key": f"file[{mnt_id:x}:{st.st_ino:x}]", "external": True,
            "mode": st.st_mode & 0o7777}


def _bind_mounts(config: Config) -> list[tuple[str, str]]:
    """(destination, source) of the mounts bound from the host."""
    out = []
    for m in config.mounts:
        if (m.type == "bind" or "bind" in m.options or "rbind" in m.options) and m.source:
            out.append((m.destination, m.source))
    return out


def _cgroup_binds(pid: int) -> list[str]:
    """Mount points of the cgroup hierarchies the container sees below their root (no
    cgroup namespace: a bind of its cgroup's directory, as podman's and docker's on
    cgroup v1): external mounts for CRIU, bound to the new cgroup's directories on restore."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] in ("cgroup", "cgroup2") and fields[3] != "/":
                out.append(fields[4])
    return out


def _freezer_dir(c: Container) -> str | None:
    """The directory of the container's freezer (v1) or of its cgroup (v2)."""
    cg = c.cgroup()
    if cg is None or not cg.exists():
        return None
    rec = cg.record()
    path = rec.get("path") if rec.get("version") == 2 else rec.get("paths", {}).get("freezer")
    return path if isinstance(path, str) else None


def _make_mount_targets(config: Config) -> None:
    """Create the rootfs's missing targets of bind mounts (as create does; CRIU does not):
    a new container's rootfs lacks those its runtime created in the old one's (podman's
    /run/.containerenv). Not below the container's own filesystems (a tmpfs /dev):
    CRIU restores what those held."""
    from ..kernel import mounts
    inner = [m.destination.rstrip("/") + "/" for m in config.mounts
             if m.type != "bind" and "bind" not in m.options and "rbind" not in m.options]
    root_fd = os.open(config.root.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for dest, source in _bind_mounts(config):
            if any(dest.startswith(prefix) for prefix in inner):
                continue
            try:
                os.close(mounts.make_target(root_fd, dest, os.path.isdir(source)))
            except OSError:
                pass            # (a read-only rootfs: CRIU says what is missing)
    finally:
        os.close(root_fd)


def _joined_netns(config: Config) -> str | None:
    for ns in config.namespaces:
        if ns.type == "network" and ns.path:
            return ns.path
    return None


def _refuse(config: Config, container_id: str) -> None:
    if config.network.mode == "bridge":
        raise StepFailed("checkpoint", "a container on the bridge network (a veth CRIU would "
                         "have to recreate) cannot be checkpointed: use --network none, host or "
                         "a netns path", container_id=container_id)
    joined = [ns.type for ns in config.namespaces if ns.path and ns.type != "network"]
    if joined:
        raise StepFailed("checkpoint", f"namespaces joined by path ({', '.join(joined)}) "
                         "cannot be checkpointed", container_id=container_id)


def _criu_errors(log: Path) -> str:
    """The ``Error`` lines of a criu log that say why, for a one-line message: the first
    two (the cause) and the last (what failed)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "criu wrote no log"
    errors = [ln.split("): ", 1)[-1].strip() for ln in lines
              if "Error (" in ln and "RLIMIT_NOFILE" not in ln]
    if not errors:
        errors = [ln.strip() for ln in lines[-1:]]
    if len(errors) > 3:
        errors = [*errors[:2], "...", errors[-1]]
    return "; ".join(dict.fromkeys(errors))


def checkpoint(c: Container, image_dir: str | os.PathLike[str], *, leave_running: bool = False,
               tcp_established: bool = False, file_locks: bool = False,
               ext_unix_sk: bool = False, shell_job: bool = False,
               work_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Dump the running container ``c`` into ``image_dir`` (created if missing; it must
    hold no checkpoint yet). Without ``leave_running`` the container's processes end
    (the container is then stopped; its state records the checkpoint). Returns the
    metadata written beside the images. On failure the container runs on and a
    directory this call created is removed."""
    from .container import PAUSED, RUNNING
    criu = find_criu("checkpoint")
    cid = c.id
    images = Path(image_dir).absolute()
    with c.store.lock(cid):
        c.refresh()
        status = c.status()
        if status not in (RUNNING, PAUSED):
            raise InvalidState(f"checkpoint id={cid}: container is {status}, not running",
                               container_id=cid, step="checkpoint")
        config = c.config
        _refuse(config, cid)
        pid = c.state.pid or 0
        descriptors = [_descriptor(pid, fd) for fd in (0, 1, 2)]
        if any(d.get("tty") for d in descriptors) and not shell_job:
            raise StepFailed("checkpoint", "a container with a terminal cannot be checkpointed "
                             "(its pty lives outside it)", container_id=cid)
        created = not images.exists()
        if not created and (images / METADATA_FILE).exists():
            raise ContainerExists(f"checkpoint image-path={images}: holds a checkpoint already")
        images.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(work_dir).absolute() if work_dir else images
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [criu, "dump", "--tree", str(pid), "--images-dir", str(images),
                "--work-dir", str(work), "--log-file", DUMP_LOG, "-v4",
                "--manage-cgroups=ignore"]
        if leave_running:
            args.append("--leave-running")
        # CRIU locks the network (iptables rules in the container's netns) only to keep
        # established TCP connections still; iptables-nft leaves empty tables behind in a
        # namespace that outlives the container (docker's, podman's): skip it otherwise
        lock = "iptables" if tcp_established else "skip"
        args += ["--network-lock", lock]
        if tcp_established:
            args.append("--tcp-established")
        if file_locks:
            args.append("--file-locks")
        if ext_unix_sk:
            args.append("--ext-unix-sk")
        if shell_job:
            args.append("--shell-job")
        freezer = _freezer_dir(c)
        if freezer:
            # CRIU freezes the cgroup (not each task with ptrace); a paused container
            # (containerd pauses one before it checkpoints it) stays as it was
            args += ["--freeze-cgroup", freezer]
        cgroup_binds = _cgroup_binds(pid)
        for dest in [d for d, _ in _bind_mounts(config)] + cgroup_binds:
            args += ["--external", f"mnt[{dest}]:{dest}"]
        netns = _joined_netns(config)
        if netns is not None:
            args += ["--external", f"net[{os.stat(f'/proc/{pid}/ns/net').st_ino}]:{NETNS_KEY}"]
        for key in dict.fromkeys(d["key"] for d in descriptors if d["external"]):
            args += ["--external", key]
        meta: dict[str, Any] = {
            "version": 1, "id": cid, "driver": c.state.driver, "created": c.state.created,
            "checkpointed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "criu": _examine(criu)[1], "config": json.loads(config.to_json()),
            "descriptors": descriptors, "cgroup_binds": cgroup_binds,
            "options": {"tcp_established": tcp_established, "file_locks": file_locks,
                        "network_lock": lock,
                        "ext_unix_sk": ext_unix_sk, "shell_job": shell_job},
            "leave_running": leave_running}
        try:
            spec_text = (c.dir / "spec.json").read_text()
        except OSError:
            spec_text = None
        if spec_text is not None:
            meta["spec"] = json.loads(spec_text)
        started = time.monotonic()
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                                  check=False)
            if proc.returncode != 0:
                raise StepFailed("checkpoint", f"criu dump failed: {_criu_errors(work / DUMP_LOG)} "
                                 f"(exit {proc.returncode})", container_id=cid)
            from ..kernel.fileio import write_atomic
            meta["dump_seconds"] = round(time.monotonic() - started, 3)
            write_atomic(images / METADATA_FILE, json.dumps(meta, indent=1))
        except BaseException:
            if created:
                shutil.rmtree(images, ignore_errors=True)
            else:
                _remove_images(images)
            raise

    def note(s: Any) -> None:
        s.extra.setdefault("checkpoints", []).append(
            {"image_dir": str(images), "time": meta["checkpointed"],
             "leave_running": leave_running})
    c.state = c.store.update(cid, note)
    if not leave_running:
        # criu killed the tree: let the monitor (if it has one) record the end
        from .container import wait_pid_exit
        wait_pid_exit(c.state.pid, c.state.pid_start, 10.0)
        if c.state.monitor_pid:
            wait_pid_exit(c.state.monitor_pid, c.state.monitor_start, 2.0)
    return meta


def _remove_images(images: Path) -> None:
    for p in images.glob("*.img"):
        p.unlink(missing_ok=True)
    for name in ("stats-dump", METADATA_FILE):
        (images / name).unlink(missing_ok=True)


def read_metadata(image_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(image_dir) / METADATA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StepFailed("restore", "no execdriver checkpoint there (no "
                         f"{METADATA_FILE})", image_path=str(image_dir)) from None
    except ValueError as exc:
        raise StepFailed("restore", f"unreadable {METADATA_FILE}: {exc}",
                         image_path=str(image_dir)) from None
    if not isinstance(data, dict) or data.get("version") != 1 or "config" not in data:
        raise StepFailed("restore", f"{METADATA_FILE} is not an execdriver checkpoint",
                         image_path=str(image_dir))
    return data


# --- restore ----------------------------------------------------------------------------

def restore(store: StateStore, container_id: str, image_dir: str | os.PathLike[str], *,
            owner: str, config: Config | None = None, files: dict[str, str] | None = None,
            stdio: tuple[int, int, int] | None = None, work_dir: str | os.PathLike[str] | None = None,
            tcp_established: bool | None = None, file_locks: bool | None = None,
            warn: Warn | None = None) -> Container:
    """Make container ``container_id`` from the checkpoint in ``image_dir``: running,
    detached (it outlives the caller; its exit is recorded), with a monitor like a
    created container's. ``config``: the container's Config (default: the one saved
    with the checkpoint); ``stdio`` None: /dev/null and the container's log file.
    ``work_dir``: where criu writes its log (default: the container's directory).
    A failed restore leaves nothing behind."""
    from ..config import Config
    from .container import Container
    images = Path(image_dir).absolute()
    meta = read_metadata(images)
    criu = find_criu("restore")
    if config is None:
        config = Config.from_json(json.dumps(meta["config"]))
        if config.network.mode in ("container", "netns"):
            # the path recorded then may name another process's namespace now
            config = config.replace(namespaces=tuple(n for n in config.namespaces
                                                     if n.type != "network"))
    if files is None and "spec" in meta:
        files = {"spec.json": json.dumps(meta["spec"])}
    c, cg = Container.claim(store, container_id, config, owner=owner, files=files, warn=warn)
    opened: list[int] = []
    try:
        _restore(c, cg, criu, images, meta, stdio, work_dir, tcp_established, file_locks,
                 opened)
    except BaseException as exc:
        c.abandon("restore", exc)
        if isinstance(exc, ExecDriverError):
            exc.container_id = exc.container_id or container_id
            exc.driver = exc.driver or owner
        raise
    finally:
        for fd in opened:
            os.close(fd)
    return c


def _restore(c: Container, cg: Any, criu: str, images: Path, meta: dict[str, Any],
             stdio: tuple[int, int, int] | None, work_dir: str | os.PathLike[str] | None,
             tcp_established: bool | None, file_locks: bool | None,
             opened: list[int]) -> None:
    from ..kernel.cgroups import ownership
    from ..state import LOG_FILE, pid_start_time
    from .container import EXIT_FILE, RUNNING
    config, cid, cdir = c.config, c.id, c.dir
    cg.create()
    ownership.mark(cg, ownership.owner_token(cdir))
    cg.apply(config.resources, config.devices)
    options = dict(meta.get("options") or {})
    if tcp_established is not None:
        options["tcp_established"] = tcp_established
    if file_locks is not None:
        options["file_locks"] = file_locks
    if stdio is None:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        opened.append(null)
        log = os.open(cdir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                      0o600)
        opened.append(log)
        # criu checks that an inherited file has the mode the dumped one had
        modes = [d.get("mode") for d in meta.get("descriptors") or [] if d.get("fd") in (1, 2)]
        if modes and isinstance(modes[0], int):
            os.fchmod(log, modes[0])
        stdio = (null, log, log)
    work = Path(work_dir).absolute() if work_dir else cdir
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    # the fds criu inherits: (number in criu, our fd)
    passed: list[tuple[int, int]] = []
    args = [criu, "restore", "--images-dir", str(images), "--work-dir", str(work),
            "--log-file", RESTORE_LOG, "-v4", "--root", config.root.path,
            "--restore-detached", "--restore-sibling", "--pidfile", str(cdir / "criu.pid"),
            "--manage-cgroups=ignore"]
    args += ["--network-lock", str(options.get("network_lock") or "iptables")]
    if options.get("tcp_established"):
        args.append("--tcp-established")
    if options.get("file_locks"):
        args.append("--file-locks")
    if options.get("ext_unix_sk"):
        args.append("--ext-unix-sk")
    if options.get("shell_job"):
        args.append("--shell-job")
    for dest, source in _bind_mounts(config):
        args += ["--external", f"mnt[{dest}]:{source}"]
    _make_mount_targets(config)
    from .container import _cgroup_dirs
    dirs = _cgroup_dirs(cg)
    for dest in meta.get("cgroup_binds") or []:
        hierarchy = os.path.basename(dest.rstrip("/"))
        if hierarchy not in dirs:
            raise StepFailed("restore", f"the checkpoint binds cgroup hierarchy {hierarchy} "
                             f"at {dest}, which the new cgroup does not have", container_id=c.id)
        args += ["--external", f"mnt[{dest}]:{dirs[hierarchy]}"]
    netns = _joined_netns(config)
    if netns is not None:
        nsfd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        opened.append(nsfd)
        number = 3 + len(passed)
        passed.append((number, nsfd))
        args += ["--inherit-fd", f"fd[{number}]:{NETNS_KEY}"]
    seen: set[str] = set()
    for d in meta.get("descriptors") or []:
        key, fd = d.get("key"), int(d.get("fd", -1))
        if not key or key in seen or not 0 <= fd <= 2:
            continue
        seen.add(key)
        number = 3 + len(passed)
        passed.append((number, stdio[fd]))
        args += ["--inherit-fd", f"fd[{number}]:{key}"]
    if config.caller_reaps:
        # (OCI) the restored init is our child, re-parented to our caller's subreaper
        # (conmon, containerd-shim) when we exit, as runc's is: no monitor
        monitor, init_pid = 0, _restore_as_sibling(args, passed, cg.procs_paths(),
                                                   work / RESTORE_LOG, cid)
        monitor_start = None
    else:
        monitor, init_pid = _spawn_restore_monitor(args, passed, cg.procs_paths(),
                                                   str(cdir / EXIT_FILE), work / RESTORE_LOG,
                                                   cid)
        monitor_start = pid_start_time(monitor)
        c.hold_exit_record()

    def restored(s: Any) -> None:
        s.status = RUNNING
        s.pid = init_pid
        s.pid_start = pid_start_time(init_pid)
        s.monitor_pid = monitor or None
        s.monitor_start = monitor_start
        s.detached = True
        s.creator_pid = s.creator_start = None
        s.extra["restored_from"] = str(images)
    c.state = c.store.update(cid, restored)
    (cdir / "criu.pid").unlink(missing_ok=True)


def _spawn_restore_monitor(args: list[str], passed: list[tuple[int, int]],
                           cgroup_procs: list[str], exit_path: str, log: Path,
                           cid: str) -> tuple[int, int]:
    """Start the monitor (not our child: it outlives us), which runs criu restore as its
    child and becomes the restored init's parent. Returns (monitor pid, init pid)."""
    from ..kernel import init as kinit
    from ..kernel import waiter
    waiter_path = waiter.find()
    pidfile = args[args.index("--pidfile") + 1]
    r, w = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first == 0:                                   # pragma: no cover - child
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _monitor_child(args, passed, cgroup_procs, exit_path, pidfile, w, waiter_path, kinit)
        finally:
            os._exit(127)
    os.close(w)
    try:
        os.waitpid(first, 0)
    except ChildProcessError:
        pass
    chunks = []
    deadline = time.monotonic() + RESTORE_TIMEOUT
    import select
    try:
        while time.monotonic() < deadline:
            if select.select([r], [], [], 0.5)[0]:
                data = os.read(r, 256)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(r)
    # "monitor PID", then "ok INIT" or what failed
    words = b"".join(chunks).decode(errors="replace").split()
    monitor = int(words[1]) if len(words) >= 2 and words[0] == "monitor" and \
        words[1].isdigit() else 0
    rest = words[2:]
    if monitor and len(rest) == 2 and rest[0] == "ok" and rest[1].isdigit():
        return monitor, int(rest[1])
    if monitor:
        from .container import _kill
        _kill(monitor)
    detail = " ".join(rest) or "no word from the monitor"
    raise StepFailed("restore", f"criu restore failed: {_criu_errors(log)} ({detail})",
                     container_id=cid)


def _monitor_child(args: list[str], passed: list[tuple[int, int]], cgroup_procs: list[str],
                   exit_path: str, pidfile: str, w: int, waiter_path: str | None,
                   kinit: Any) -> None:                 # pragma: no cover - runs forked
    """The monitor: subreaper, criu's parent, then the restored init's monitor."""
    me = os.getpid()
    os.write(w, f"monitor {me} ".encode())
    kinit.LIBC.set_child_subreaper()
    exit_fd = kinit.open_exit_file(exit_path)
    _, status = os.waitpid(_fork_criu(args, passed, cgroup_procs), 0)
    if status != 0:
        os.write(w, f"criu-exit {os.waitstatus_to_exitcode(status)}".encode())
        os._exit(1)
    try:
        with open(pidfile) as f:
            init_pid = int(f.read().strip())
    except (OSError, ValueError):
        os.write(w, b"no-pidfile")
        os._exit(1)
    os.write(w, f"ok {init_pid}".encode())
    os.close(w)
    kinit.monitor(exit_fd, init_pid, waiter_path)


def _fork_criu(args: list[str], passed: list[tuple[int, int]], cgroup_procs: list[str]) -> int:
    """Fork criu: in the container's cgroups (what it restores lands there), with the
    fds it inherits at their numbers and /dev/null as its stdio. Returns its pid."""
    pid = os.fork()
    if pid == 0:                                        # pragma: no cover - child
        try:
            for procs in cgroup_procs:
                with open(procs, "w") as f:
                    f.write("0")
            # (staged above the highest number first: no clashes)
            staged = [os.dup2(fd, 100 + i, inheritable=False) for i, (_, fd) in enumerate(passed)]
            for (number, _), fd in zip(passed, staged, strict=True):
                os.dup2(fd, number, inheritable=True)
            null = os.open("/dev/null", os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.execv(args[0], args)
        finally:
            os._exit(127)
    return pid


def _restore_as_sibling(args: list[str], passed: list[tuple[int, int]],
                        cgroup_procs: list[str], log: Path, cid: str) -> int:
    """Run criu restore as our child; the restored init becomes our child too
    (--restore-sibling). Returns the init's pid."""
    pidfile = args[args.index("--pidfile") + 1]
    _, status = os.waitpid(_fork_criu(args, passed, cgroup_procs), 0)
    if status != 0:
        raise StepFailed("restore", f"criu restore failed: {_criu_errors(log)} "
                         f"(criu-exit {os.waitstatus_to_exitcode(status)})", container_id=cid)
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        raise StepFailed("restore", "criu restore wrote no pid file", container_id=cid) from None
