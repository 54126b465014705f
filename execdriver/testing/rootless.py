"""An unprivileged user for rootless tests, made by the tests and removed after.

``RootlessUser.make()`` (as root) adds a system-less user with useradd (Debian gives
it a 65536-id range in /etc/subuid and /etc/subgid from login.defs), a working
directory it owns (its runtime directory, a rootfs, an interpreter) outside any
0700 directory, and ``run()`` runs a command as that user with setpriv and a clean
environment. ``remove()`` takes it all away again, /etc/subuid and /etc/subgid
included when they did not exist before.

The interpreter: this checkout's may live under /root (pyenv; mode 0700), where the
user cannot reach it, so the user gets a venv of the system's python of the same
version that imports this checkout's packages (``unavailable()`` says when there
is none).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

SUBID_FILES = ("/etc/subuid", "/etc/subgid")


def system_python() -> str | None:
    """A python of this interpreter's version outside /root, or None."""
    for candidate in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
                      f"/usr/local/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable() -> str | None:
    """Why rootless tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "making a test user needs root"
    for tool in ("useradd", "usermod", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if system_python() is None:
        return (f"no system python{sys.version_info[0]}.{sys.version_info[1]} outside /root "
                "for an unprivileged user")
    from execdriver.libcontainer import rootless
    return rootless.unavailable()


def _all_ranges() -> list[tuple[int, int]]:
    ranges = []
    for path in SUBID_FILES:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        ranges.append((int(parts[1]), int(parts[2])))
        except FileNotFoundError:
            continue
    return ranges


class RootlessUser:
    def __init__(self, name: str, uid: int, gid: int, home: Path, created: list[str]) -> None:
        self.name, self.uid, self.gid, self.home = name, uid, gid, home
        self._created_files = created
        self.python = str(home / "venv" / "bin" / "python")
        self.runtime_dir = home / "run"

    @classmethod
    def make(cls, rootfs_source: Path) -> RootlessUser:
        """The user, its home (runtime dir, venv, a copy of ``rootfs_source`` it owns)."""
        # (useradd and userdel also leave backups, FILE-, of the files they change)
        created = [f for f in (*SUBID_FILES, *(p + "-" for p in SUBID_FILES))
                   if not os.path.exists(f)]
        for path in SUBID_FILES:        # useradd grants ranges only where the files exist
            if path in created:
                with open(path, "x", encoding="utf-8"):
                    os.chmod(path, 0o644)
        name = f"edrl{os.getpid() % 100000}"
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               name], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            for path in created:
                if os.path.exists(path):
                    os.unlink(path)
            raise RuntimeError(f"useradd {name}: {made.stderr.strip()}")
        entry = pwd.getpwnam(name)
        home = Path(tempfile.mkdtemp(prefix="execdriver-rootless-"))
        user = cls(name, entry.pw_uid, entry.pw_gid, home, created)
        try:
            from execdriver.kernel.idmap import subordinate_ranges
            if not subordinate_ranges("/etc/subuid", user.uid, name):
                # useradd adds ranges only where /etc/subuid exists: give it one, past
                # every range granted already
                start = max([100000] + [a + n for a, n in _all_ranges()])
                ids = f"{start}-{start + 65535}"
                subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, name],
                               check=True, capture_output=True)
            user._populate(rootfs_source)
        except BaseException:
            user.remove()
            raise
        return user

    def _populate(self, rootfs_source: Path) -> None:
        os.chmod(self.home, 0o755)
        python = system_python()
        assert python is not None
        subprocess.run([python, "-m", "venv", "--without-pip", str(self.home / "venv")],
                       check=True, capture_output=True)
        site = subprocess.run([self.python, "-c", "import sysconfig; "
                               "print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # our site-packages (the editable installs' finders, the entry points) and this
        # checkout, for the user's interpreter
        ours = sysconfig.get_path("purelib")
        Path(site, "execdriver-checkout.pth").write_text(
            f"import site; site.addsitedir({ours!r})\n")
        shutil.copytree(rootfs_source, self.home / "rootfs", symlinks=True)
        self.runtime_dir.mkdir(mode=0o700)
        for path in (self.home, self.runtime_dir):
            os.chown(path, self.uid, self.gid)
        subprocess.run(["chown", "-R", "-h", f"{self.uid}:{self.gid}", str(self.home / "rootfs")],
                       check=True)

    @property
    def rootfs(self) -> Path:
        return self.home / "rootfs"

    def subordinate(self) -> tuple[int, int] | None:
        """The user's first /etc/subuid range (start, count), if it has one and
        newuidmap/newgidmap are installed to map it (Debian ``uidmap``)."""
        from execdriver.kernel.idmap import HELPERS, subordinate_ranges
        if not all(os.access(h, os.X_OK) for h in HELPERS):
            return None
        ranges = subordinate_ranges("/etc/subuid", self.uid, self.name)
        return ranges[0] if ranges else None

    def env(self, **extra: str) -> dict[str, str]:
        env = {"HOME": str(self.home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "XDG_RUNTIME_DIR": str(self.runtime_dir), "LANG": "C.UTF-8"}
        env.update(extra)
        return env

    def run(self, argv: list[str], *, uid: int | None = None, timeout: float = 60,
            env: dict[str, str] | None = None, cwd: str | None = None,
            leaves_running: bool = False, cgroup: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """``argv`` as the user (or as ``uid``, a user with no passwd entry: no
        subordinate ids), no capabilities, a clean environment. ``leaves_running``: the
        command leaves a process holding its stdio (an OCI create), so its output goes
        through files, not pipes that would stay open. ``cgroup``: a cgroup v2 directory
        the command is moved into first, by root (a session in a delegated subtree, as
        systemd puts a user's login in user@UID.service)."""
        ids = ["--reuid", str(self.uid), "--regid", str(self.gid), "--init-groups"] \
            if uid is None else ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        # (the bounding set stays full, as a login's: newuidmap's setuid needs it)
        cmd = ["setpriv", *ids, "--inh-caps=-all", *argv]
        if cgroup is not None:
            cmd = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh",
                   cgroup, *cmd]
        env, cwd = env or self.env(), cwd or str(self.home)
        if not leaves_running:
            return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                                  cwd=cwd, timeout=timeout)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  text=True, check=False, env=env, cwd=cwd, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(cmd, done.returncode, out.read(), err.read())

    def execdriver(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run([self.python, "-m", "execdriver", *args], **kw)

    def execdriver_oci(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        code = "import sys; from execdriver.cli.oci import main; sys.exit(main())"
        return self.run([self.python, "-c", code, *args], **kw)

    def end_oci(self, cid: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        """SIGKILL the user's OCI container ``cid``, wait until it is stopped, delete it;
        the delete's result."""
        self.execdriver_oci("kill", cid, "KILL", **kw)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = json.loads(self.execdriver_oci("state", cid, **kw).stdout or "{}")
            if st.get("status") == "stopped":
                break
            time.sleep(0.05)
        return self.execdriver_oci("delete", cid, **kw)

    def rootless_bundle(self, name: str) -> tuple[Path, dict[str, Any]]:
        """A bundle directory of the user's with its rootfs, and the config.json the
        user's ``execdriver-oci spec --rootless`` wrote there (to change and write back)."""
        bundle = self.home / name
        bundle.mkdir()
        os.chown(bundle, self.uid, self.gid)
        os.symlink(self.rootfs, bundle / "rootfs")
        spec = self.execdriver_oci("spec", "--rootless", cwd=str(bundle))
        if spec.returncode != 0:
            raise AssertionError(f"execdriver-oci spec --rootless: {spec.stderr}")
        return bundle, json.loads((bundle / "config.json").read_text())

    def processes(self, uids: set[int] | None = None) -> list[int]:
        """Pids of processes running as the user (or as ``uids``)."""
        want = uids or {self.uid}
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status", encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) in want:
                                found.append(int(name))
                            break
            except OSError:
                continue
        return found

    def remove(self) -> None:
        """The user, its home, and the subordinate-id files if we made them."""
        subprocess.run(["userdel", self.name], check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
        for path in self._created_files:
            try:
                # the files, if nothing else was added meanwhile; their backups, always
                if path.endswith("-") or os.path.getsize(path) == 0:
                    os.unlink(path)
            except OSError:
                pass
