"""The native driver's networking, for real: the runtime runs inside a scratch
network namespace the test creates, so the bridge, veths and nftables rules
live there and traffic only goes to addresses inside those namespaces."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from scratch_netns import ScratchNetns

pytestmark = pytest.mark.root

WEB = ("mkdir -p /tmp/www && echo hello-$(hostname) > /tmp/www/index.html && "
       "exec httpd -f -p 8080 -h /tmp/www")


def _driver(state: str) -> Any:
    from execdriver.loader import load_driver
    return load_driver("native", state_root=state)


def _spec(driver: Any, rootfs: str, script: str, **net: Any) -> Any:
    spec = driver.default_spec(rootfs, ["/bin/sh", "-c", script])
    spec.network.mode = net.pop("mode", "bridge")
    for key, value in net.items():
        setattr(spec.network, key, value)
    return spec


def _run(driver: Any, cid: str, spec: Any) -> tuple[int, str]:
    """Run in the foreground, return (exit code, stdout+stderr)."""
    from execdriver.driver import Stdio
    r, w = os.pipe()
    try:
        status = driver.run(cid, spec, stdio=Stdio(stdout=w, stderr=w))
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        return status.exit_code, f.read()


def _wait_http(driver: Any, rootfs: str, url: str, cid: str = "probe", **net: Any) -> tuple[int, str]:
    script = (f"for i in $(seq 50); do wget -qO- {url} && exit 0; sleep 0.1; done; exit 9")
    return _run(driver, cid, _spec(driver, rootfs, script, **net))


@pytest.fixture
def netns() -> Any:
    with ScratchNetns("edrt") as ns:
        yield ns


@pytest.fixture
def state(tmp_path: Path) -> str:
    d = tmp_path / "state"
    d.mkdir()
    return str(d)


def _two_containers_talk(state: str, rootfs: str) -> tuple[int, str, list[str]]:
    d = _driver(state)
    d.start("web", _spec(d, rootfs, WEB, ), detach=True)
    try:
        addr = d.state.read("web").resources["network"][0]["addresses"][0].split("/")[0]
        code, out = _wait_http(d, rootfs, f"http://{addr}:8080/")
    finally:
        d.terminate("web")
    return code, out, os.listdir(state)


def test_two_containers_on_a_bridge_reach_each_other(netns: Any, state: str, busybox_rootfs: Path) -> None:
    code, out, left = netns.call(_two_containers_talk, state, str(busybox_rootfs))
    assert code == 0 and "hello-" in out, out
    assert left == [] or left == [".ipam"]
    netns.assert_clean(state)


def _published(state: str, rootfs: str) -> tuple[int, str]:
    d = _driver(state)
    from execdriver.spec import PortMapping
    d.start("pub", _spec(d, rootfs, WEB, ports=[PortMapping(host_port=9090, container_port=8080)]),
            detach=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            p = subprocess.run(["busybox", "wget", "-qO-", "http://127.0.0.1:9090/"],
                               capture_output=True, text=True, timeout=10, check=False)
            if p.returncode == 0 or time.monotonic() > deadline:
                return p.returncode, p.stdout + p.stderr
            time.sleep(0.1)
    finally:
        d.terminate("pub")


def test_published_port_serves_from_the_host_namespace(netns: Any, state: str,
                                                       busybox_rootfs: Path) -> None:
    code, out = netns.call(_published, state, str(busybox_rootfs))
    assert code == 0 and "hello-" in out, out
    netns.assert_clean(state)


def _published_from_client_ns(state: str, rootfs: str, client_ns: str) -> tuple[int, str]:
    """A second namespace (a 'client host') reaches the published port over a veth."""
    d = _driver(state)
    from execdriver.spec import PortMapping
    d.start("pub2", _spec(d, rootfs, WEB, ports=[PortMapping(host_port=9191, container_port=8080)]),
            detach=True)
    try:
        subprocess.run(["ip", "link", "add", "edcli0", "type", "veth", "peer", "name", "edcli1",
                        "netns", client_ns], check=True)
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "edcli0"], check=True)
        subprocess.run(["ip", "link", "set", "edcli0", "up"], check=True)
        cli = ["ip", "netns", "exec", client_ns]
        subprocess.run(cli + ["ip", "addr", "add", "192.0.2.2/24", "dev", "edcli1"], check=True)
        subprocess.run(cli + ["ip", "link", "set", "edcli1", "up"], check=True)
        deadline = time.monotonic() + 10
        while True:
            p = subprocess.run(cli + ["busybox", "wget", "-qO-", "http://192.0.2.1:9191/"],
                               capture_output=True, text=True, timeout=10, check=False)
            if p.returncode == 0 or time.monotonic() > deadline:
                return p.returncode, p.stdout + p.stderr
            time.sleep(0.1)
    finally:
        d.terminate("pub2")
        subprocess.run(["ip", "link", "del", "edcli0"], check=False)


def test_published_port_from_another_namespace(netns: Any, state: str, busybox_rootfs: Path) -> None:
    with ScratchNetns("edcli") as client:
        code, out = netns.call(_published_from_client_ns, state, str(busybox_rootfs), client.name)
    assert code == 0 and "hello-" in out, out
    netns.assert_clean(state)


def _isolated(state: str, rootfs: str) -> tuple[int, str]:
    d = _driver(state)
    d.start("iso-web", _spec(d, rootfs, WEB, isolate=True), detach=True)
    try:
        addr = d.state.read("iso-web").resources["network"][0]["addresses"][0].split("/")[0]
        # Control: the server is up and reachable from the host side.
        deadline = time.monotonic() + 10
        while subprocess.run(["busybox", "wget", "-qO-", f"http://{addr}:8080/"],
                             capture_output=True, timeout=10, check=False).returncode != 0:
            assert time.monotonic() < deadline, "server never came up"
            time.sleep(0.1)
        script = f"for i in 1 2 3; do wget -qO- http://{addr}:8080/ && exit 0; sleep 0.2; done; exit 9"
        return _run(d, "iso-cli", _spec(d, rootfs, script, isolate=True))
    finally:
        d.terminate("iso-web")


def test_isolation_blocks_container_to_container(netns: Any, state: str, busybox_rootfs: Path) -> None:
    code, out = netns.call(_isolated, state, str(busybox_rootfs))
    assert code == 9, out
    netns.assert_clean(state)


def _shared(state: str, rootfs: str) -> tuple[str, str]:
    d = _driver(state)
    d.start("owner", _spec(d, rootfs, "exec sleep 300"), detach=True)
    try:
        pid = d.state.read("owner").pid
        theirs = os.readlink(f"/proc/{pid}/ns/net")
        code, out = _run(d, "joiner", _spec(d, rootfs, "readlink /proc/self/ns/net",
                                            mode="container", container="owner"))
        assert code == 0, out
        return theirs, out.strip()
    finally:
        d.terminate("owner")


def test_container_mode_shares_the_netns(netns: Any, state: str, busybox_rootfs: Path) -> None:
    theirs, ours = netns.call(_shared, state, str(busybox_rootfs))
    assert theirs == ours
    netns.assert_clean(state)


def _none_mode(state: str, rootfs: str) -> tuple[int, str]:
    d = _driver(state)
    return _run(d, "none", _spec(d, rootfs, "ls /sys/class/net; ip -o link show lo", mode="none"))


def test_none_mode_has_only_loopback_up(netns: Any, state: str, busybox_rootfs: Path) -> None:
    code, out = netns.call(_none_mode, state, str(busybox_rootfs))
    assert code == 0
    lines = out.split()
    assert lines[0] == "lo" and "eth0" not in out
    assert "UP" in out
    netns.assert_clean(state)


def _cycles(state: str, rootfs: str, n: int) -> int:
    d = _driver(state)
    spec = _spec(d, rootfs, "exec sleep 300")
    for i in range(n):
        d.start(f"cyc{i}", spec, detach=True)
        d.terminate(f"cyc{i}")
    return n


def test_two_hundred_create_terminate_cycles_leak_nothing(netns: Any, state: str,
                                                          busybox_rootfs: Path) -> None:
    assert netns.call(_cycles, state, str(busybox_rootfs), 200, timeout=600) == 200
    netns.assert_clean(state)
    assert [p for p in os.listdir(state) if not p.startswith(".")] == []
