# Sourced by the VM lane's stage 2 scripts (stage2.sh, stage2-systemd.sh, job-systemd.sh) in
# the guest: the mounts they share and the job runner.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "${SAY_AS:-vm-stage2}: $*" >/dev/console; }
off() { sync; echo o >/proc/sysrq-trigger; sleep 60; }

# tmpfs on /run and /tmp, the checkout kept visible through them, the result share on
# /run/vm-result (powers off without it). Needs $repo.
mount_run_tmp_result() {
    # The checkout may live under /tmp or /run (a CI clone): keep it visible through the
    # fresh tmpfs mounts there by moving a bind of it back on top.
    case "$repo" in /tmp/*|/run/*) mkdir -p /.checkout && mount --bind "$repo" /.checkout ;; esac
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    if [ -d /.checkout ]; then
        mkdir -p "$repo" && mount --move /.checkout "$repo" || say "cannot keep the checkout at $repo"
    fi
    mkdir -p /run/vm-result
    if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 result /run/vm-result; then
        say "cannot mount the result share (mount_tag result)"
        off
    fi
}

# The job (a bash script written by the host: cd to the checkout, run pytest), its output
# mirrored to the console while it runs; output and exit status left in the result share.
run_job() {
    local limit job status
    limit=$(cat /run/vm-result/time-limit 2>/dev/null || echo 780)
    timeout -k 10 "$limit" bash /run/vm-result/job.sh >/run/vm-result/output.txt 2>&1 </dev/null &
    job=$!
    tail -n +1 -f /run/vm-result/output.txt --pid=$job >/dev/console 2>&1 &
    wait $job
    status=$?
    sleep 1
    echo "$status" >/run/vm-result/status
    say "job exit status $status"
}
