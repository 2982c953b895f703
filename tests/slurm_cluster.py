"""A real single-node Slurm for the tests: munged, slurmctld and slurmd with everything in one temp dir.

The node advertises more CPUs than the machine has (`SlurmdParameters=config_overrides`) and four
GPUs backed by empty files, so the jobscripts' own resource requests fit; partitions `cpu` and `gpu`.
No cgroups are needed: processes are tracked through /proc and Slurm pins no task.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# libpmix-dev: the unversioned libpmix.so that Slurm's mpi/pmix plugin opens (srun --mpi=pmix)
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "libpmix-dev")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE"}
CPUS, GPUS = 64, 4  # what the node advertises (jobscripts' defaults fit), not what it has

SLURM_CONF = """\
ClusterName=mpibench-test
FirstJobId={first_job_id}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/run/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/run/slurmctld.pid
SlurmdPidFile={dir}/run/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=30
InactiveLimit=0
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=2 CoresPerSocket={half} ThreadsPerCore=1 \
RealMemory=4096 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""

GRES_CONF = "NodeName={host} Name=gpu File={dir}/gpu/nvidia[0-{last}]\n"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_packages() -> list[str]:
    if not shutil.which("dpkg-query"):
        return [] if all(shutil.which(d) for d in DAEMONS) else list(PACKAGES)
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *PACKAGES],
                          capture_output=True, text=True)
    installed = {line.split()[0] for line in proc.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in PACKAGES if p not in installed]


def ensure_installed() -> None:
    """Install Debian's Slurm, MUNGE and PMIx when missing (root and apt needed)."""
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{' '.join(missing)} not installed, and installing needs root "
                               f"(apt-get install {' '.join(missing)})")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable(f"{' '.join(missing)} not installed, and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120",
                 "--no-install-recommends", *missing]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout)[-800:]}")
    absent = [d for d in DAEMONS if not shutil.which(d)]
    if absent:
        raise SlurmUnavailable(f"installed {' '.join(missing)} but {', '.join(absent)} not found")


class SlurmCluster:
    """munged + slurmctld + slurmd under one temp dir; `env` points Slurm's clients at it."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mpibench-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        # a test session inside a real allocation must not leak that job's settings into ours
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        self.env["SLURM_CONF"] = str(self.conf)
        self.jobs: list[str] = []  # ids of the jobs submitted through this object

    def start(self, timeout: float = 60) -> "SlurmCluster":
        d = self.dir
        d.chmod(0o755)  # munged wants its socket directory reachable by everyone
        for sub in ("state", "spool", "log", "run"):
            (d / sub).mkdir(mode=0o755)
        (d / "munge").mkdir(mode=0o700)
        (d / "munge" / "munge.key").write_bytes(os.urandom(1024))
        (d / "munge" / "munge.key").chmod(0o600)
        # job ids from a random start: results/<name>-<id>.h5 of an earlier session never collide
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, dir=d, ctld_port=_free_port(), d_port=_free_port(),
            first_job_id=random.randrange(10**6, 6 * 10**7), cpus=CPUS, half=CPUS // 2, gpus=GPUS))
        (d / "gpu").mkdir()
        for i in range(GPUS):  # stand-ins for /dev/nvidiaN: nothing opens them
            (d / "gpu" / f"nvidia{i}").touch()
        (d / "gres.conf").write_text(GRES_CONF.format(host=self.host, dir=d, last=GPUS - 1))
        self._daemon(["munged", f"--key-file={d}/munge/munge.key", f"--socket={d}/run/munge.socket",
                      f"--pid-file={d}/run/munged.pid", f"--seed-file={d}/munge/seed",
                      f"--log-file={d}/log/munged.log"])
        self._daemon(["slurmctld", "-f", str(self.conf)])
        self._daemon(["slurmd", "-f", str(self.conf), "-N", self.host])
        self._wait_idle(timeout)
        return self

    def _daemon(self, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{cmd[0]} did not start ({proc.returncode}): "
                                   f"{proc.stderr.strip()[-500:]}\n{self.logs()}")

    def _wait_idle(self, timeout: float) -> None:
        deadline, state = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            proc = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
            state = proc.stdout.strip()
            if state.startswith("idle"):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not become idle within {timeout:.0f} s "
                               f"(state {state!r})\n{self.logs()}")

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60,
            env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} -> {proc.returncode}\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def submit(self, args: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
        """sbatch ARGS (its log in the cluster dir, see `output`); the job id."""
        proc = self.run(["sbatch", "--parsable", f"--output={self.dir}/%j.out", *args], env=env, cwd=cwd)
        job_id = proc.stdout.strip().split(";")[0]
        self.jobs.append(job_id)
        return job_id

    def wait(self, job_id: str, timeout: float = 240) -> dict:
        """Poll until the job has ended (quicker than `sbatch --wait`'s back-off); its record."""
        deadline, info = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in ENDED:
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s\n"
                             f"{self.output(job_id)}")

    def output(self, job_id: str) -> str:
        """The job's stdout and stderr, as far as written."""
        log = self.dir / f"{job_id}.out"
        return log.read_text(errors="replace") if log.exists() else f"(no output file {log})"

    def job(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, ExitCode, ...)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id]).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def logs(self, tail: int = 30) -> str:
        parts = []
        for log in sorted((self.dir / "log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is left, stop the daemons (slurmd first), remove the temp dir."""
        if self.conf.exists():
            self.run(["scancel", "--user", str(os.getuid())], check=False)
            for _ in range(40):  # let cancelled jobs end before their slurmd does
                if not self.run(["squeue", "-h"], check=False).stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pidfile = self.dir / "run" / f"{name}.pid"
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)
