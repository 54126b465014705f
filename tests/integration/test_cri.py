"""Kubernetes' node path: containerd's CRI plugin runs pods through execdriver-oci.

What kubelet does on a node, without kubelet: a private containerd (Debian's 1.6, CRI
plugin on, in a network namespace of its own) has a runtime handler "execdriver" — the
runc v2 shim with ``BinaryName`` = execdriver-oci, what a RuntimeClass with
``handler: execdriver`` selects — and the test drives it over the CRI gRPC API
(runtime.v1) with execdriver.testing.cri's client: RunPodSandbox, PodSandboxStatus,
CreateContainer, StartContainer, ContainerStatus, ExecSync, ListContainers,
StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox, and ListImages. The
pause and app images are OCI archives the test builds from the busybox rootfs and
imports with ``ctr -n k8s.io images import``: nothing is pulled. Pods use the node's
network (the daemon's namespace): no CNI. That execdriver-oci, not runc, ran them is
checked with ``execdriver-oci --root <the shim's Root>/k8s.io list``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from execdriver.testing import daemons

pytestmark = pytest.mark.root

RUNTIME = Path(sys.executable).parent / "execdriver-oci"
PAUSE = "docker.io/library/edpause:1"
APP = "docker.io/library/edapp:1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    why = daemons.cri_missing()
    if why:
        pytest.skip(why)
    if not RUNTIME.exists():
        pytest.skip(f"{RUNTIME} not installed (pip install -e .)")
    from execdriver.rootfs import build_busybox
    from execdriver.testing.cri import oci_image_archive
    work = tmp_path_factory.mktemp("cri-images")
    rootfs = build_busybox(work / "rootfs")
    pause = oci_image_archive(rootfs, work / "pause.tar", PAUSE, ["/bin/sleep", "2147483647"])
    app = oci_image_archive(rootfs, work / "app.tar", APP, ["/bin/sh", "-c", "echo app"],
                            env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"])
    with daemons.private_cri_containerd({"execdriver": str(RUNTIME)}, PAUSE) as c:
        c.import_image(pause, PAUSE)
        c.import_image(app, APP)
        yield c


def pod_config(node: daemons.CriContainerd, name: str, logs: Path) -> dict[str, Any]:
    logs.mkdir(parents=True, exist_ok=True)
    host = {"network": 2, "pid": 0, "ipc": 0}     # network NODE: no CNI needed
    # no hostname: kubelet sets none for a host-network pod (runc, like execdriver-oci,
    # refuses a hostname without a UTS namespace of the container's own)
    return {"metadata": {"name": name, "uid": uuid.uuid4().hex, "namespace": "default"},
            "log_directory": str(logs),
            "linux": {"cgroup_parent": node.cgroup_parent,
                      "security_context": {"namespace_options": host}}}


def container_config(name: str, command: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "image": {"image": APP}, "command": command,
            "log_path": f"{name}.log", "envs": [{"key": "WHO", "value": "cri"}],
            "linux": {"security_context": {"namespace_options": {"network": 2}}}}


def wait_exited(node: daemons.CriContainerd, cid: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = node.cri.call("ContainerStatus", {"container_id": cid}).status
        if status.state == 2 or time.monotonic() > deadline:      # CONTAINER_EXITED
            return status
        time.sleep(0.2)


def oci_list(root: Path) -> list[dict[str, Any]]:
    r = subprocess.run([str(RUNTIME), "--root", str(root), "list", "--format", "json"],
                       capture_output=True, text=True, check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]") or []


def test_images_imported(node: daemons.CriContainerd) -> None:
    tags = {t for i in node.cri.call("ListImages").images for t in i.repo_tags}
    assert {PAUSE, APP} <= tags, tags


def test_pod_through_execdriver(node: daemons.CriContainerd, tmp_path: Path) -> None:
    cri = node.cri
    config = pod_config(node, "edpod", tmp_path / "logs")
    pod = cri.call("RunPodSandbox", {"config": config, "runtime_handler": "execdriver"}).pod_sandbox_id
    status = cri.call("PodSandboxStatus", {"pod_sandbox_id": pod}).status
    assert (status.state, status.runtime_handler) == (0, "execdriver")   # SANDBOX_READY
    oci_root = node.runtime_root["execdriver"] / "k8s.io"
    assert pod in {c["id"] for c in oci_list(oci_root)}, "the sandbox did not run in execdriver-oci"
    assert not (node.runtime_root["runc"] / "k8s.io" / pod).exists()

    # a container that prints and exits 3
    one = cri.call("CreateContainer", {
        "pod_sandbox_id": pod, "sandbox_config": config,
        "config": container_config("once", ["/bin/sh", "-c", "echo hi; echo $WHO $GREETING; exit 3"]),
    }).container_id
    cri.call("StartContainer", {"container_id": one})
    st = wait_exited(node, one)
    assert (st.state, st.exit_code) == (2, 3), st
    log = Path(st.log_path).read_text().splitlines()
    assert [re.sub(r"^\S+ ", "", line) for line in log] == ["stdout F hi", "stdout F cri hi"], log
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) stdout F hi$", log[0]), log

    # a long-running one: ExecSync in it, while execdriver-oci lists it
    sleeper = cri.call("CreateContainer", {
        "pod_sandbox_id": pod, "sandbox_config": config,
        "config": container_config("sleeper", ["/bin/sleep", "1000"]),
    }).container_id
    cri.call("StartContainer", {"container_id": sleeper})
    assert cri.call("ContainerStatus", {"container_id": sleeper}).status.state == 1  # RUNNING
    listed = {c["id"]: c for c in oci_list(oci_root)}
    assert listed[sleeper]["status"] == "running", listed
    r = cri.call("ExecSync", {"container_id": sleeper, "timeout": 20,
                              "cmd": ["/bin/sh", "-c", "echo out $WHO; echo err >&2; exit 7"]})
    assert (r.stdout, r.stderr, r.exit_code) == (b"out cri\n", b"err\n", 7)
    # pid POD: the pod's containers share one pid namespace, the pause process is its pid 1
    r = cri.call("ExecSync", {"container_id": sleeper, "cmd": ["cat", "/proc/1/cmdline"], "timeout": 20})
    assert (r.stdout, r.exit_code) == (b"/bin/sleep\x002147483647\x00", 0)
    r = cri.call("ExecSync", {"container_id": sleeper, "cmd": ["ps", "-o", "args"], "timeout": 20})
    assert "sleep 1000" in r.stdout.decode(), r.stdout

    ids = {c.id: c.state for c in cri.call("ListContainers",
                                           {"filter": {"pod_sandbox_id": pod}}).containers}
    assert ids == {one: 2, sleeper: 1}, ids

    # no command: the image's Cmd runs
    default = cri.call("CreateContainer", {
        "pod_sandbox_id": pod, "sandbox_config": config,
        "config": {**container_config("default", []), "command": []},
    }).container_id
    cri.call("StartContainer", {"container_id": default})
    st = wait_exited(node, default)
    assert st.exit_code == 0 and Path(st.log_path).read_text().endswith(" stdout F app\n")
    cri.call("RemoveContainer", {"container_id": default})

    # StopContainer: SIGTERM, and sleep dies of it
    cri.call("StopContainer", {"container_id": sleeper, "timeout": 10})
    st = wait_exited(node, sleeper)
    assert (st.state, st.exit_code) == (2, 143), st

    cri.call("StopPodSandbox", {"pod_sandbox_id": pod})
    assert cri.call("PodSandboxStatus", {"pod_sandbox_id": pod}).status.state == 1  # NOTREADY
    cri.call("RemovePodSandbox", {"pod_sandbox_id": pod})
    assert not cri.call("ListContainers", {"filter": {"pod_sandbox_id": pod}}).containers
    assert not {pod, one, sleeper} & {c["id"] for c in oci_list(oci_root)}


def test_default_handler_is_runc(node: daemons.CriContainerd, tmp_path: Path) -> None:
    """The comparison: no runtime_handler runs the pod with runc, not execdriver-oci."""
    cri = node.cri
    config = pod_config(node, "runcpod", tmp_path / "logs")
    pod = cri.call("RunPodSandbox", {"config": config}).pod_sandbox_id
    try:
        assert (node.runtime_root["runc"] / "k8s.io" / pod).is_dir()
        assert pod not in {c["id"] for c in oci_list(node.runtime_root["execdriver"] / "k8s.io")}
    finally:
        cri.call("StopPodSandbox", {"pod_sandbox_id": pod})
        cri.call("RemovePodSandbox", {"pod_sandbox_id": pod})
