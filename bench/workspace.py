"""The bench's private workspace: rootfs, state roots, anchor configs, machine facts.

Everything lives in one directory under /tmp that ``cleanup`` removes; nothing
in /etc, /run or /var/lib is touched (podman gets its own storage, run root and
containers.conf through flags and CONTAINERS_CONF).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEMORY_LIMIT = 64 * 1024 * 1024
LXC_LOCK_ROOT = "/run/lxc/lock"
PIDS_LIMIT = 100
OCI_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
OCI_ACTIONS = {"allow": "SCMP_ACT_ALLOW", "errno": "SCMP_ACT_ERRNO", "kill": "SCMP_ACT_KILL",
               "kill_process": "SCMP_ACT_KILL_PROCESS", "trap": "SCMP_ACT_TRAP",
               "log": "SCMP_ACT_LOG", "trace": "SCMP_ACT_TRACE"}
OCI_OPS = {"eq": "SCMP_CMP_EQ", "ne": "SCMP_CMP_NE", "lt": "SCMP_CMP_LT", "le": "SCMP_CMP_LE",
           "gt": "SCMP_CMP_GT", "ge": "SCMP_CMP_GE", "masked_eq": "SCMP_CMP_MASKED_EQ"}


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the project's .venv)."""
    return str(Path(sys.executable).parent / name)


def spec_dict(rootfs: str, args: list[str]) -> dict[str, Any]:
    """The workload on our side: the default spec (default namespaces, mounts,
    capabilities, seccomp, masked paths) plus a memory and a pids limit."""
    return {"root": {"path": rootfs}, "process": {"args": args},
            "resources": {"memory": {"limit": MEMORY_LIMIT}, "pids": {"limit": PIDS_LIMIT}}}


def oci_seccomp() -> dict[str, Any]:
    """Our default seccomp profile in OCI form, so that runc filters the same syscalls."""
    from execdriver.kernel.seccomp_default import DEFAULT_PROFILE
    rules = []
    for r in DEFAULT_PROFILE.syscalls:
        rule: dict[str, Any] = {"names": list(r.names), "action": OCI_ACTIONS[r.action]}
        if r.errno is not None:
            rule["errnoRet"] = r.errno
        if r.args:
            rule["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two,
                             "op": OCI_OPS[a.op]} for a in r.args]
        rules.append(rule)
    return {"defaultAction": OCI_ACTIONS[DEFAULT_PROFILE.default_action],
            "defaultErrnoRet": DEFAULT_PROFILE.default_errno,
            "architectures": OCI_ARCHES, "syscalls": rules}


def runc_config(rootfs: str, args: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """Debian runc's ``runc spec`` adjusted to our workload: same command, rootfs,
    namespaces (+cgroup), capabilities, limits and seccomp; no terminal."""
    from execdriver.spec import DEFAULT_CAPABILITIES
    c = json.loads(json.dumps(base))
    p = c["process"]
    p["terminal"] = False
    p["args"] = list(args)
    p["env"] = [e for e in p.get("env", []) if not e.startswith("TERM=")]
    caps = list(DEFAULT_CAPABILITIES)
    p["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    p.pop("rlimits", None)          # ours sets none by default
    p["noNewPrivileges"] = True
    c["root"] = {"path": rootfs, "readonly": False}
    c.pop("hostname", None)
    lin = c.setdefault("linux", {})
    ns = lin.setdefault("namespaces", [])
    if not any(n.get("type") == "cgroup" for n in ns):
        ns.append({"type": "cgroup"})
    res = lin.setdefault("resources", {})
    res["memory"] = {"limit": MEMORY_LIMIT}
    res["pids"] = {"limit": PIDS_LIMIT}
    lin["seccomp"] = oci_seccomp()
    return c


@dataclass
class Workspace:
    root: Path
    rootfs: Path = field(init=False)
    keep: bool = False

    def __post_init__(self) -> None:
        self.rootfs = self.root / "rootfs"

    @classmethod
    def create(cls, keep: bool = False) -> Workspace:
        return cls(Path(tempfile.mkdtemp(prefix="execdriver-bench-", dir="/tmp")), keep=keep)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def build_rootfs(self) -> Path:
        from execdriver.rootfs import build_busybox
        if not (self.rootfs / "bin" / "busybox").exists():
            build_busybox(self.rootfs)
        return self.rootfs

    def runc_bundle(self, name: str, args: list[str]) -> Path | None:
        """A bundle dir with config.json; None when runc is missing."""
        if not shutil.which("runc"):
            return None
        bundle = self.path("runc", name)
        base_dir = self.path("runc", "_spec")
        if not (base_dir / "config.json").exists():
            subprocess.run(["runc", "spec"], cwd=base_dir, check=True, capture_output=True)
        base = json.loads((base_dir / "config.json").read_text())
        cfg = runc_config(str(self.rootfs), args, base)
        (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
        return bundle

    def podman_env(self) -> tuple[list[str], dict[str, str]]:
        """podman's global flags and environment, all private to the workspace."""
        conf = self.path("podman") / "containers.conf"
        # Debian's podman asks for default ulimits above this VM's hard limits: ask for none.
        conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = "file"\n')
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        flags = ["--root", str(self.path("podman", "storage")),
                 "--runroot", str(self.path("podman", "run")),
                 "--cgroup-manager", "cgroupfs", "--log-level", "error"]
        return flags, env

    def cleanup(self) -> None:
        if self.keep:
            return
        # Mounts podman may leave under its storage (overlay): unmount first.
        try:
            for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
                target = line.split()[1]
                if target.startswith(str(self.root) + "/"):
                    subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        except OSError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        # liblxc keeps per-lxcpath lock directories under /run/lxc/lock/<lxcpath>.
        shutil.rmtree(f"{LXC_LOCK_ROOT}{self.root}", ignore_errors=True)


def _cmd(args: list[str]) -> str:
    try:
        out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def machine_facts(state_dir: Path) -> dict[str, Any]:
    """What the numbers depend on: CPU, memory, kernel, versions, state filesystem."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    fstype = _cmd(["findmnt", "-n", "-o", "FSTYPE", "-T", str(state_dir)])
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "runc": _cmd(["runc", "--version"]), "lxc": _cmd(["lxc-execute", "--version"]),
        "podman": _cmd(["podman", "--version"]), "state_fs": fstype,
        "cgroups": "hybrid (v1 controllers)" if os.path.isdir("/sys/fs/cgroup/memory")
        else "unified (v2)",
        "loadavg_at_start": os.getloadavg()[0],
    }
