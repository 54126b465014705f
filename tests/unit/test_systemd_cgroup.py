"""The systemd cgroup driver's pure parts: runc's cgroupsPath and slice naming, the unit
properties of a spec's limits, and the D-Bus wire format its calls use."""

from __future__ import annotations

import struct

import pytest

from execdriver.config import CPUResources, MemoryResources, PidsResources, Resources
from execdriver.errors import InvalidArgument
from execdriver.kernel.cgroups import dbus
from execdriver.kernel.cgroups.systemd import expand_slice, parse, unit_properties


@pytest.mark.parametrize(("slice_", "path"), [
    ("system.slice", "/system.slice"), ("-.slice", ""),
    ("kubepods-besteffort-pod12.slice",
     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice")])
def test_slices_expand_as_systemd_names_them(slice_: str, path: str) -> None:
    assert expand_slice(slice_) == path


@pytest.mark.parametrize("bad", ["system", "a--b.slice", "-a.slice", "a/b.slice", ".slice"])
def test_bad_slices_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        expand_slice(bad)


def test_cgroups_path_gives_the_scope() -> None:
    assert parse("systemd:kubepods.slice:cri-containerd:abc") == ("kubepods.slice",
                                                                  "cri-containerd-abc.scope")
    assert parse("systemd::execdriver:c1") == ("system.slice", "execdriver-c1.scope")
    assert parse("systemd:a.slice::c1") == ("a.slice", "c1.scope")
    for bad in ("systemd:a:b", "systemd:a.slice:p:", "systemd:a.slice:p:x.slice"):
        with pytest.raises(InvalidArgument):
            parse(bad)


def test_limits_become_unit_properties() -> None:
    res = Resources(memory=MemoryResources(limit=32 << 20, swap=48 << 20),
                    cpu=CPUResources(shares=1024, quota=50000, period=100000),
                    pids=PidsResources(limit=40))
    props = dict(unit_properties(res))
    assert props["MemoryMax"] == ("t", 32 << 20)
    assert props["MemorySwapMax"] == ("t", 16 << 20)
    assert props["TasksMax"] == ("t", 40)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert props["CPUWeight"][0] == "t" and props["CPUWeight"][1] > 1
    assert unit_properties(Resources()) == []


def test_a_method_call_is_marshalled_as_the_spec_says() -> None:
    msg = dbus.method_call(7, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                           "StopUnit", "org.freedesktop.systemd1", "ss", ["a.scope", "replace"])
    assert msg[:4] == b"l\x01\x00\x01"
    body_len, serial = struct.unpack_from("<II", msg, 4)
    assert serial == 7
    # the body: two strings, each length-prefixed, NUL-terminated, 4-aligned
    assert msg[-body_len:] == (struct.pack("<I", 7) + b"a.scope\0" + struct.pack("<I", 7)
                               + b"replace\0")
    assert (len(msg) - body_len) % 8 == 0


def test_what_is_written_reads_back() -> None:
    sig = "ssa(sv)a(sa(sv))"
    args = ["u.scope", "replace",
            [("PIDs", ("au", [1, 2])), ("Delegate", ("b", True)), ("MemoryMax", ("t", 1 << 40)),
             ("Slice", ("s", "x.slice"))], []]
    w = dbus.Writer()
    for t, a in zip(dbus.split_signature(sig), args, strict=True):
        w.put(t, a)
    r = dbus.Reader(bytes(w.buf))
    back = [r.get(t) for t in dbus.split_signature(sig)]
    assert back[0:2] == ["u.scope", "replace"]
    assert back[2] == [("PIDs", ("au", [1, 2])), ("Delegate", ("b", True)),
                       ("MemoryMax", ("t", 1 << 40)), ("Slice", ("s", "x.slice"))]
    assert back[3] == []
    assert r.pos == len(w.buf)


def test_an_error_reply_parses() -> None:
    body = dbus.Writer()
    body.put("s", "Unit x.scope not loaded.")
    head = dbus.Writer()
    for byte in (ord("l"), dbus.ERROR, 1, 1):
        head.put("y", byte)
    head.put("u", len(body.buf))
    head.put("u", 9)
    head.put("a(yv)", [(dbus.F_ERROR_NAME, ("s", "org.freedesktop.systemd1.NoSuchUnit")),
                       (dbus.F_REPLY_SERIAL, ("u", 3)), (dbus.F_SIGNATURE, ("g", "s"))])
    head.align(8)
    kind, fields, values, total = dbus.parse_message(bytes(head.buf + body.buf) + b"rest")
    assert kind == dbus.ERROR and total == len(head.buf) + len(body.buf)
    assert fields[dbus.F_ERROR_NAME] == "org.freedesktop.systemd1.NoSuchUnit"
    assert fields[dbus.F_REPLY_SERIAL] == 3 and values == ["Unit x.scope not loaded."]
    assert dbus.parse_message(bytes(head.buf))[3] == 0      # not all there yet


def test_config_json_names_the_systemd_driver_for_a_slice_path() -> None:
    from execdriver.oci.config import _Problems, convert_cgroups_path
    p = _Problems()
    assert convert_cgroups_path("machine.slice:libpod:abc", "linux.cgroupsPath", p) == \
        "systemd:machine.slice:libpod:abc"
    assert convert_cgroups_path("/a/b", "linux.cgroupsPath", p) == "a/b"
