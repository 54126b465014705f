"""Argument parsing, spec overrides and error formatting, in process (no driver needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from execdriver.cli.main import error_lines, main, parse_args, split_command
from execdriver.cli.overrides import build_exec_process, build_run_spec, parse_user
from execdriver.cli.parser import UsageError
from execdriver.errors import ContainerNotFound, InvalidArgument, SpecError
from execdriver.spec import CAPABILITIES, DEFAULT_CAPABILITIES, Process, Spec


def spec_with(rootfs: Path, *flags: str) -> Spec:
    args = parse_args(["run", "--rootfs", str(rootfs), *flags])
    return build_run_spec(Spec(root={"path": str(rootfs)}), args)  # type: ignore[arg-type]


def problems(rootfs: Path, *flags: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec_with(rootfs, *flags)
    return info.value.problems


# --- parsing ------------------------------------------------------------------

def test_split_command_at_first_double_dash() -> None:
    assert split_command(["run", "-e", "A=--", "--", "sh", "--", "x"]) == (
        ["run", "-e", "A=--"], ["sh", "--", "x"])
    assert split_command(["list"]) == (["list"], None)


def test_run_flags() -> None:
    a = parse_args(["run", "--driver", "lxc", "--rootfs", "r", "--name", "w", "-d", "-e", "A=1",
                    "-e", "B=2", "-w", "/srv", "-u", "1:2", "--hostname", "h", "--memory", "64M",
                    "--cpus", "1.5", "--pids-limit", "9", "--cap-add", "ALL", "--cap-drop",
                    "NET_RAW", "--read-only", "-v", "/a:/b:ro", "--network", "host",
                    "-p", "80:80", "-t", "-i", "--", "sh", "-c", "exit 7"])
    assert (a.handler, a.driver, a.rootfs, a.name, a.detach) == ("run:cmd_run", "lxc", "r", "w", True)
    assert a.env == ["A=1", "B=2"] and a.workdir == "/srv" and a.user == "1:2"
    assert (a.memory, a.cpus, a.pids_limit) == ("64M", "1.5", 9)
    assert a.cap_add == ["ALL"] and a.cap_drop == ["NET_RAW"] and a.read_only
    assert a.volume == ["/a:/b:ro"] and a.network == "host" and a.publish == ["80:80"]
    assert a.tty and a.interactive
    assert a.command == ["sh", "-c", "exit 7"]


def test_run_defaults_and_positional_bundle() -> None:
    a = parse_args(["run", "./bundle"])
    assert (a.bundle, a.driver, a.command, a.detach) == ("./bundle", "native", [], False)


def test_root_and_debug_before_or_after_the_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECDRIVER_ROOT", raising=False)
    assert parse_args(["list"]).root == "/run/execdriver"
    assert parse_args(["--root", "/a", "list"]).root == "/a"
    assert parse_args(["list", "--root", "/b"]).root == "/b"
    assert parse_args(["info", "x", "--debug"]).debug
    monkeypatch.setenv("EXECDRIVER_ROOT", "/from/env")
    assert parse_args(["list"]).root == "/from/env"


@pytest.mark.parametrize("alias, handler", [
    ("resume", "containers:cmd_unpause"), ("state", "containers:cmd_info"),
    ("ls", "containers:cmd_list"), ("delete", "containers:cmd_terminate"),
    ("rm", "containers:cmd_terminate")])
def test_aliases(alias: str, handler: str) -> None:
    argv = [alias] if alias == "ls" else [alias, "x"]
    assert parse_args(argv).handler == handler


def test_query_verbs_take_format() -> None:
    for argv in (["info", "x"], ["list"], ["ps", "x"], ["stats"], ["drivers"]):
        assert parse_args(argv + ["--format", "json"]).format == "json"
        assert parse_args(argv).format == "text"


def test_other_verbs() -> None:
    a = parse_args(["exec", "-e", "A=1", "-w", "/", "-u", "0", "-t", "-i", "-d", "c1", "--", "ps"])
    assert (a.id, a.command, a.detach, a.tty) == ("c1", ["ps"], True, True)
    a = parse_args(["kill", "c1", "HUP", "--all"])
    assert (a.id, a.signal, a.all) == ("c1", "HUP", True)
    a = parse_args(["stats", "a", "b", "--watch"])
    assert (a.ids, a.watch) == (["a", "b"], True)
    a = parse_args(["terminate", "a", "b", "--force"])
    assert (a.ids, a.force) == (["a", "b"], True)
    a = parse_args(["spec", "--driver", "lxc", "--rootfs", "/r", "-o", "f", "--", "/bin/x"])
    assert (a.driver, a.rootfs, a.output, a.command) == ("lxc", "/r", "f", ["/bin/x"])
    a = parse_args(["rootfs", "import", "-", "d", "--allow-devices"])
    assert (a.handler, a.tarball, a.dir, a.allow_devices) == ("rootfs:cmd_import", "-", "d", True)


@pytest.mark.parametrize("argv, needle", [
    (["run", "--pids-limit", "x"], "run: argument --pids-limit: invalid int value"),
    (["nosuchverb"], "invalid choice: 'nosuchverb'"),
    (["info"], "info: the following arguments are required: ID"),
    (["list", "--format", "yaml"], "invalid choice: 'yaml'"),
    (["run", "--rootfs", "r", "sh", "-c"], "put the container's command after --"),
    (["kill", "x", "--", "y"], "unexpected arguments after --"),
    (["stats", "--watch", "--no-stream"], "not allowed with argument"),
    (["rootfs"], "missing action"),
])
def test_usage_errors(argv: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_args(argv)
    assert needle in error_lines(info.value)[0]


def test_main_turns_usage_errors_into_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--cpus"]) == 125
    err = capsys.readouterr().err
    assert err == "execdriver: run: argument --cpus: expected one argument " \
                  "(see 'execdriver run --help')\n"


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--cap-add" in out and "SPEC_OR_BUNDLE" in out
    assert main([]) == 0  # no verb: the overview
    assert "commands:" in capsys.readouterr().out


def test_error_lines() -> None:
    assert error_lines(SpecError(["a.b: bad", "c: worse"])) == [
        "invalid spec: a.b: bad", "invalid spec: c: worse"]
    assert error_lines(ContainerNotFound("x")) == ["container x does not exist"]
    assert error_lines(InvalidArgument("signal 'X': unknown")) == ["signal 'X': unknown"]
    assert error_lines(ValueError("oops")) == ["internal error: ValueError: oops"]
    assert error_lines(PermissionError(13, "Permission denied", "/run/x")) == [
        "PermissionError path=/run/x: Permission denied"]


# --- overrides ------------------------------------------------------------------

def test_no_flags_keep_the_base(tmp_path: Path) -> None:
    base = Spec(root={"path": str(tmp_path)})  # type: ignore[arg-type]
    assert spec_with(tmp_path) == base


def test_resource_flags(tmp_path: Path) -> None:
    s = spec_with(tmp_path, "--memory", "64M", "--cpus", "1.5", "--pids-limit", "10")
    assert s.resources.memory.limit == 64 << 20
    assert (s.resources.cpu.quota, s.resources.cpu.period) == (150000, 100000)
    assert s.resources.pids.limit == 10
    assert spec_with(tmp_path, "--cpus", "0.25").resources.cpu.quota == 25000


def test_capability_flags(tmp_path: Path) -> None:
    s = spec_with(tmp_path, "--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN")
    caps = s.process.capabilities
    assert "CAP_NET_ADMIN" in caps.bounding and "CAP_NET_ADMIN" in caps.effective
    assert "CAP_CHOWN" not in caps.permitted
    s = spec_with(tmp_path, "--cap-drop", "ALL", "--cap-add", "SYS_PTRACE")
    assert s.process.capabilities.bounding == ["CAP_SYS_PTRACE"]
    s = spec_with(tmp_path, "--cap-add", "ALL")
    assert set(s.process.capabilities.bounding) == set(CAPABILITIES)
    s = spec_with(tmp_path, "--cap-drop", "all")
    assert s.process.capabilities.bounding == [] and s.process.capabilities.effective == []
    assert set(DEFAULT_CAPABILITIES) - set(spec_with(tmp_path).process.capabilities.bounding) == set()


def test_process_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_CALLER", "yes")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    s = spec_with(tmp_path, "-e", "A=1", "-e", "B=x=y", "-e", "FROM_CALLER", "-e",
                  "NOT_SET_ANYWHERE", "-w", "/srv", "-u", "1000:2000", "-t", "-i", "--",
                  "/bin/echo", "hi")
    p = s.process
    assert p.env["A"] == "1" and p.env["B"] == "x=y" and p.env["FROM_CALLER"] == "yes"
    assert "NOT_SET_ANYWHERE" not in p.env and "PATH" in p.env
    assert (p.cwd, p.user.uid, p.user.gid, p.terminal, p.stdin) == ("/srv", 1000, 2000, True, True)
    assert p.args == ["/bin/echo", "hi"]


def test_filesystem_flags(tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    s = spec_with(tmp_path, "--read-only", "--hostname", "box", "-v", f"{src}:/data",
                  "-v", f"{src}:/dev/shm:ro")
    assert s.root.readonly and s.hostname == "box"
    shm = [m for m in s.mounts if m.destination == "/dev/shm"]
    assert len(shm) == 1 and shm[0].source == str(src) and shm[0].options == ["rbind", "ro"]
    data = next(m for m in s.mounts if m.destination == "/data")
    assert (data.type, data.options) == ("bind", ["rbind"])


def test_network_flags(tmp_path: Path) -> None:
    s = spec_with(tmp_path, "--network", "host")
    assert s.network.mode == "host" and "network" not in s.namespace_types()
    s = spec_with(tmp_path, "--network", "bridge", "-p", "127.0.0.1:8080:80/udp", "-p", "443:8443")
    assert s.network.mode == "bridge" and "network" in s.namespace_types()
    assert [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in s.network.ports] == [
        ("127.0.0.1", 8080, 80, "udp"), ("0.0.0.0", 443, 8443, "tcp")]
    s = spec_with(tmp_path, "--network", "container:web1")
    assert (s.network.mode, s.network.container) == ("container", "web1")
    s = spec_with(tmp_path, "--network", "ns:/run/netns/x")
    assert (s.network.mode, s.network.netns_path) == ("netns", "/run/netns/x")


def test_every_bad_value_is_reported_once(tmp_path: Path) -> None:
    found = problems(tmp_path, "--memory", "lots", "--cpus", "fast", "--pids-limit", "0",
                     "--hostname", "not valid!", "-w", "relative", "--cap-add", "FLY",
                     "-v", "nocolon", "-v", "/no/such/dir:/x", "--network", "wifi", "-p", "x:y",
                     "-u", "ghost", "-e", "=v")
    joined = "\n".join(found)
    for needle in ("resources.memory.limit: 'lots' is not a size", "--cpus: 'fast' is not a number",
                   "resources.pids.limit: ", "hostname: 'not valid!' is not a valid host name",
                   "process.cwd: must be an absolute path", "--cap-add: unknown capability 'FLY'",
                   "--volume: 'nocolon' is not SRC:DST[:ro]",
                   "--volume: /no/such/dir: no such file or directory",
                   "--network: 'wifi' is not none, host, bridge", "--publish: bad port mapping",
                   "--user: no user 'ghost'", "process.env: bad environment variable name ''"):
        assert sum(needle in line for line in found) == 1, (needle, joined)
    assert len(found) == 12, joined


def test_ports_need_bridge(tmp_path: Path) -> None:
    assert problems(tmp_path, "-p", "80:80") == ["network: published ports need mode bridge"]


def test_parse_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nweb:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    r = str(tmp_path)
    assert parse_user("web", r) == (1000, 1001)
    assert parse_user("1000", r) == (1000, 1001)  # primary group from passwd
    assert parse_user("4242", r) == (4242, 0)
    assert parse_user("web:staff", r) == (1000, 50)
    assert parse_user("7:8", None) == (7, 8)
    for bad in ("", ":1", "1:", "nobody", "web:wheel"):
        with pytest.raises(ValueError):
            parse_user(bad, r)


def test_exec_process_overrides() -> None:
    base = Process(args=["/bin/sh"], env={"PATH": "/bin", "A": "1"})
    args = argparse.Namespace(env=["B=2"], workdir="/tmp", user="5:6", tty=True, interactive=False)
    p = build_exec_process(base, args, None)
    assert p.env == {"PATH": "/bin", "A": "1", "B": "2"} and p.cwd == "/tmp"
    assert (p.user.uid, p.user.gid, p.terminal) == (5, 6, True)
    bad = argparse.Namespace(env=[], workdir="rel", user="x:", tty=False, interactive=False)
    with pytest.raises(SpecError) as info:
        build_exec_process(base, bad, None)
    assert sorted(info.value.problems) == ["--user: 'x:' is not UID[:GID]",
                                           "process.cwd: must be an absolute path"]


def test_flags_add_the_namespaces_they_need(tmp_path: Path) -> None:
    # A chroot-like base: only a mount namespace, host network.
    base = Spec(root={"path": str(tmp_path)}, namespaces=[{"type": "mount"}],  # type: ignore[arg-type]
                network={"mode": "host"})  # type: ignore[arg-type]
    args = parse_args(["run", "--rootfs", str(tmp_path), "--hostname", "h", "--network", "none"])
    s = build_run_spec(base, args)
    assert s.namespace_types() == {"mount", "uts", "network"}
    assert (s.hostname, s.network.mode) == ("h", "none")


def test_docker_flags_set_their_spec_fields(tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text('{"default_action": "allow", "syscalls": []}')
    s = spec_with(tmp_path, "--tmpfs", "/run:size=64m", "--ulimit", "nproc=10",
                  "--ulimit", "RLIMIT_NPROC=20:30", "--sysctl", "kernel.msgmax=1", "--dns",
                  "192.0.2.1", "--dns", "192.0.2.2", "--annotation", "a=b=c",
                  "--security-opt", "no-new-privileges:false", "--security-opt",
                  f"seccomp={profile}", "--security-opt", "apparmor=unconfined")
    run = [m for m in s.mounts if m.destination == "/run"]
    assert len(run) == 1 and run[0].type == "tmpfs" and "size=64m" in run[0].options
    assert [(r.type, r.soft, r.hard) for r in s.process.rlimits] == [("nproc", 20, 30)]
    assert s.sysctls == {"kernel.msgmax": "1"} and s.network.dns == ["192.0.2.1", "192.0.2.2"]
    assert s.annotations == {"a": "b=c"} and s.process.no_new_privileges is False
    assert s.seccomp.mode == "profile" and s.process.apparmor_profile == "unconfined"
    assert spec_with(tmp_path, "--security-opt", "seccomp=unconfined").seccomp.mode == "unconfined"
    assert spec_with(tmp_path, "--cpuset-cpus", "0-1").resources.cpu.cpus == "0-1"


def test_mount_long_form(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    s = spec_with(tmp_path, "--mount", f"type=bind,source={tmp_path / 'src'},target=/data,readonly",
                  "--mount", "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777")
    data = next(m for m in s.mounts if m.destination == "/data")
    assert (data.type, data.source) == ("bind", str(tmp_path / "src")) and "ro" in data.options
    t = next(m for m in s.mounts if m.destination == "/t")
    assert t.type == "tmpfs" and {"size=1m", "mode=1777"} <= set(t.options)
    assert problems(tmp_path, "--mount", "type=volume,target=/x") == [
        "--mount: 'type=volume,target=/x': type 'volume' is not supported (bind or tmpfs)"]
    assert problems(tmp_path, "--mount", "type=bind,source=/nonexistent,target=/x") == [
        "--mount: 'type=bind,source=/nonexistent,target=/x': source must be an existing host path"]
    assert problems(tmp_path, "--mount", "type=tmpfs,target=rel")[0].endswith(
        "target must be an absolute path")
    assert problems(tmp_path, "--mount", "type=tmpfs,target=/x,colour=red")[0].endswith(
        "unknown key 'colour'")
