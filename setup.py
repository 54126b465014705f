"""The build hooks; the metadata is in setup.cfg.

The C helpers are compiled by the package build, for the platform it runs on:
build_py puts the container monitor (execdriver-waiter) and the static init of
``run --init`` (execdriver-init) in the package beside their sources;
build_scripts makes the ``execdriver`` and ``execdriver-oci`` commands the
compiled front (client.c). Without a C compiler (or with EXECDRIVER_NO_C=1)
the package still builds: the Python monitor and Python scripts stand in. The
wheel is tagged for the platform (py3-none-<platform>): it holds executables,
no Python extension.
"""

from __future__ import annotations

import os
import shutil
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:                                 # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

from distutils.command.build_scripts import build_scripts

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiler() -> bool:
    if os.environ.get("EXECDRIVER_NO_C") == "1":
        return False
    if os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"):
        return True
    print("execdriver: no C compiler: the Python monitor and scripts stand in", file=sys.stderr)
    return False


def _helpers():  # (the tree's own modules: importable without the package's dependencies)
    sys.path.insert(0, HERE)
    try:
        from execdriver.cli import client_build
        from execdriver.kernel import tinyinit, waiter
    finally:
        sys.path.remove(HERE)
    return waiter, tinyinit, client_build


class BuildPy(build_py):
    """Also compile the container monitor into the package."""

    def run(self) -> None:
        super().run()
        if not _compiler():
            return
        waiter, tinyinit, _ = _helpers()
        where = os.path.join(HERE if self.editable_mode else self.build_lib, "execdriver", "kernel")
        waiter.build(os.path.join(where, waiter.NAME))
        try:
            tinyinit.build(os.path.join(where, tinyinit.NAME))
        except Exception as exc:  # noqa: BLE001 - only `run --init` needs it, and says so
            print(f"execdriver: no `run --init`: {exc}", file=sys.stderr)


class BuildScripts(build_scripts):
    """The two commands: the compiled front over the Python scripts."""

    def run(self) -> None:
        super().run()
        if _compiler():
            *_, client_build = _helpers()
            client_build.build_commands(self.build_dir)


class BinaryDistribution(Distribution):
    """Platform-specific: installed in platlib, the wheel's root."""

    def has_ext_modules(self) -> bool:
        return True


class BdistWheel(bdist_wheel):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _python, _abi, plat = super().get_tag()
        return "py3", "none", plat


setup(distclass=BinaryDistribution,
      cmdclass={"build_py": BuildPy, "build_scripts": BuildScripts, "bdist_wheel": BdistWheel})
