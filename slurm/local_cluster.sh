#!/usr/bin/env bash
# A real one-machine SLURM cluster (Debian's slurm-wlm + munge), for trying the sbatch jobs on a workstation and
# for the tests. Needs root. `start` installs the packages if they are missing, writes the configuration and
# starts munged, slurmctld and slurmd; `stop` ends them; `status` shows the node.
#   slurm/local_cluster.sh start|stop|status
set -euo pipefail
conf=/etc/slurm/slurm.conf
host=$(hostname -s)

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

configure() {
  mkdir -p /etc/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm
  if [ ! -s /etc/munge/munge.key ]; then dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  chown -R munge:munge /etc/munge /run/munge; chmod 400 /etc/munge/munge.key
  local mem; mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  # No cgroup.conf: slurm 22.05 does not know CgroupPlugin=disabled, and linuxproc/task-none need none.
  cat > "$conf" <<CONF
ClusterName=t2f-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  install; configure
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then sinfo; return 0; fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true; sleep 1
  done
  echo "the SLURM node did not become idle; see /var/log/slurm/" >&2; sinfo >&2 || true; return 1
}

stop() { pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true; }

case "${1:-}" in
  start) start ;; stop) stop ;; status) sinfo; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
