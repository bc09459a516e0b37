#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying docs/slurm.md for real (issue 25).
#
#   tools/slurm_local.sh start    install SLURM + munge (Debian packages) if missing, write a
#                                 minimal slurm.conf, start munged, slurmctld and slurmd in the
#                                 background; prints the SLURM_CONF to export
#   tools/slurm_local.sh stop     stop the daemons (state stays under $SLURM_LOCAL_DIR)
#   tools/slurm_local.sh status   sinfo and squeue
#
# Everything lives under SLURM_LOCAL_DIR (default /tmp/itransfer-slurm): the config, state,
# spool, logs and the job-completion log that `sacct --completion` reads (there is no slurmdbd,
# so plain `sacct` has no accounting database to read). Needs root (slurmd runs jobs as their
# user) and apt access for the first install.
set -euo pipefail

STATE_DIR=${SLURM_LOCAL_DIR:-/tmp/itransfer-slurm}
CONF="$STATE_DIR/slurm.conf"
NODE=$(hostname -s)

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        return
    fi
    echo "installing slurm-wlm and munge (Debian packages) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$STATE_DIR"/{state,spool,log}
    local cpus memory
    cpus=$(nproc)
    # A little under the machine's memory: slurmd refuses a node that claims more than it has.
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    # proctrack/linuxproc tracks a job's processes by parentage, so `scancel --signal` reaches
    # the ones `accelerate launch` starts in their own sessions (what proctrack/cgroup does on
    # a real cluster; cgroup management is not ours to take over on a shared machine).
    cat >"$CONF" <<EOF
ClusterName=itransfer-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if ! munge -n >/dev/null 2>&1; then
        if id munge >/dev/null 2>&1; then
            runuser -u munge -- munged
        else
            munged --force
        fi
    fi
    munge -n | unmunge >/dev/null
}

wait_for_node() {
    for _ in $(seq 60); do
        if sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; then
            return 0
        fi
        sleep 1
    done
    echo "the node did not come up; see $STATE_DIR/log/" >&2
    sinfo -N -l >&2 || true
    return 1
}

start() {
    install_packages
    write_config
    start_munge
    export SLURM_CONF="$CONF"
    pgrep -x slurmctld >/dev/null || slurmctld -f "$CONF"
    pgrep -x slurmd >/dev/null || slurmd -f "$CONF"
    wait_for_node
    scontrol -Q update nodename="$NODE" state=resume 2>/dev/null || true
    echo "one-node SLURM up: export SLURM_CONF=$CONF"
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) SLURM_CONF="$CONF" sinfo -N -l; SLURM_CONF="$CONF" squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
