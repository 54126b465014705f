# What a container sees of itself, one fact a line, for test_docker's differential test:
# the same script runs under runc and under execdriver-oci, the outputs must match.
echo "id: $(id)"
echo "cwd: $(pwd)"
echo "umask: $(umask)"
echo "hostname: $(hostname)"
echo "domain: $(cat /proc/sys/kernel/domainname)"
env | grep -v '^HOSTNAME=' | sort | sed 's/^/env: /'
grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status | tr '\t' ' ' | sed 's/^/status: /'
ulimit -a | sed 's/^/ulimit: /'
# mount point, per-mount flags, propagation kinds and type (not ids or numbers)
awk '{ opt = ""; for (i = 7; $i != "-"; i++) { split($i, a, ":"); opt = opt a[1] " " }
       print "mount: " $5 " " $6 " [" opt "] " $(i + 1) }' /proc/self/mountinfo | sort
for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes \
         cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares pids/pids.max \
         cpuset/cpuset.cpus memory.max memory.swap.max cpu.max cpu.weight pids.max; do
    [ -e "/sys/fs/cgroup/$f" ] && echo "cgroup: $f $(cat /sys/fs/cgroup/$f 2>&1)"
done
echo "oom_score_adj: $(cat /proc/self/oom_score_adj)"
sed 's/^/hosts: /' /etc/hosts
sed 's/^/resolv: /' /etc/resolv.conf
echo "dev: $(ls /dev | tr '\n' ' ')"
df -k /dev/shm | tail -1 | awk '{print "shm: " $2}'
echo "ip_forward: $(cat /proc/sys/net/ipv4/ip_forward)"
echo "pid1: $(tr '\0' ' ' < /proc/1/cmdline)"
echo "writable-root: $(touch /.w 2>/dev/null && echo yes || echo no)"
