"""Device access rules: the default allow list, v1 rule lines, and an emulator.

The emulator reproduces the cgroup v1 devices controller (a default, allow or deny,
plus exceptions keyed by type/major/minor) so that the v2 BPF program behaves
exactly like v1 does for the same rule list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...config import Device, DeviceRule

# deny everything, then allow the devices every container needs
DEFAULT_ALLOWED = [
    DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),    # null
    DeviceRule(allow=True, type="c", major=1, minor=5, access="rwm"),    # zero
    DeviceRule(allow=True, type="c", major=1, minor=7, access="rwm"),    # full
    DeviceRule(allow=True, type="c", major=1, minor=8, access="rwm"),    # random
    DeviceRule(allow=True, type="c", major=1, minor=9, access="rwm"),    # urandom
    DeviceRule(allow=True, type="c", major=5, minor=0, access="rwm"),    # tty
    DeviceRule(allow=True, type="c", major=5, minor=2, access="rwm"),    # ptmx
    DeviceRule(allow=True, type="c", major=136, minor=None, access="rwm"),  # pts/*
]
DENY_ALL = DeviceRule(allow=False, type="a", major=None, minor=None)


def container_rules(extra: Sequence[DeviceRule], nodes: Sequence[Device] = ()) -> Sequence[DeviceRule]:
    """The full ordered rule list for a container: deny all, defaults, the spec's, then
    an allow rule for each of the spec's device nodes the rules before do not decide."""
    rules = [DENY_ALL, *DEFAULT_ALLOWED, *extra]
    return rules + node_rules(rules, extra, nodes)


def node_rules(rules: Sequence[DeviceRule], spec_rules: Sequence[DeviceRule],
               nodes: Sequence[Device]) -> list[DeviceRule]:
    """``rwm`` for each device node (fifos need none) that ``rules`` do not allow already
    and that no rule of the spec names (its type, number or wildcard): that one decides."""
    emu = DeviceEmulator.from_rules(rules)
    out: list[DeviceRule] = []
    for node in nodes:
        kind = "c" if node.type == "u" else node.type
        if kind not in ("c", "b") or node.major is None or node.minor is None:
            continue
        if emu.allows(kind, node.major, node.minor, "rwm") or any(
                r.type == kind and r.major in (None, node.major) and r.minor in (None, node.minor)
                for r in spec_rules):
            continue
        rule = DeviceRule(allow=True, type=kind, major=node.major, minor=node.minor, access="rwm")
        emu.apply(rule)
        out.append(rule)
    return out


def _num(n: int | None) -> str:
    return "*" if n is None else str(n)


def normalize_access(access: str) -> str:
    return "".join(c for c in "rwm" if c in access)


def rule_line(rule: DeviceRule) -> str:
    """The text written to devices.allow / devices.deny: ``c 1:3 rwm`` or ``a``."""
    if rule.type == "a":
        return "a"
    return f"{rule.type} {_num(rule.major)}:{_num(rule.minor)} {normalize_access(rule.access)}"


def v1_writes(rules: Sequence[DeviceRule]) -> list[tuple[str, str]]:
    """(file, line) pairs for v1: ``devices.allow`` or ``devices.deny`` per rule, in order."""
    return [("devices.allow" if r.allow else "devices.deny", rule_line(r)) for r in rules]


@dataclass(frozen=True)
class DeviceException:
    """One exception to the default: ``type major:minor access`` (None = any)."""
    type: str
    major: int | None
    minor: int | None
    access: str

    def line(self) -> str:
        return f"{self.type} {_num(self.major)}:{_num(self.minor)} {self.access}"

    def _matches(self, type_: str, major: int, minor: int) -> bool:
        return (self.type == type_ and self.major in (None, major)
                and self.minor in (None, minor))


class DeviceEmulator:
    """The v1 devices controller's state machine, in Python."""

    def __init__(self, default_allow: bool = True) -> None:
        self.default_allow = default_allow      # a fresh v1 root cgroup allows all
        self._exc: dict[tuple[str, int | None, int | None], str] = {}

    @classmethod
    def from_rules(cls, rules: Sequence[DeviceRule]) -> DeviceEmulator:
        emu = cls()
        for r in rules:
            emu.apply(r)
        return emu

    def apply(self, rule: DeviceRule) -> None:
        if rule.type == "a":
            # v1 ignores major/minor/access for "a": it switches the default, clears exceptions
            self.default_allow = rule.allow
            self._exc.clear()
            return
        key = (rule.type, rule.major, rule.minor)
        have = set(self._exc.get(key, ""))
        if rule.allow != self.default_allow:        # an exception: add access bits
            have |= set(rule.access)
        else:                                       # back to default: remove exact-key bits
            have -= set(rule.access)
        if have:
            self._exc[key] = normalize_access("".join(have))
        else:
            self._exc.pop(key, None)

    def exceptions(self) -> list[DeviceException]:
        """In the order they were first added, as v1 lists them."""
        return [DeviceException(t, ma, mi, acc) for (t, ma, mi), acc in self._exc.items()]

    def allows(self, type_: str, major: int, minor: int, access: str) -> bool:
        """Would v1 let a process do ``access`` on device ``type major:minor``?"""
        want = set(access)
        for ex in self.exceptions():
            if not ex._matches(type_, major, minor):
                continue
            if self.default_allow and want & set(ex.access):
                return False        # a deny exception hits any overlapping access
            if not self.default_allow and want <= set(ex.access):
                return True         # an allow exception must cover all the access asked
        return self.default_allow

    def list_lines(self) -> list[str]:
        """What v1 devices.list shows: ``a *:* rwm`` when allowing all, else the exceptions."""
        if self.default_allow:
            return ["a *:* rwm"]
        return [ex.line() for ex in self.exceptions()]


def parse_devices_list(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}
