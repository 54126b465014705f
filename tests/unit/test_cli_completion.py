"""The bash completion script loads in bash and completes from the real parser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from execdriver.cli.completion import bash_script, zsh_script
from execdriver.cli.parser import build_parser

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")


def complete(words: list[str], tmp_path: Path) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one being completed)."""
    script = tmp_path / "complete.bash"
    script.write_text(bash_script(build_parser()))
    # a stand-in execdriver on PATH for the container ids
    fake = tmp_path / "bin" / "execdriver"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/argv"; echo web1; echo web2\n')
    fake.chmod(0o755)
    words_q = " ".join(f"'{w}'" for w in words)
    code = (f"source {script}; COMP_WORDS=({words_q}); COMP_CWORD={len(words) - 1}; "
            "_execdriver; printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run([BASH, "--norc", "-c", code], capture_output=True, text=True, check=True,
                       env={"PATH": f"{fake.parent}:/usr/bin:/bin"}, cwd=tmp_path)
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.skipif(BASH is None, reason="no bash on this host")
def test_bash_completes_commands_options_paths_and_ids(tmp_path: Path) -> None:
    assert {"run", "rm", "stop", "logs"} <= set(complete(["execdriver", ""], tmp_path))
    assert complete(["execdriver", "st"], tmp_path) == ["start", "state", "stats", "stop"]
    assert {"--tmpfs", "--ulimit", "--rootfs"} <= set(complete(["execdriver", "run", "--"],
                                                              tmp_path))
    assert complete(["execdriver", "kill", "w"], tmp_path) == ["web1", "web2"]
    assert complete(["execdriver", "--root", "/srv/r", "logs", ""], tmp_path) == ["web1", "web2"]
    assert (tmp_path / "bin" / "argv").read_text() == "--root /srv/r list -q\n"
    (tmp_path / "rootfs-dir").mkdir()
    assert complete(["execdriver", "run", "--rootfs", "rootfs-"], tmp_path) == ["rootfs-dir"]


@pytest.mark.skipif(BASH is None, reason="no bash on this host")
def test_bash_completes_create_start_update_and_init(tmp_path: Path) -> None:
    assert {"create", "start", "update"} <= set(complete(["execdriver", ""], tmp_path))
    # create has every option of run (--init included), and takes no container id
    create = set(complete(["execdriver", "create", "--"], tmp_path))
    assert {"--init", "--rootfs", "--memory", "--tmpfs"} <= create
    assert create == set(complete(["execdriver", "run", "--"], tmp_path))
    assert complete(["execdriver", "create", "w"], tmp_path) == []
    assert {"--attach"} <= set(complete(["execdriver", "start", "--"], tmp_path))
    assert complete(["execdriver", "start", "w"], tmp_path) == ["web1", "web2"]
    assert {"--memory", "--memory-swap", "--cpus", "--cpu-quota", "--cpu-period", "--cpu-shares",
            "--cpuset-cpus", "--pids-limit", "--blkio-weight", "--format"} <= set(
        complete(["execdriver", "update", "--"], tmp_path))
    assert complete(["execdriver", "update", "--memory", "64M", "w"], tmp_path) == ["web1", "web2"]


def test_zsh_is_the_bash_one_through_bashcompinit() -> None:
    script = zsh_script(build_parser())
    assert script.startswith("#compdef execdriver\n") and "bashcompinit" in script
    assert bash_script(build_parser()) in script


@pytest.mark.skipif(ZSH is None, reason="no zsh on this host (apt-get install zsh)")
def test_the_zsh_script_loads_in_zsh_and_completes(tmp_path: Path) -> None:
    """Loaded as a user's .zshrc would (compinit), it registers the completer, and the
    completer answers as it does in bash (zsh then filters by the typed prefix)."""
    script = tmp_path / "_execdriver"
    script.write_text(zsh_script(build_parser()))
    fake = tmp_path / "bin" / "execdriver"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho web1; echo web2\n')
    fake.chmod(0o755)

    def reply(*words: str) -> list[str]:
        words_q = " ".join(f"'{w}'" for w in words)
        code = (f"autoload -U compinit && compinit -u -D; source {script}; "
                "print -r -- \"comps=${_comps[execdriver]}\"; setopt ksharrays; "
                f"COMP_WORDS=({words_q}); COMP_CWORD={len(words) - 1}; _execdriver; "
                "print -l -- \"${COMPREPLY[@]}\"")
        r = subprocess.run([str(ZSH), "-f", "-c", code], capture_output=True, text=True,
                           check=False, env={"PATH": f"{fake.parent}:/usr/bin:/bin",
                                             "HOME": str(tmp_path)}, cwd=tmp_path, timeout=60)
        assert r.returncode == 0 and not r.stderr, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "comps=_bash_complete -F _execdriver", lines[0]
        return lines[1:]
    assert {"start", "stop", "run", "update"} <= set(reply("execdriver", "st"))
    assert {"--tmpfs", "--device", "--init"} <= set(reply("execdriver", "run", "--"))
    assert reply("execdriver", "kill", "w") == ["web1", "web2"]


def test_the_completion_command(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "execdriver", "completion", "bash"],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0 and "complete -F _execdriver execdriver" in r.stdout
    r = subprocess.run([sys.executable, "-m", "execdriver", "completion", "fish"],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 125 and r.stderr.count("\n") == 1 and "fish" in r.stderr
