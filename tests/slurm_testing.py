"""A throwaway single-node SLURM cluster on localhost, for the executor tests.

Built from Debian's ``slurm-wlm`` and ``munge`` packages, configured entirely in a
temporary folder (its own munge key and socket, state and spool folders, ports), with
``slurmctld`` and ``slurmd`` running as root on this host and a partition ``debug``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


class SlurmUnavailable(RuntimeError):
    """The cluster cannot start here (the reason is the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).is_file()), None
    )


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    pid_files: list[Path]

    @property
    def env(self) -> dict[str, str]:
        """What client commands (sbatch, squeue) need to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def squeue(self) -> str:
        return subprocess.run(
            ["squeue", "-h", "-o", "%i %T"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=30,
        ).stdout

    def stop(self) -> None:
        for pid_file in reversed(self.pid_files):
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        time.sleep(0.5)


def slurm_conf(root: Path, host: str, cpus: int) -> str:
    return f"""\
ClusterName=harnesstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=600
SchedulerParameters=defer_batch
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def run_quiet(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if result.returncode != 0:
        raise SlurmUnavailable(f"{' '.join(command[:1])} failed: {result.stderr.strip()[-300:]}")


def start_cluster(root: Path, timeout: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd configured under ``root``; raise SlurmUnavailable."""
    missing = [d for d in DAEMONS if find(d) is None]
    if missing:
        raise SlurmUnavailable(
            f"SLURM is not installed ({', '.join(missing)} missing; "
            "apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster's daemons must run as root")
    host = socket.gethostname().split(".")[0]
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    run_quiet([find("mungekey") or "mungekey", "--create", f"--keyfile={key}"], env)
    os.chmod(key, 0o400)
    cluster = SlurmCluster(root, root / "slurm.conf", [])
    (root / "slurm.conf").write_text(slurm_conf(root, host, os.cpu_count() or 1))
    munge = root / "munge"
    run_quiet(
        [
            find("munged") or "munged",
            f"--key-file={key}",
            f"--socket={munge}/munge.socket",
            f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
            "--force",
        ],
        env,
    )
    cluster.pid_files.append(munge / "munged.pid")
    try:
        run_quiet([find("slurmctld") or "slurmctld", "-f", str(cluster.conf)], env)
        cluster.pid_files.append(root / "slurmctld.pid")
        run_quiet([find("slurmd") or "slurmd", "-f", str(cluster.conf), "-N", host], env)
        cluster.pid_files.append(root / "slurmd.pid")
        wait_idle(cluster, host, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_idle(cluster: SlurmCluster, host: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["sinfo", "-h", "-n", host, "-o", "%T"],
            capture_output=True,
            text=True,
            env={**os.environ, **cluster.env},
            timeout=30,
        )
        state = (result.stdout or result.stderr).strip()
        if state.startswith(("idle", "mixed")):
            return
        time.sleep(0.5)
    logs = (cluster.root / "slurmctld.log", cluster.root / "slurmd.log")
    texts = [p.read_text().strip() for p in logs if p.is_file()]
    tail = " | ".join(t.splitlines()[-1] for t in texts if t)
    raise SlurmUnavailable(f"node {host} did not become idle (state '{state}'): {tail}")
