"""The guest's initramfs: planned here (pure), built once per kernel and cached.

The base image holds the host's static busybox, the kernel modules the guest needs
(virtio PCI, 9p over virtio, virtio-serial) in dependency order, the driver's /init
(init.sh) and execdriver-guest (guest.c, compiled static with the host's C compiler).
It is cached under ``cache_dir()`` by the hash of everything that goes into it (older
images are left alone: another checkout may be using one; the directory can be removed
at any time). Each container gets the base followed by a small uncompressed archive of
its own (/execdriver/init.conf and /execdriver/config): the kernel unpacks concatenated
archives in order.
"""

from __future__ import annotations

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


def image_entries(busybox: bytes, init: bytes, modules: Sequence[tuple[str, bytes]],
                  extra: Sequence[Entry] = ()) -> list[Entry]:
    """A busybox initramfs: /bin/busybox (and /bin/sh), /init, the modules as
    /modules/<name>.ko with /modules/order (load them in that order), then ``extra``."""
    entries = [Entry(d) for d in ("bin", "dev", "proc", "sys", "modules")]
    entries += [Entry("bin/busybox", 0o755, busybox), Entry("bin/sh", target="busybox"),
                Entry("init", 0o755, init)]
    entries += [Entry(f"modules/{name}.ko", 0o644, data) for name, data in modules]
    entries.append(Entry("modules/order", 0o644,
                         "".join(f"{name}\n" for name, _ in modules).encode()))
    return entries + list(extra)


def base_entries(busybox: bytes, guest: bytes, init: bytes,
                 modules: Sequence[tuple[str, bytes]]) -> list[Entry]:
    """The driver's base image: the layout init.sh expects."""
    return image_entries(busybox, init, modules, [
        Entry("newroot"), Entry("execdriver"), Entry("bin/execdriver-guest", 0o755, guest)])


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


def host_modules(kver: str, wanted: Sequence[str] = WANTED_MODULES) -> list[tuple[str, bytes]]:
    """The modules of kernel ``kver`` a guest needs for ``wanted``, in load order (built-in
    ones left out), uncompressed."""
    depends: dict[str, list[str]] = {}
    todo = list(wanted)
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
            for name in module_order(wanted, depends)
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


def write_image(path: Path, entries: Iterable[Entry]) -> None:
    """``entries`` as a gzip'ed archive at ``path`` (written aside, then renamed)."""
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_bytes(gzip.compress(cpio(entries), compresslevel=1))
    os.replace(part, path)


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
            write_image(path, base_entries(Path(BUSYBOX).read_bytes(), guest.read_bytes(),
                                           INIT.read_bytes(), host_modules(kver)))
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m execdriver_qemu.initramfs --kernel VERSION --init FILE --modules 'a b'
    --out FILE``: a busybox initramfs of one's own (the VM lane's, scripts/vm-lane.sh)."""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m execdriver_qemu.initramfs",
                                description=main.__doc__)
    p.add_argument("--kernel", required=True, help="kernel version (/lib/modules/VERSION)")
    p.add_argument("--init", required=True, help="the /init to put in it")
    p.add_argument("--modules", default="", help="modules it loads (dependencies are added)")
    p.add_argument("--out", required=True, help="where to write the .cpio.gz")
    args = p.parse_args(argv)
    try:
        modules = host_modules(args.kernel, args.modules.replace(",", " ").split())
        write_image(Path(args.out), image_entries(Path(BUSYBOX).read_bytes(),
                                                  Path(args.init).read_bytes(), modules))
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        print(f"initramfs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
