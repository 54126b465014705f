"""/etc/hosts, /etc/hostname and /etc/resolv.conf for a container.

The files are written into the container's state directory; the init
bind-mounts them over the rootfs's own, so the image is never modified.
Nameservers on loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) are
unreachable from a container's own netns and are dropped from the host's list.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from ..fileio import write_atomic

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"

_LOCALHOST = ("127.0.0.1\tlocalhost\n"
              "::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\n"
              "ff00::0\tip6-mcastprefix\n"
              "ff02::1\tip6-allnodes\n"
              "ff02::2\tip6-allrouters\n")


def default_hostname(container_id: str) -> str:
    """Like docker: the first 12 characters of the id, cut to what a host name allows."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", container_id[:12]).strip("-")
    return name or "container"


def hosts_text(hostname: str, addresses: list[str], mode: str) -> str:
    text = _LOCALHOST
    ips = [str(ipaddress.ip_interface(a).ip) for a in addresses]
    if ips:
        text += "".join(f"{ip}\t{hostname}\n" for ip in ips)
    elif mode != "host":
        # no address of its own: keep the name resolvable without any network
        text += f"127.0.1.1\t{hostname}\n"
    return text


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


def resolv_conf_text(dns: list[str], host_text: str, mode: str) -> str:
    """Explicit ``dns`` servers win; otherwise the host's, minus loopback ones."""
    lines = host_text.splitlines()
    keep = [ln for ln in lines if ln.split()[:1] and ln.split()[0] in ("search", "domain", "options")]
    if dns:
        servers = list(dns)
    else:
        servers = [ln.split()[1] for ln in lines
                   if len(ln.split()) > 1 and ln.split()[0] == "nameserver"]
        if mode != "host":
            servers = [s for s in servers if not _is_loopback(s)]
    out = [f"nameserver {s}" for s in servers] + keep
    return "\n".join(out) + "\n" if out else "# no nameservers\n"


def _write(path: Path, text: str) -> None:
    write_atomic(path, text, 0o644)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def write_files(dest_dir: Path, container_id: str, mode: str, addresses: list[str],
                hostname: str | None, dns: list[str],
                host_resolv_conf: str = HOST_RESOLV_CONF,
                host_hosts: str = HOST_HOSTS) -> dict[str, str]:
    """Write hosts, hostname and resolv.conf into ``dest_dir``; map container path -> file."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = hostname or default_hostname(container_id)
    if mode == "host":
        # the host's network: its hosts file is the right one, plus our name
        hosts = _read(host_hosts) or _LOCALHOST
        if not re.search(rf"\s{re.escape(name)}(\s|$)", hosts):
            hosts = hosts.rstrip("\n") + f"\n127.0.1.1\t{name}\n"
    else:
        hosts = hosts_text(name, addresses, mode)
    files: dict[str, Any] = {
        "/etc/hosts": (dest_dir / "hosts", hosts),
        "/etc/hostname": (dest_dir / "hostname", name + "\n"),
        "/etc/resolv.conf": (dest_dir / "resolv.conf",
                             resolv_conf_text(dns, _read(host_resolv_conf), mode)),
    }
    for path, text in files.values():
        _write(path, text)
    return {target: str(path) for target, (path, _) in files.items()}
