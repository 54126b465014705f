"""The guest's initramfs: planned here (pure), built once per kernel and cached.

The base image holds the host's static busybox, the kernel modules the guest needs
(virtio PCI, 9p over virtio, virtio-serial) in dependency order, the driver's /init
(init.sh) and execdriver-guest (guest.c, compiled static with the host's C compiler).
It is cached under ``cache_dir()`` by the hash of everything that goes into it. Each
container gets the base followed by a small uncompressed archive of its own
(/execdriver/init.conf and /execdriver/config): the kernel unpacks concatenated archives
in order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
INIT = HERE / "init.sh"
GUEST_C = HERE / "guest.c"
BUSYBOX = "/bin/busybox"
#: what the guest needs; their dependencies are added (modinfo), dependencies first
WANTED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_console")
CACHE_ENV = "EXECDRIVER_QEMU_CACHE"
DEFAULT_CACHE = "/var/cache/execdriver-qemu"


class BuildError(Exception):
    """The initramfs could not be built (the message says which step and why)."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


# --- planning (pure) -------------------------------------------------------------------

def module_order(wanted: Iterable[str], depends: Mapping[str, Sequence[str]]) -> list[str]:
    """``wanted`` and everything they depend on, each after its dependencies.

    ``depends`` maps a module to the modules it needs (modinfo's ``depends``); a module
    missing from it needs nothing. Raises BuildError on a cycle.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise BuildError(f"modules: dependency cycle {' -> '.join(chain + (name,))}")
        state[name] = "visiting"
        for dep in depends.get(name, ()):
            visit(dep, chain + (name,))
        state[name] = "done"
        order.append(name)
    for name in wanted:
        visit(name, ())
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = head + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


@dataclass(frozen=True)
class Entry:
    """One file of an archive: a directory (data None, no target), a file or a symlink."""
    path: str
    mode: int = 0o755
    data: bytes | None = None
    target: str | None = None


def cpio(entries: Iterable[Entry]) -> bytes:
    """An uncompressed newc archive (what the kernel unpacks) of ``entries``, in order."""
    out = b""
    for ino, e in enumerate(entries, start=1):
        if e.target is not None:
            out += _cpio_entry(e.path, 0o120777, e.target.encode(), ino)
        elif e.data is None:
            out += _cpio_entry(e.path, 0o040000 | e.mode, b"", ino)
        else:
            out += _cpio_entry(e.path, 0o100000 | e.mode, e.data, ino)
    return out + _cpio_entry("TRAILER!!!", 0)


def base_entries(busybox: bytes, guest: bytes, init: bytes,
                 modules: Sequence[tuple[str, bytes]]) -> list[Entry]:
    """The base image: the layout /init expects."""
    entries = [Entry(d) for d in ("bin", "dev", "proc", "sys", "modules", "newroot",
                                  "execdriver")]
    entries += [Entry("bin/busybox", 0o755, busybox), Entry("bin/sh", target="busybox"),
                Entry("bin/execdriver-guest", 0o755, guest), Entry("init", 0o755, init)]
    entries += [Entry(f"modules/{name}.ko", 0o644, data) for name, data in modules]
    entries.append(Entry("modules/order", 0o644,
                         "".join(f"{name}\n" for name, _ in modules).encode()))
    return entries


def config_archive(init_conf_text: str, process_config: bytes) -> bytes:
    """The per-container archive appended to the base image."""
    return cpio([Entry("execdriver/init.conf", 0o644, init_conf_text.encode()),
                 Entry("execdriver/config", 0o644, process_config)])


# --- building (host) ---------------------------------------------------------------------

def _modinfo(kver: str, field: str, name: str) -> str:
    proc = subprocess.run(["modinfo", "-k", kver, "-F", field, name], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"modinfo {name} kernel={kver}: {' '.join(proc.stderr.split())}")
    return proc.stdout.strip()


def _module_bytes(path: str) -> bytes:
    raw = Path(path).read_bytes()
    if path.endswith(".xz"):
        import lzma
        return lzma.decompress(raw)
    if path.endswith(".gz"):
        return gzip.decompress(raw)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-qdc", path], capture_output=True, check=True).stdout
    return raw


def host_modules(kver: str) -> list[tuple[str, bytes]]:
    """The modules of kernel ``kver`` the guest loads, in order (built-in ones left out)."""
    depends: dict[str, list[str]] = {}
    todo = list(WANTED_MODULES)
    files: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in depends:
            continue
        filename = _modinfo(kver, "filename", name)
        files[name] = filename
        deps = [d for d in _modinfo(kver, "depends", name).split(",") if d] \
            if filename != "(builtin)" else []
        depends[name] = deps
        todo += deps
    return [(name.replace("-", "_"), _module_bytes(files[name]))
            for name in module_order(WANTED_MODULES, depends)
            if files[name] != "(builtin)"]


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def compile_guest(out: Path) -> None:
    cc = compiler()
    if cc is None:
        raise BuildError("execdriver-guest: no C compiler (apt-get install gcc libc6-dev)")
    proc = subprocess.run([cc, "-static", "-Os", "-o", str(out), str(GUEST_C)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise BuildError(f"execdriver-guest: {cc} -static: {why}")


def base_key(kver: str) -> str:
    h = hashlib.sha256()
    h.update(f"{kver} {' '.join(WANTED_MODULES)}\n".encode())
    for path in (INIT, GUEST_C, Path(BUSYBOX)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def base_image(kver: str) -> Path:
    """The cached base image for kernel ``kver``, built (under a lock) if missing."""
    if not os.access(BUSYBOX, os.X_OK):
        raise BuildError(f"no static busybox at {BUSYBOX} (apt-get install busybox-static)")
    cache = cache_dir()
    path = cache / f"initramfs-{kver}-{base_key(kver)}.cpio.gz"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    import fcntl
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return path
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            guest = Path(tmp) / "execdriver-guest"
            compile_guest(guest)
            archive = cpio(base_entries(Path(BUSYBOX).read_bytes(), guest.read_bytes(),
                                        INIT.read_bytes(), host_modules(kver)))
            part = Path(tmp) / "image"
            part.write_bytes(gzip.compress(archive, compresslevel=1))
            os.replace(part, path)
        for old in cache.glob(f"initramfs-{kver}-*.cpio.gz"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    return path


def container_image(base: Path, out: Path, init_conf_text: str, process_config: bytes) -> None:
    """``out``: the base image followed by the container's own archive."""
    with open(out, "wb") as f:
        with open(base, "rb") as src:
            shutil.copyfileobj(src, f)
        # the kernel looks for the next (uncompressed) archive at a 4-byte boundary,
        # skipping zeros
        f.write(b"\0" * (-f.tell() % 4))
        f.write(config_archive(init_conf_text, process_config))
