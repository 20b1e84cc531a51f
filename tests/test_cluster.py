"""Sweeps on a Slurm cluster (``python -m lmcot.cluster``), against a real one-node Slurm on this machine.

The scenario is a user's: a sweep of 2 configurations on digits is submitted (2 array tasks and a gather
job); one task is cancelled midway through training, and the other is suspended until the next ``submit`` (so
that it is still running then, however fast the machine); meanwhile ``status`` names the cancelled one with its
log and a gather run now would stop, naming it; the next ``submit`` resubmits it alone, skips the one still
running and replaces the waiting gather job with one that waits for both arrays; the task resumes from its
checkpoint; the gathered ``reports/barriers.csv`` equals, byte for byte, that of a local ``dvc repro`` of the
same params; a third ``submit`` submits nothing. A fresh clone then finds every stage in the remote's
run-cache without downloading anything. Bad input is refused before any job is queued.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from dvc_project import SMALLEST_DOWNSTREAM, commit_all, copy_project, dvc, env, git, run, set_params
from slurm_cluster import SlurmCluster, find_slurm

pytestmark = pytest.mark.slow

SWEEP = {
    "train.sweep.datasets": ["digits"],
    "fetch.datasets": [],
    "train.sweep.models": ["mlp-d2-w8", "mlp-d2-w16"],
    "train.sweep.lrs": [0.05],
    "train.seeds": [0, 1],
    "train.recipe.epochs": 6,
    "train.recipe.batch_size": 16,  # long enough that a task is cancelled between checkpoints
    "train.checkpoint_every": 1,
    **SMALLEST_DOWNSTREAM,
    "align.methods": ["identity", "weight_matching"],  # one real alignment, gathered and compared byte for byte
    "cluster.cpus": 1,
    "cluster.mem": "1G",
    "cluster.time": "00:20:00",
    "cluster.gather_time": "00:20:00",
}
PER_CONFIGURATION = ("train", "align", "dimension", "barrier", "fuse", "plane")
NAMES = ["digits-mlp-d2-w8-lr0.05", "digits-mlp-d2-w16-lr0.05"]
CANCELLED = NAMES[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not find_slurm():
        pytest.fail("no Slurm here: the tests install Debian's slurmctld, slurmd, slurm-client and munge as root")
    running = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_jobs_left(cluster):
    """A test that fails midway leaves no job behind to confuse the next one."""
    yield
    jobs = slurm(cluster, "squeue", "-h", "-o", "%i").split()
    if jobs:
        subprocess.run(["scancel", *jobs], env=cluster.env)
        wait_for_jobs(cluster, timeout=60)


def project_with_remote(root: Path, remote: Path | str | None) -> Path:
    project = copy_project(root / "project")
    set_params(project, SWEEP)
    commit_all(project, "a sweep of 2 configurations")
    if remote is not None:
        Path(remote).mkdir()  # on the file system that every node sees
        dvc(project, "remote", "add", "--local", "--default", "shared", str(remote))
    return project


def lmcot_cluster(project: Path, cluster: SlurmCluster, *args: str, check=True) -> subprocess.CompletedProcess:
    """``python -m lmcot.cluster args`` as a user runs it in the project (its lmcot, the cluster's Slurm)."""
    out = subprocess.run(
        ["python", "-m", "lmcot.cluster", *args],
        cwd=project,
        env={**env(), "SLURM_CONF": str(cluster.conf)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"lmcot.cluster {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def slurm(cluster: SlurmCluster, *command: str) -> str:
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, check=True).stdout


def wait_for_jobs(cluster: SlurmCluster, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while slurm(cluster, "squeue", "-h", "-o", "%i").strip():
        assert time.monotonic() < deadline, slurm(cluster, "squeue")
        time.sleep(1)


def submission_folders(project: Path) -> list[Path]:
    return sorted(p.parent for p in (project / ".cluster").glob("*/submission.json"))


def job_table(cluster: SlurmCluster, jobs: list[str]) -> str:
    """Slurm's record of ``jobs`` (id, name, state, exit code, run time), as ``scontrol`` shows it."""
    rows = []
    for job in jobs:
        for line in slurm(cluster, "scontrol", "-o", "show", "job", job).splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = f"_{fields['ArrayTaskId']}" if fields.get("ArrayTaskId", "").isdigit() else ""
            job_id = f"{fields['ArrayJobId']}{task}" if task else fields["JobId"]
            rows.append(f"{job_id:8} {fields['JobName']:32} {fields['JobState']:10} {fields['ExitCode']:6} "
                        f"{fields['RunTime']}")  # fmt: skip
    return "\n".join(rows)


def test_a_sweep_runs_as_an_array_recovers_a_cancelled_task_and_gathers_what_a_local_run_computes(cluster, tmp_path):
    remote = tmp_path / "remote"
    project = project_with_remote(tmp_path, remote)
    # The local run to compare with, meanwhile: a clone of the same commit, no remote, on the core the
    # cluster leaves idle while one task runs.
    local = tmp_path / "local"
    run(tmp_path, "git", "clone", "-q", str(project), str(local))
    local_log = (tmp_path / "local.log").open("w+")
    local_run = subprocess.Popen(["dvc", "repro"], cwd=local, env=env(), stdout=local_log, stderr=subprocess.STDOUT)
    started = time.monotonic()

    # 1. Submit: 2 tasks and a gather job; cancel the first task once training has saved a checkpoint.
    out = lmcot_cluster(project, cluster, "submit")
    assert "2 configuration(s) in the sweep: 0 in the run-cache (skipped), 0 pending or running already " \
        "(skipped), 2 to submit" in out.stdout, out.stdout  # fmt: skip
    [first] = submission_folders(project)
    record = json.loads((first / "submission.json").read_text())
    assert (first / "configurations.txt").read_text().split() == NAMES
    script = (first / "array.sbatch").read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1G", "#SBATCH --time=00:20:00"):
        assert line in script
    assert f"#SBATCH --dependency=afterany:{record['array']}" in (first / "gather.sbatch").read_text()
    checkpoint = project / ".cluster/workspaces" / CANCELLED / "checkpoints" / CANCELLED / "train.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert time.monotonic() < deadline, "the first task never saved a training checkpoint"
        time.sleep(0.1)
    slurm(cluster, "scancel", f"{record['array']}_0")
    while f"{record['array']}_0 " in slurm(cluster, "squeue", "-r", "-h", "-o", "%i "):
        time.sleep(0.2)
    # The other task is suspended (SIGSTOP through Slurm) until the second submit has found it running.
    other = f"{record['array']}_1"
    assert slurm(cluster, "squeue", "-h", "-j", other, "-o", "%T").strip() == "RUNNING"
    slurm(cluster, "scontrol", "suspend", other)

    # 2. While the other task is held: status names the cancelled configuration and its log; the gather job, run
    # now, would stop and name it (a gather never computes a stage itself).
    status = lmcot_cluster(project, cluster, "status").stdout
    rows = {line.split()[0]: line for line in status.splitlines()[1:] if line.strip()}
    assert "CANCELLED" in rows[CANCELLED] and f"{first.name}/logs/{record['array']}_0.out" in rows[CANCELLED]
    assert "PENDING" in rows["gather"], status
    early = lmcot_cluster(project, cluster, "gather", str(first), check=False)
    assert early.returncode == 2 and f"  {CANCELLED}: train@" in early.stderr, early.stderr
    assert f"log {first / 'logs' / (record['array'] + '_0.out')}" in early.stderr

    # 3. Submit again: the cancelled configuration alone is resubmitted, the suspended one is skipped as running,
    # and a gather job that waits for both arrays replaces the waiting one; then the held task goes on. The
    # resubmitted task resumes from its checkpoint; the new gather restores both configurations and runs only
    # the report.
    out = lmcot_cluster(project, cluster, "submit")
    assert ": 0 in the run-cache (skipped), 1 pending or running already (skipped), 1 to submit" in out.stdout
    slurm(cluster, "scontrol", "resume", other)
    assert f"Cancelled the waiting gather job(s) {record['gather']} of earlier submissions" in out.stdout
    second = submission_folders(project)[-1]
    again = json.loads((second / "submission.json").read_text())
    assert (second / "configurations.txt").read_text().split() == [CANCELLED]
    after = f"#SBATCH --dependency=afterany:{again['array']}:{record['array']}"
    assert after in (second / "gather.sbatch").read_text()
    wait_for_jobs(cluster)
    sweep_seconds = time.monotonic() - started
    table = job_table(cluster, [record["array"], record["gather"], again["array"], again["gather"]])
    assert re.search(rf"^{record['gather']} .* CANCELLED ", table, re.MULTILINE), table
    task_log = (second / "logs" / f"{again['array']}_0.out").read_text()
    assert re.search(rf"{CANCELLED}: resuming from the checkpoint of epoch \d+/6", task_log), task_log
    gathered = (second / "logs" / f"gather_{again['gather']}.out").read_text()
    assert "Gathered 2 configuration(s)" in gathered
    # The lookup found every configuration; `dvc repro --pull` agreed: it restored them all, ran the report.
    assert re.findall(r"Running stage '([^']+)'", gathered) == ["report"], gathered
    assert len(re.findall(r"Stage '[^']+' is cached - skipping run", gathered)) == 6 * len(NAMES)

    # 4. A third submit submits nothing.
    out = lmcot_cluster(project, cluster, "submit")
    assert "2 in the run-cache (skipped), 0 pending or running already (skipped), 0 to submit" in out.stdout
    assert "Nothing to submit" in out.stdout and len(submission_folders(project)) == 2

    # 5. The gathered results are those of the local `dvc repro` of the same params, byte for byte.
    assert local_run.wait(timeout=600) == 0, local_log.seek(0) or local_log.read()
    local_log.seek(0)
    per_configuration = [f"{stage}@{name.replace('-lr', '-')}" for stage in PER_CONFIGURATION for name in NAMES]
    ran = re.findall(r"Running stage '([^']+)'", local_log.read())
    assert sorted(ran) == sorted(["check_params", "prepare@digits", "report", *per_configuration])
    for path in ["reports/barriers.csv", "reports/metrics.json"] + [f"results/{n}/barriers.csv" for n in NAMES]:
        assert (project / path).read_bytes() == (local / path).read_bytes(), path
    print(f"\nthe sweep (2 tasks, one cancelled and resubmitted, gather): {sweep_seconds:.0f} s\n{table}")
    print("local dvc repro of the same params: reports/barriers.csv, reports/metrics.json and each "
          "results/<config>/barriers.csv identical (cmp)")  # fmt: skip

    # 6. A fresh clone finds every stage in the remote's run-cache without downloading an output; after a
    # change of barrier.alphas, it finds all but the barrier stages.
    fresh = tmp_path / "fresh"
    run(tmp_path, "git", "clone", "-q", str(project), str(fresh))
    dvc(fresh, "remote", "add", "--local", "--default", "shared", str(remote))
    lookups = run(fresh, "python", "-c", LOOKUP).stdout.splitlines()
    assert len(lookups) == 2 + 6 * len(NAMES) and all(line.split()[1] == "run-cache" for line in lookups), lookups
    assert not (fresh / ".dvc/cache/files").exists()  # where outputs would be; runs/ holds the entries
    set_params(fresh, {"barrier.alphas": [0.0, 0.25, 0.5, 0.75, 1.0]})
    dvc(fresh, "repro", "check_params")  # as submit does: params.yaml changed, so check_params runs first
    lookups = run(fresh, "python", "-c", LOOKUP).stdout.splitlines()
    assert sorted(line for line in lookups if line.split()[1] == "None") == sorted(
        f"barrier@{name.replace('-lr', '-')} None not in the run-cache" for name in NAMES
    ), lookups


# Every stage of the sweep, looked up by lmcot.runcache after copying the remote's run-cache entries (no
# outputs): "<stage> <source> <reason>" per line.
LOOKUP = """
from dvc.repo import Repo
from lmcot.runcache import lookup
with Repo(".") as repo, repo.lock:
    repo.stage_cache.pull("shared")
    names = [s.name for s in repo.index.stages if s.name != "report"]
    found = lookup(repo, names)
    assert lookup(repo, names) == found  # a second lookup on the same repo finds the same
    for name, result in found.items():
        print(name, result.source, result.reason)
"""


def refused(project: Path, cluster: SlurmCluster, *args: str, path: str | None = None) -> str:
    """Run ``submit`` expecting a refusal: its message; checks that no job was queued and nothing written."""
    out = lmcot_cluster(project, cluster, "submit", *args, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert not slurm(cluster, "squeue", "-h").strip()
    assert not submission_folders(project)
    return out.stderr


def test_bad_input_is_refused_before_any_job_is_queued(cluster, tmp_path):
    project = project_with_remote(tmp_path, None)
    message = refused(project, cluster)
    assert "no default DVC remote" in message and "dvc remote add -d shared" in message

    dvc(project, "remote", "add", "--local", "--default", "shared", "ssh://127.0.0.1:9/srv/lmcot")
    message = refused(project, cluster)
    assert "the DVC remote 'shared' (ssh://127.0.0.1:9/srv/lmcot) cannot be reached" in message

    dvc(project, "remote", "modify", "--local", "shared", "url", str(tmp_path / "remote"))
    message = refused(project, cluster)
    assert f"the DVC remote 'shared' is the folder {tmp_path / 'remote'}, which does not exist" in message
    (tmp_path / "remote").mkdir()
    before = (project / "params.yaml").read_text()
    message = refused(project, cluster, "-S", "train.sweep.lrs=[0.05,-1]")
    assert "train.sweep.lrs = [0.05, -1]" in message and "item [1] = -1 must be a number > 0" in message
    assert (project / "params.yaml").read_text() == before  # an invalid sweep is not written

    message = refused(project, cluster, "--time", "two hours")
    assert "cluster.time = 'two hours'" in message and "HH:MM:SS" in message

    message = refused(project, cluster, "--mem", "100G")  # more than the node has: Slurm says so
    assert "sbatch --time=00:20:00 --cpus-per-task=1 --mem=100G: " in message
    assert "Requested node configuration is not available" in message
    assert "nothing was submitted" in message

    edited = project / "lmcot" / "models" / "mlp.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    message = refused(project, cluster)
    assert "the code differs from the last commit" in message and "lmcot/models/mlp.py" in message
    git(project, "checkout", "lmcot/models/mlp.py")

    no_slurm = {**env(), "PATH": str(Path(env()["PATH"].split(":")[0]))}  # the venv only: no sbatch
    out = subprocess.run(["python", "-m", "lmcot.cluster", "submit"], cwd=project, env=no_slurm, capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 2 and "no Slurm here: sbatch is not on PATH" in out.stderr
    assert "Splitting a sweep" in out.stderr


def test_an_array_and_a_job_that_depends_on_it_run(cluster, tmp_path):
    def sbatch(*args):
        return slurm(cluster, "sbatch", "--parsable", *args).strip().split(";")[0]

    array = sbatch("--array=0-2", "-o", str(tmp_path / "task_%a.out"), "--wrap", "echo task $SLURM_ARRAY_TASK_ID")
    sbatch(f"--dependency=afterok:{array}", "-o", str(tmp_path / "gather.out"), "--wrap", "echo gathered")
    wait_for_jobs(cluster, timeout=60)
    assert [(tmp_path / f"task_{i}.out").read_text().strip() for i in range(3)] == ["task 0", "task 1", "task 2"]
    assert (tmp_path / "gather.out").read_text().strip() == "gathered"
