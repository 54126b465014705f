"""The feature vocabulary drivers declare (kept apart from spec.py so that
declaring features does not import pydantic)."""

ALL_FEATURES = (
    "namespaces.pid", "namespaces.network", "namespaces.mount", "namespaces.ipc",
    "namespaces.uts", "namespaces.user", "namespaces.cgroup", "namespaces.time",
    "namespaces.join", "root.readonly", "mounts", "hostname", "domainname",
    "process.user", "process.rlimits", "process.capabilities",
    "process.no_new_privileges", "process.apparmor", "process.oom_score_adj",
    "process.terminal", "process.umask", "process.preserve_fds",
    "resources.memory", "resources.cpu", "resources.cpuset", "resources.pids",
    "resources.block_io", "resources.devices", "devices", "network.none", "network.host",
    "network.bridge", "network.container", "network.netns", "network.ports",
    "network.slirp4netns",
    "seccomp.default", "seccomp.profile", "masked_paths", "readonly_paths",
    "sysctls", "hooks", "idmap", "pause", "exec", "stats", "checkpoint",
)
