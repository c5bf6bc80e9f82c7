#!/usr/bin/env bash
# A real SLURM cluster on one machine (Debian's slurm-wlm + munge), for trying the sbatch jobs on a workstation and
# for the tests. Needs root. `start` installs the packages if they are missing, writes the configuration and
# starts munged, slurmctld and the slurmd daemons (restarting them if the configuration changed); `stop` ends the
# daemons it started, by their PID files; `status` shows the nodes and the queue.
#   slurm/local_cluster.sh start|stop|status
# Two partitions:
#   local (the default): this machine as one node, named after it, without GPUs;
#   multi: two nodes t2f-a and t2f-b, two more slurmd on this machine (`slurmd -N NAME`, each on its own port and
#     spool folder), each with 4 "GPUs" that are only a generic resource (gres.conf, no device files): jobs there
#     take the multi-GPU/multi-node paths (SLURM_GPUS_ON_NODE, srun across nodes), and run on the CPU.
set -euo pipefail
conf=/etc/slurm/slurm.conf
gres=/etc/slurm/gres.conf
host=$(hostname -s)
fake_nodes=(t2f-a t2f-b)
ctld_pid=/run/slurmctld.pid
slurmd_pid() { echo "/run/slurmd-$1.pid"; }  # SlurmdPidFile, %n = the node's name
munge_pid=/run/munge/munged.pid

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

config() {  # slurm.conf on stdout
  local mem cpus; mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys OMP_NUM_THREADS; the node has them all
  # No cgroup.conf: slurm 22.05 does not know CgroupPlugin=disabled, and linuxproc/task-none need none.
  # Every node is this machine and claims all of it: the scheduler oversubscribes it, as the tests want.
  cat <<CONF
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
GresTypes=gpu
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=$(IFS=,; echo "${fake_nodes[*]}") NodeHostname=$host NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$cpus RealMemory=$mem Gres=gpu:4 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=$(IFS=,; echo "${fake_nodes[*]}") MaxTime=INFINITE State=UP
CONF
}

configure() {
  mkdir -p /etc/munge /var/spool/slurmctld /var/log/slurm /run/munge /etc/slurm
  for n in "$host" "${fake_nodes[@]}"; do mkdir -p "/var/spool/slurmd/$n"; done
  if [ ! -s /etc/munge/munge.key ]; then dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  chown -R munge:munge /etc/munge /run/munge; chmod 400 /etc/munge/munge.key
  # "GPUs" that are empty files: Slurm counts and hands them out (SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES) and
  # binds nothing (no cgroups); it drops GPUs without a File.
  mkdir -p /run/t2f-gpus; touch /run/t2f-gpus/gpu{0..3}
  printf 'AutoDetect=off\nNodeName=%s Name=gpu File=/run/t2f-gpus/gpu[0-3]\n' "$(IFS=,; echo "${fake_nodes[*]}")" > "$gres.new"
  config > "$conf.new"
  if cmp -s "$conf.new" "$conf" && cmp -s "$gres.new" "$gres"; then rm "$conf.new" "$gres.new"; return; fi
  stop_slurm  # daemons started with another configuration
  mv "$conf.new" "$conf"; mv "$gres.new" "$gres"
}

alive() {  # the PID file $1 names a running process called $2 (not a stale file whose PID went to another process)
  [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]
}

stop_daemon() {  # the daemon $2 whose PID file is $1, if it runs; wait until it has gone
  alive "$1" "$2" || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "$1: process $pid did not stop" >&2; return 1
}

stop_slurm() {
  for n in "$host" "${fake_nodes[@]}"; do stop_daemon "$(slurmd_pid "$n")" slurmd; done
  stop_daemon /run/slurmd.pid slurmd  # the single slurmd of earlier versions of this script
  stop_daemon "$ctld_pid" slurmctld
}

start() {
  install; configure
  alive "$munge_pid" munged || runuser -u munge -- munged
  alive "$ctld_pid" slurmctld || slurmctld
  for n in "$host" "${fake_nodes[@]}"; do alive "$(slurmd_pid "$n")" slurmd || slurmd -N "$n"; done
  local nodes=$((1 + ${#fake_nodes[@]}))
  for _ in $(seq 60); do
    if [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated)$')" -ge "$nodes" ]; then sinfo; return 0; fi
    for n in "$host" "${fake_nodes[@]}"; do scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true; done
    sleep 1
  done
  echo "the SLURM nodes did not become idle; see /var/log/slurm/" >&2; sinfo -N >&2 || true; return 1
}

stop() { stop_slurm; stop_daemon "$munge_pid" munged; }

case "${1:-}" in
  start) start ;; stop) stop ;; status) sinfo -N; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
