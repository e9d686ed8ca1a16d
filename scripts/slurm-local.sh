#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests/slurm.rs and for trying `sweep slurm`
# without a cluster (Debian/Ubuntu, as root; see ../shared/reference/slurm.md for the settings).
#   scripts/slurm-local.sh start   install slurm-wlm and munge if missing, configure, start,
#                                  wait for an idle node
#   scripts/slurm-local.sh stop    stop the daemons
set -euo pipefail
STATE=/var/spool/sweep-slurm

stop() {
  local pids="" f p
  for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid; do
    { [ -f "$f" ] && p=$(cat "$f") && kill "$p" 2>/dev/null && pids="$pids $p"; } || true
  done
  # Wait for them to exit (a new slurmctld cannot bind the port while the old one runs).
  for p in $pids; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  return 0
}

start() {
  if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge > /dev/null
  fi
  if sinfo -h -o %T 2> /dev/null | grep -q idle; then
    echo "slurm: already running"
    return 0
  fi
  stop
  local host cpus mem
  host=$(hostname -s)
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$((mem * 9 / 10))
  mkdir -p /etc/slurm /run/slurm /var/spool/slurmd /var/spool/slurmctld /var/log/slurm "$STATE" /run/munge /var/lib/munge /var/log/munge /etc/munge
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=sweep-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerParameters=bf_interval=2,sched_interval=5
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=600
DefMemPerCPU=1024
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2> /dev/null; }
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0400 /etc/munge/munge.key
  chmod 0700 /etc/munge
  su -s /bin/sh munge -c /usr/sbin/munged
  munge -n | unmunge > /dev/null
  slurmctld
  for _ in $(seq 100); do scontrol ping 2> /dev/null | grep -q UP && break; sleep 0.2; done
  slurmd
  for _ in $(seq 150); do sinfo -h -o %T 2> /dev/null | grep -q idle && break; sleep 0.2; done
  sinfo -h -o %T | grep -q idle || { echo "slurm: the node did not become idle"; sinfo; tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; exit 1; }
  echo "slurm: node $host idle ($cpus CPUs, $mem MB)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
