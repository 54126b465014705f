"""execdriver.testing.cri without a daemon: the CRI messages' wire bytes, and the OCI
image archive's layout (every digest names its blob, the diff_id its uncompressed layer)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from execdriver.testing import cri


def test_request_wire_bytes() -> None:
    # field 2 (runtime_handler), length-delimited; field 1 (config) > 1 (metadata) > 1 (name)
    m = cri.message("RunPodSandboxRequest", {"config": {"metadata": {"name": "p"}},
                                             "runtime_handler": "execdriver"})
    assert m.SerializeToString() == b"\x0a\x05\x0a\x03\x0a\x01p" + b"\x12\x0aexecdriver"
    # repeated string cmd = 2, int64 timeout = 3 (varint)
    m = cri.message("ExecSyncRequest", {"container_id": "c", "cmd": ["a", "b"], "timeout": 5})
    assert m.SerializeToString() == b"\x0a\x01c\x12\x01a\x12\x01b\x18\x05"
    # network = NODE (enum 2) in NamespaceOption field 1
    m = cri.message("NamespaceOption", {"network": cri.NAMESPACE_NODE})
    assert m.SerializeToString() == b"\x08\x02"


def test_response_unknown_fields_are_kept_aside() -> None:
    # ContainerStatusResponse.status (1) with exit_code (7) = 3, and an info map (2) we omit
    data = b"\x0a\x02\x38\x03" + b"\x12\x04\x0a\x02ab"
    r = cri.message_class("ContainerStatusResponse").FromString(data)
    assert r.status.exit_code == 3


def test_oci_image_archive_layout(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "hello").write_text("hi\n")
    archive = cri.oci_image_archive(rootfs, tmp_path / "img.tar", "docker.io/library/x:1",
                                    ["/bin/hello"])
    with tarfile.open(archive) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers()  # type: ignore[union-attr]
                 if m.isfile()}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/x:1"
    manifest = json.loads(files["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Cmd"] == ["/bin/hello"]
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    raw = gzip.decompress(layer)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        assert "bin/hello" in t.getnames()
