"""A throwaway one-node Slurm cluster on this machine, for the cluster tests (issue 15's first step).

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` (installed with apt-get when missing and
the tests run as root), a munge key and socket in a temporary folder, a ``slurm.conf`` with free ports of its
own; ``SLURM_CONF`` points the client commands at it. ``stop()`` ends the three daemons.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_slurm() -> bool:
    """Whether the daemons and ``sbatch`` are here, installing Debian's packages when this machine allows it."""
    present = all(Path(p).exists() for p in DAEMONS.values()) and shutil.which("sbatch")
    if not present and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        present = all(Path(p).exists() for p in DAEMONS.values()) and shutil.which("sbatch")
    return bool(present)


@dataclass
class SlurmCluster:
    """One node (this machine, ``cpus`` CPUs), one partition ``debug``; ``env`` runs the client commands."""

    root: Path
    cpus: int = 2
    memory_mb: int = 4096

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 30) -> SlurmCluster:
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "spool", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)  # munged refuses a key or socket folder others can write to
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge / "munge.sock"
        subprocess.run(
            [DAEMONS["munged"], f"--key-file={key}", f"--socket={socket_path}", f"--pid-file={munge / 'munged.pid'}",
             f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}", "--force"],
            check=True, capture_output=True,
        )  # fmt: skip
        host = socket.gethostname()
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=lmcot",
                    f"SlurmctldHost={host}",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    f"SlurmUser={os.environ.get('USER', 'root')}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={socket_path}",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "JobCompType=jobcomp/none",
                    f"NodeName={host} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([DAEMONS[daemon]], env=self.env, check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test Slurm node did not become idle in {timeout} s; logs in {self.root / 'log'}")

    def stop(self) -> None:
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munge" / "munged.pid"):
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 15)
                except (ProcessLookupError, ValueError):
                    pass
