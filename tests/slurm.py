"""A one-node Slurm cluster on this machine, made for one test session and torn down after it.

``Slurm(directory)`` writes a ``slurm.conf`` for the run (its own ports, state and spool
directories under ``directory``; ``AuthType=auth/none``, since only root on this machine
talks to it), starts ``slurmctld`` and ``slurmd`` in the foreground and waits until the node
is idle. Slurm's commands (``sbatch``, ``squeue``, ``scancel``) find the cluster through
``SLURM_CONF``, which ``env()`` sets. It needs root and Debian's ``slurm-wlm`` (installed
when missing); ``reason_unavailable()`` says in one line why it cannot run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

from moi.storage.redis_server import free_port
from tests.processes import stop

DAEMONS = ("slurmctld", "slurmd")


def reason_unavailable() -> str | None:
    """None when a Slurm cluster can be started here; otherwise one line saying why not."""
    if os.geteuid() != 0:
        return "the Slurm tests need root (slurmd runs the engines' job as root here)"
    if not all(shutil.which(daemon) for daemon in DAEMONS) and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "slurm-wlm"], capture_output=True, check=False)
    missing = [daemon for daemon in DAEMONS if shutil.which(daemon) is None]
    if missing:
        return f"the Slurm tests need {', '.join(missing)}: apt-get install -y slurm-wlm"
    return None


class Slurm:
    """``with Slurm(directory) as slurm:`` slurmctld and one slurmd, with ``cpus`` CPUs to give out."""

    def __init__(self, directory: Path, cpus: int = 8) -> None:
        self.directory = directory
        self.cpus = cpus
        self.memory_mb = 4096  # the node's memory, so that a job may ask for some (--mem)
        self.node = socket.gethostname()  # slurmctld and slurmd each check that they run on the host named
        self.config = directory / "slurm.conf"
        self.daemons: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Slurm:
        try:
            self._write_config()
            for daemon, extra in (("slurmctld", []), ("slurmd", ["-N", self.node])):
                self._start(daemon, *extra)
            self._wait_until_idle()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Every job of this cluster cancelled (its engines die with it), then the daemons."""
        if self.daemons and self.daemons[0].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env(), capture_output=True)
            deadline = time.monotonic() + 30
            while self.job_ids() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.daemons):
            stop(proc, 15)
        self.daemons.clear()

    def env(self) -> dict[str, str]:
        """The environment in which Slurm's commands use this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.config)}

    def run(self, *argv: str) -> str:
        """A Slurm command's output (``sinfo``, ``squeue``, ``scancel`` ...) against this cluster."""
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=True, timeout=60).stdout

    def job_ids(self, name: str | None = None) -> list[str]:
        """The ids of this cluster's jobs not yet ended, those named ``name`` only when it is given."""
        argv = ["squeue", "--noheader", "--format=%i", *([f"--name={name}"] if name else [])]
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return self.run(*argv).split()
        return []

    def cancel_named(self, prefix: str) -> None:
        """Every job of this cluster whose name starts with ``prefix`` cancelled (a test's leftovers)."""
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            lines = self.run("squeue", "--noheader", "--format=%i|%j").split()
            ids = [line.split("|")[0] for line in lines if line.partition("|")[2].startswith(prefix)]
            if ids:
                self.run("scancel", *ids)

    def _write_config(self) -> None:
        state, spool = self.directory / "state", self.directory / "spool"
        state.mkdir(parents=True, exist_ok=True)
        spool.mkdir(exist_ok=True)
        settings = {
            "ClusterName": "moitest",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "AuthType": "auth/none",  # no munge: root on this machine is the only client
            "CredType": "cred/none",
            "ProctrackType": "proctrack/pgid",  # no cgroups needed: scancel signals the job's process groups
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SlurmdParameters": "config_overrides",  # offer `cpus` CPUs whatever this machine has
            "StateSaveLocation": state,
            "SlurmdSpoolDir": spool,
            "SlurmctldPidFile": self.directory / "slurmctld.pid",
            "SlurmdPidFile": self.directory / "slurmd.pid",
            "SlurmctldLogFile": self.directory / "slurmctld.log",
            "SlurmdLogFile": self.directory / "slurmd.log",
            "SlurmUser": "root",
            "ReturnToService": 2,
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "KillWait": 5,  # seconds between scancel's SIGTERM and its SIGKILL
            "EnforcePartLimits": "ALL",  # sbatch refuses a job past its partition's limits, as sites set it
        }
        lines = [f"{name}={value}" for name, value in settings.items()]
        lines += [
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "PartitionName=long Nodes=ALL MaxTime=INFINITE State=UP",  # a partition a job may name
            "PartitionName=short Nodes=ALL MaxTime=1 State=UP",  # one minute at most: a longer walltime is refused
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def _start(self, daemon: str, *extra: str) -> None:
        """``daemon`` in the foreground (-D), so that it is ours to stop; its output in ``<daemon>.out``."""
        with open(self.directory / f"{daemon}.out", "wb") as output:
            argv = [daemon, "-D", "-f", str(self.config), *extra]
            self.daemons.append(subprocess.Popen(argv, stdout=output, stderr=output, env=self.env()))

    def _wait_until_idle(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                if self.run("sinfo", "--noheader", "--format=%t").split() == ["idle"]:
                    return
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in self.daemons):
                raise RuntimeError(f"the Slurm node did not come up; see {self.directory}/slurmctld.log, slurmd.log")
            time.sleep(0.3)
