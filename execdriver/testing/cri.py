"""A small Kubernetes CRI (runtime.v1) client, and OCI image archives, for tests.

Kubelet drives a node's container runtime over the CRI: gRPC services
``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService``. The tests drive
containerd's CRI plugin the same way, without kubelet and without protoc: the
messages the tests use are declared below as field tables (names and numbers as
in k8s.io/cri-api's ``pkg/apis/runtime/v1/api.proto``, fields we do not use left
out), turned into protobuf classes at run time with ``descriptor_pb2`` and
``message_factory``, and sent with grpc's generic ``unary_unary``. What we leave
out of a response is kept as unknown fields and ignored. Enums are declared as
int32 (the same varint on the wire); their values are the constants below.

``oci_image_archive`` writes an OCI image layout tar (``oci-layout``,
``index.json``, blobs: a gzip layer of a rootfs directory, the image config, the
manifest) that ``ctr images import`` loads: images for the CRI with nothing pulled.

Needs grpcio and protobuf (the ``test`` extra).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
from pathlib import Path
from typing import Any

# enum values (api.proto)
NAMESPACE_POD, NAMESPACE_CONTAINER, NAMESPACE_NODE = 0, 1, 2
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN = 0, 1, 2, 3
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1

# message: [(field, number, type, repeated)]; a type that is not a scalar names a message
_S, _B, _I32, _I64, _U32, _U64, _BYTES = "string", "bool", "int32", "int64", "uint32", "uint64", "bytes"
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "VersionRequest": [("version", 1, _S, False)],
    "VersionResponse": [("version", 1, _S, False), ("runtime_name", 2, _S, False),
                        ("runtime_version", 3, _S, False), ("runtime_api_version", 4, _S, False)],
    "NamespaceOption": [("network", 1, _I32, False), ("pid", 2, _I32, False),
                        ("ipc", 3, _I32, False), ("target_id", 4, _S, False)],
    "LinuxSandboxSecurityContext": [("namespace_options", 1, "NamespaceOption", False)],
    "LinuxPodSandboxConfig": [("cgroup_parent", 1, _S, False),
                              ("security_context", 2, "LinuxSandboxSecurityContext", False)],
    "PodSandboxMetadata": [("name", 1, _S, False), ("uid", 2, _S, False),
                           ("namespace", 3, _S, False), ("attempt", 4, _U32, False)],
    "PodSandboxConfig": [("metadata", 1, "PodSandboxMetadata", False), ("hostname", 2, _S, False),
                         ("log_directory", 3, _S, False), ("linux", 8, "LinuxPodSandboxConfig", False)],
    "RunPodSandboxRequest": [("config", 1, "PodSandboxConfig", False),
                             ("runtime_handler", 2, _S, False)],
    "RunPodSandboxResponse": [("pod_sandbox_id", 1, _S, False)],
    "StopPodSandboxRequest": [("pod_sandbox_id", 1, _S, False)],
    "StopPodSandboxResponse": [],
    "RemovePodSandboxRequest": [("pod_sandbox_id", 1, _S, False)],
    "RemovePodSandboxResponse": [],
    "PodSandboxStatusRequest": [("pod_sandbox_id", 1, _S, False), ("verbose", 2, _B, False)],
    "PodSandboxStatus": [("id", 1, _S, False), ("metadata", 2, "PodSandboxMetadata", False),
                         ("state", 3, _I32, False), ("created_at", 4, _I64, False),
                         ("runtime_handler", 9, _S, False)],
    "PodSandboxStatusResponse": [("status", 1, "PodSandboxStatus", False)],
    "ListPodSandboxRequest": [],
    "PodSandbox": [("id", 1, _S, False), ("metadata", 2, "PodSandboxMetadata", False),
                   ("state", 3, _I32, False), ("runtime_handler", 7, _S, False)],
    "ListPodSandboxResponse": [("items", 1, "PodSandbox", True)],
    "ImageSpec": [("image", 1, _S, False)],
    "KeyValue": [("key", 1, _S, False), ("value", 2, _S, False)],
    "ContainerMetadata": [("name", 1, _S, False), ("attempt", 2, _U32, False)],
    "LinuxContainerSecurityContext": [("namespace_options", 3, "NamespaceOption", False)],
    "LinuxContainerConfig": [("security_context", 2, "LinuxContainerSecurityContext", False)],
    "ContainerConfig": [("metadata", 1, "ContainerMetadata", False), ("image", 2, "ImageSpec", False),
                        ("command", 3, _S, True), ("args", 4, _S, True), ("working_dir", 5, _S, False),
                        ("envs", 6, "KeyValue", True), ("log_path", 11, _S, False),
                        ("linux", 15, "LinuxContainerConfig", False)],
    "CreateContainerRequest": [("pod_sandbox_id", 1, _S, False), ("config", 2, "ContainerConfig", False),
                               ("sandbox_config", 3, "PodSandboxConfig", False)],
    "CreateContainerResponse": [("container_id", 1, _S, False)],
    "StartContainerRequest": [("container_id", 1, _S, False)],
    "StartContainerResponse": [],
    "StopContainerRequest": [("container_id", 1, _S, False), ("timeout", 2, _I64, False)],
    "StopContainerResponse": [],
    "RemoveContainerRequest": [("container_id", 1, _S, False)],
    "RemoveContainerResponse": [],
    "ContainerStatusRequest": [("container_id", 1, _S, False), ("verbose", 2, _B, False)],
    "ContainerStatus": [("id", 1, _S, False), ("metadata", 2, "ContainerMetadata", False),
                        ("state", 3, _I32, False), ("created_at", 4, _I64, False),
                        ("started_at", 5, _I64, False), ("finished_at", 6, _I64, False),
                        ("exit_code", 7, _I32, False), ("image", 8, "ImageSpec", False),
                        ("image_ref", 9, _S, False), ("reason", 10, _S, False),
                        ("message", 11, _S, False), ("log_path", 15, _S, False)],
    "ContainerStatusResponse": [("status", 1, "ContainerStatus", False)],
    "ExecSyncRequest": [("container_id", 1, _S, False), ("cmd", 2, _S, True), ("timeout", 3, _I64, False)],
    "ExecSyncResponse": [("stdout", 1, _BYTES, False), ("stderr", 2, _BYTES, False),
                         ("exit_code", 3, _I32, False)],
    "ContainerFilter": [("id", 1, _S, False), ("pod_sandbox_id", 3, _S, False)],
    "ListContainersRequest": [("filter", 1, "ContainerFilter", False)],
    "Container": [("id", 1, _S, False), ("pod_sandbox_id", 2, _S, False),
                  ("metadata", 3, "ContainerMetadata", False), ("image", 4, "ImageSpec", False),
                  ("image_ref", 5, _S, False), ("state", 6, _I32, False)],
    "ListContainersResponse": [("containers", 1, "Container", True)],
    "ListImagesRequest": [],
    "Image": [("id", 1, _S, False), ("repo_tags", 2, _S, True), ("repo_digests", 3, _S, True),
              ("size", 4, _U64, False)],
    "ListImagesResponse": [("images", 1, "Image", True)],
}
_IMAGE_METHODS = {"ListImages"}

_classes: dict[str, Any] = {}


def message_class(name: str) -> Any:
    """The protobuf class of CRI message ``name`` (``runtime.v1.NAME``)."""
    if not _classes:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        fdp = descriptor_pb2.FileDescriptorProto(name="execdriver_cri_v1.proto",
                                                 package="runtime.v1", syntax="proto3")
        F = descriptor_pb2.FieldDescriptorProto
        scalars = {_S: F.TYPE_STRING, _B: F.TYPE_BOOL, _I32: F.TYPE_INT32, _I64: F.TYPE_INT64,
                   _U32: F.TYPE_UINT32, _U64: F.TYPE_UINT64, _BYTES: F.TYPE_BYTES}
        for mname, fields in _MESSAGES.items():
            m = fdp.message_type.add(name=mname)
            for fname, number, ftype, repeated in fields:
                f = m.field.add(name=fname, number=number,
                                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
                if ftype in scalars:
                    f.type = scalars[ftype]
                else:
                    f.type, f.type_name = F.TYPE_MESSAGE, f".runtime.v1.{ftype}"
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        for mname in _MESSAGES:
            _classes[mname] = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"runtime.v1.{mname}"))
    return _classes[name]


def message(name: str, fields: dict[str, Any] | None = None) -> Any:
    """A ``runtime.v1.NAME`` message from a dict (proto field names, nested dicts and lists)."""
    from google.protobuf import json_format
    return json_format.ParseDict(fields or {}, message_class(name)())


class CriClient:
    """Calls on one CRI endpoint (a unix socket): ``client.call("RunPodSandbox", {...})``
    sends a ``RunPodSandboxRequest`` built from the dict and returns the response message."""

    def __init__(self, socket: str | os.PathLike[str], timeout: float = 60) -> None:
        import grpc
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, fields: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        service = "ImageService" if method in _IMAGE_METHODS else "RuntimeService"
        request, response = message_class(f"{method}Request"), message_class(f"{method}Response")
        rpc = self.channel.unary_unary(f"/runtime.v1.{service}/{method}",
                                       request_serializer=request.SerializeToString,
                                       response_deserializer=response.FromString)
        return rpc(message(f"{method}Request", fields), timeout=timeout or self.timeout)


def _oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def oci_image_archive(rootfs: str | os.PathLike[str], dest: str | os.PathLike[str], name: str,
                      cmd: list[str], env: list[str] | None = None) -> Path:
    """Write an OCI image layout tar of ``rootfs`` (one gzip layer) to ``dest``, named
    ``name`` (``io.containerd.image.name``, a full reference: docker.io/library/x:tag)
    with ``cmd`` as its Cmd. Returns ``dest``."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        for entry in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, entry), arcname=entry)
    layer_raw = layer_tar.getvalue()
    layer = gzip.compress(layer_raw, mtime=0)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    config = {
        "architecture": _oci_arch(), "os": "linux",
        "config": {"Cmd": cmd, "Env": env or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_raw).hexdigest()]},
        "history": [{"created_by": "execdriver.testing.cri.oci_image_archive"}],
    }
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    mdesc = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    mdesc["annotations"] = {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
    mdesc["platform"] = {"architecture": _oci_arch(), "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [mdesc]}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps(index).encode()}
    files.update({f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in blobs.items()})
    with tarfile.open(dest, "w") as t:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    return Path(dest)
