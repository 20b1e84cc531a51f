"""Sweeps on a Slurm cluster: one array task per configuration, the results gathered through the DVC remote.

    python -m lmcot.cluster submit [-S key=value ...] [--partition P] [--time T] [--cpus N] [--mem M]
                                   [--gpus N] [--account A] [--max-running N]
    python -m lmcot.cluster status

``submit`` applies the ``-S`` overrides to params.yaml (as ``dvc exp run -S`` does), prepares the data sets
here and pushes them, looks every configuration up in the run-cache of the DVC remote, and submits those
not found: an array task per configuration (its train, align, dimension, barrier, fuse and plane stages),
each in a workspace of its own (a Git clone at the submitted commit, kept between submissions so that a
resubmitted task resumes from its training checkpoint), which restores what it can from the remote, runs
the rest and pushes its outputs and run-cache; and a gather job, after the array, that restores every
configuration from the run-cache into this workspace and runs the report. Slurm does the scheduling
(queues, resources, arrays, dependencies, requeue after a node failure) and DVC the caching.
The job scripts (``<workdir>/<submission>/array.sbatch`` and ``gather.sbatch``) can be read and resubmitted.
``task`` and ``gather`` are what the job scripts run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lmcot.config import ParamsError, configurations, read_yaml, validate
from lmcot.errors import UserError

log = logging.getLogger("lmcot.cluster")

PER_CONFIGURATION = ("train", "align", "dimension", "barrier", "fuse", "plane")
CODE = ("dvc.yaml", "lmcot", "stages", "pyproject.toml", "requirements.lock", ".dvc/config")
RESOURCE_FLAGS = ("partition", "account", "time", "cpus", "mem", "gpus", "max_running")
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


class ClusterError(UserError):
    """A refusal: what is wrong and what to do, said before any job is submitted."""


# ---------------------------------------------------------------------------------------------------------
# Checks, before anything is submitted


def project_root(start: Path | None = None) -> Path:
    """The Git work tree holding the DVC project that ``start`` (default: the current folder) is in."""
    start = Path(start or Path.cwd())
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if out.returncode != 0 or not (Path(out.stdout.strip()) / "dvc.yaml").exists():
        raise ClusterError(f"{start} is not in a Git clone of an lmcot project (no dvc.yaml at its top)")
    return Path(out.stdout.strip())


def check_slurm() -> None:
    """Refuse unless sbatch is here and the Slurm controller answers."""
    if not shutil.which("sbatch"):
        raise ClusterError(
            "no Slurm here: sbatch is not on PATH. Run this on the cluster's login node (or load its Slurm "
            "module); on machines without Slurm, split the sweep by hand (README: 'Splitting a sweep')"
        )
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(f"the Slurm controller does not answer (sinfo: {out.stderr.strip()}); try again later")


def commit_of(root: Path) -> str:
    """HEAD's commit; refuses when the code differs from it (the tasks check the commit out, not this tree)."""
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *CODE], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    if dirty:
        raise ClusterError(
            "the code differs from the last commit, and the tasks run the committed code:\n"
            + dirty
            + "\ncommit these changes (git commit -am ...) or stash them, then submit again"
        )
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def check_remote(repo) -> str:
    """The default DVC remote's name; refuses when none is set or it cannot be reached."""
    name = repo.config["core"].get("remote")
    if not name:
        raise ClusterError(
            "no default DVC remote: the tasks and the gather job exchange results through it. Add one that "
            "every node can reach, e.g. `dvc remote add -d shared /shared/lmcot-cache` (a shared folder) or "
            "`dvc remote add -d shared ssh://login.example.org/srv/lmcot` (README: 'A remote')"
        )
    url = repo.config["remote"].get(name, {}).get("url", "?")
    try:
        remote = repo.cloud.get_remote(name, "push")
        exists = remote.fs.exists(remote.path)
    except Exception as err:  # any transport's error: connection refused, permission, missing mount
        raise ClusterError(
            f"the DVC remote {name!r} ({url}) cannot be reached: {err}. Check the address "
            "(`dvc remote list`, `dvc remote modify`), that its host is up and your keys work, then submit again"
        ) from None
    if not exists and remote.fs.protocol in ("local", "file"):
        # Created here, it could be on this machine's own disk, where no other node sees it.
        raise ClusterError(
            f"the DVC remote {name!r} is the folder {url}, which does not exist: create it on a file system that "
            f"every node sees (mkdir -p {url}), or point the remote there (`dvc remote modify {name} url ...`)"
        )
    return name


def resources(params: dict, flags: dict) -> dict:
    """``cluster`` params with the command-line flags that were given on top, validated."""
    merged = {**params["cluster"], **{k: v for k, v in flags.items() if v is not None}}
    try:
        return validate({**params, "cluster": merged})["cluster"]
    except ParamsError as err:
        raise ClusterError(str(err).replace("params.yaml", "params.yaml or the flags")) from None


def apply_sweep(root: Path, overrides: list[str]) -> dict:
    """Apply ``-S key=value`` overrides to params.yaml (DVC's own parser) once they validate; the params."""
    from dvc.utils.hydra import apply_overrides

    path = root / "params.yaml"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        candidate = Path(tmp) / "params.yaml"
        shutil.copy2(path, candidate)
        if overrides:
            try:
                apply_overrides(candidate, overrides)
            except Exception as err:  # hydra's parse and composition errors
                raise ClusterError(f"-S {' '.join(overrides)}: {err}") from None
        try:
            params = validate(read_yaml(candidate))
        except ParamsError as err:
            raise ClusterError(f"{err}\nnothing was submitted; fix the value and submit again") from None
        if overrides:
            os.replace(candidate, path)
    return params


# ---------------------------------------------------------------------------------------------------------
# Configurations and their stages


def configuration_stages(repo, name: str) -> list[str]:
    """The addresses of the per-configuration stages of configuration ``name`` (e.g. train@digits-...)."""
    stages = {
        stage.name.split("@")[0]: stage.name
        for stage in repo.index.stages
        if stage.name.split("@")[0] in PER_CONFIGURATION and stage.cmd.split()[-1] == name
    }
    return [stages[s] for s in PER_CONFIGURATION if s in stages]


def shared_stages(repo, params: dict) -> list[str]:
    """check_params and the fetch and prepare stages of the sweep's data sets: done once, by ``submit``."""
    datasets = params["train"]["sweep"]["datasets"]
    wanted = {"check_params"} | {f"{s}@{d}" for s in ("fetch", "prepare") for d in datasets}
    return [stage.name for stage in repo.index.stages if stage.name in wanted]


def missing_configurations(repo, names: list[str], remote: str | None) -> dict[str, str]:
    """Configurations that ``dvc repro --pull`` could not restore from the run-cache: name -> why."""
    from lmcot.runcache import lookup, outputs_available

    stages = {name: configuration_stages(repo, name) for name in names}
    with repo.lock:  # as dvc status: no other DVC command changes the workspace meanwhile
        found = lookup(repo, [stage for targets in stages.values() for stage in targets])
    missing = {}
    for name, targets in stages.items():
        if not targets:
            missing[name] = "no stage of dvc.yaml runs it"
        for target in targets:
            result = found[target]
            if not result.found:
                missing[name] = f"{target}: {result.reason}"
                break
            if result.source == "run-cache" and not outputs_available(repo, result.entry, remote):
                missing[name] = f"{target}: its outputs are in neither the local cache nor the remote"
                break
    return missing


def pull_run_cache(repo, remote: str) -> None:
    """Copy the remote's run-cache entries (small lock files, no outputs) into the local cache."""
    repo.stage_cache.pull(remote)


# ---------------------------------------------------------------------------------------------------------
# Slurm


def sbatch(script: Path, *options: str) -> str:
    """Submit ``script``; its job id."""
    out = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ClusterError(
            f"sbatch {script} failed: {out.stderr.strip()}\nnothing was submitted; change the resources "
            "(params.yaml's cluster group, or --partition, --time, --cpus, --mem, --gpus, --account) and submit again"
        )
    return out.stdout.strip().split(";")[0]


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of every job and array task Slurm still knows among ``job_ids``: {"12_3": "RUNNING", ...}.

    Live jobs from squeue; ended ones from sacct where the cluster keeps accounting, else from scontrol
    (which knows them for MinJobAge seconds after they end)."""
    states: dict[str, str] = {}
    if not job_ids:
        return states
    ids = ",".join(job_ids)
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State"], capture_output=True, text=True)
    if out.returncode == 0:
        for line in out.stdout.splitlines():
            job, _, state = line.partition("|")
            if job and "[" not in job:
                states[job] = state.split()[0] if state else "UNKNOWN"
    else:
        for job in job_ids:
            shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True)
            for line in shown.stdout.splitlines():
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                key = fields.get("JobId", "")
                if fields.get("ArrayTaskId", "").isdigit():
                    key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
                if key and "JobState" in fields:
                    states[key] = fields["JobState"]
    live = subprocess.run(["squeue", "-r", "-h", "-o", "%i|%T"], capture_output=True, text=True)
    for line in live.stdout.splitlines():
        job, _, state = line.partition("|")
        if job.split("_")[0] in job_ids:
            states[job] = state
    return states


# ---------------------------------------------------------------------------------------------------------
# A submission: the folder of its job scripts, logs and task records


@dataclass
class Submission:
    folder: Path

    @property
    def record(self) -> dict:
        return json.loads((self.folder / "submission.json").read_text())

    @property
    def configurations(self) -> list[str]:
        return (self.folder / "configurations.txt").read_text().split()

    def log(self, index: int) -> Path:
        return self.folder / "logs" / f"{self.record['array']}_{index}.out"

    def task_record(self, name: str) -> dict:
        path = self.folder / "tasks" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}


def submissions(workdir: Path) -> list[Submission]:
    """Every submission under ``workdir``, oldest first."""
    if not workdir.is_dir():
        return []
    found = [Submission(p.parent) for p in workdir.glob("*/submission.json")]
    return sorted(found, key=lambda s: s.record["submitted"])


def latest_tasks(workdir: Path) -> dict[str, tuple[Submission, int]]:
    """For each configuration, the submission and array index of its latest task."""
    latest = {}
    for submission in submissions(workdir):
        for index, name in enumerate(submission.configurations):
            latest[name] = (submission, index)
    return latest


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sbatch_options(res: dict, time_limit: str, cpus: int, gpus: int) -> list[str]:
    """The resource options of a job: time, CPUs, memory, and partition, account and GPUs where set."""
    options = [f"--time={time_limit}", f"--cpus-per-task={cpus}", f"--mem={res['mem']}"]
    options += [f"--partition={res['partition']}"] if res["partition"] else []
    options += [f"--account={res['account']}"] if res["account"] else []
    options += [f"--gres=gpu:{gpus}"] if gpus else []
    return options


def task_options(res: dict) -> list[str]:
    return sbatch_options(res, res["time"], res["cpus"], res["gpus"])


def gather_options(res: dict) -> list[str]:
    return sbatch_options(res, res["gather_time"], max(1, min(res["cpus"], 2)), 0)  # restores and a report


def check_resources(res: dict) -> None:
    """Ask Slurm whether it could run a task and the gather job with these resources; queues nothing."""
    for options in (task_options(res), gather_options(res)):
        out = subprocess.run(["sbatch", "--test-only", *options, "--wrap", "true"], capture_output=True, text=True)
        if out.returncode != 0:
            raise ClusterError(
                f"sbatch {' '.join(options)}: {out.stderr.strip()}\nnothing was submitted; change the resources "
                "(params.yaml's cluster group, or --partition, --time, --cpus, --mem, --gpus, --account)"
            )


def environment_lines() -> list[str]:
    """The job's environment: this venv's python and dvc first on PATH, DVC offline of analytics."""
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    return [f'export PATH={bin_dir}:"$PATH"', "export DVC_NO_ANALYTICS=1", "export PYTHONUNBUFFERED=1"]


def array_script(folder: Path, root: Path, commit: str, names: list[str], res: dict) -> str:
    throttle = f"%{res['max_running']}" if res["max_running"] else ""
    lines = [
        "#!/bin/bash",
        f"# lmcot sweep: one task per line of configurations.txt, at commit {commit} of {root}",
        f"#SBATCH --job-name=lmcot-{folder.name}",
        f"#SBATCH --output={folder / 'logs' / '%A_%a.out'}",
        *(f"#SBATCH {option}" for option in task_options(res)),
        f"#SBATCH --array=0-{len(names) - 1}{throttle}",
        "#SBATCH --requeue",  # a task on a node that fails starts again, resuming from its checkpoint
        "set -euo pipefail",
        *environment_lines(),
        f"cd {shlex.quote(str(root))}",
        f'config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(folder / "configurations.txt"))})',
        f'exec python -m lmcot.cluster task {shlex.quote(str(folder))} "$config"',
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def gather_script(folder: Path, root: Path, after: list[str], res: dict) -> str:
    lines = [
        "#!/bin/bash",
        f"# lmcot sweep: after the tasks of array job(s) {', '.join(after)}, restore the sweep into {root}, run report",
        f"#SBATCH --job-name=lmcot-{folder.name}-gather",
        f"#SBATCH --output={folder / 'logs' / 'gather_%j.out'}",
        *(f"#SBATCH {option}" for option in gather_options(res)),
        f"#SBATCH --dependency=afterany:{':'.join(after)}",
        "set -euo pipefail",
        *environment_lines(),
        f"cd {shlex.quote(str(root))}",
        f"exec python -m lmcot.cluster gather {shlex.quote(str(folder))}",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Commands


def run_dvc(cwd: Path, *args: str) -> None:
    """Run ``dvc args`` in ``cwd``, its output shown; raise on failure."""
    log.info("%s: dvc %s", cwd, " ".join(args))
    done = subprocess.run(["dvc", *args], cwd=cwd, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        raise ClusterError(f"dvc {' '.join(args)} failed in {cwd} (exit {done.returncode})")


def open_repo(root: Path):
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    return Repo(str(root))


def submit(overrides: list[str], flags: dict, root: Path | None = None) -> list[str]:
    """Submit the configurations of the sweep that the run-cache lacks; the job ids submitted."""
    check_slurm()
    root = project_root(root)
    commit = commit_of(root)
    params = apply_sweep(root, overrides)
    res = resources(params, flags)
    with open_repo(root) as repo:
        remote = check_remote(repo)
        targets = shared_stages(repo, params)
    check_resources(res)
    print(f"Preparing the data sets here, once for every task: dvc repro --pull {' '.join(targets)}")
    run_dvc(root, "repro", "--pull", *targets)
    run_dvc(root, "push", "--run-cache", *targets)
    names = [c.name for c in configurations(params)]
    workdir = root / res["workdir"]
    with open_repo(root) as repo:
        pull_run_cache(repo, remote)
        missing = missing_configurations(repo, names, remote)
    earlier = submissions(workdir)
    states = slurm_states(sorted({s.record["array"] for s in earlier} | {s.record["gather"] for s in earlier}))
    running = {
        name: f"{sub.record['array']}_{i}"
        for name, (sub, i) in latest_tasks(workdir).items()
        if name in missing and states.get(f"{sub.record['array']}_{i}") in ACTIVE
    }
    todo = [name for name in names if name in missing and name not in running]
    print(f"{len(names)} configuration(s) in the sweep: {len(names) - len(missing)} in the run-cache (skipped), "
          f"{len(running)} pending or running already (skipped), {len(todo)} to submit")  # fmt: skip
    for name, job in running.items():
        print(f"  {name}: task {job} is {states[job].lower()}")
    if not todo:
        if not running:
            print("Nothing to submit: `dvc repro --pull` restores the whole sweep here and runs the report")
        return []

    folder = workdir / time.strftime("%Y%m%d-%H%M%S")
    while folder.exists():  # two submissions in one second
        folder = folder.with_name(folder.name + "x")
    (folder / "logs").mkdir(parents=True)
    (folder / "tasks").mkdir()
    shutil.copy2(root / "params.yaml", folder / "params.yaml")
    write_atomic(folder / "configurations.txt", "\n".join(todo) + "\n")
    write_atomic(folder / "array.sbatch", array_script(folder, root, commit, todo, res))
    try:
        array_job = sbatch(folder / "array.sbatch")
    except ClusterError:
        shutil.rmtree(folder)
        raise
    # The gather waits for this array and for the tasks of earlier ones still running; earlier gathers
    # still waiting would gather an incomplete sweep meanwhile, so this one replaces them.
    after = [array_job, *sorted({job.split("_")[0] for job in running.values()})]
    write_atomic(folder / "gather.sbatch", gather_script(folder, root, after, res))
    try:
        gather_job = sbatch(folder / "gather.sbatch")
    except ClusterError:
        subprocess.run(["scancel", array_job])
        shutil.rmtree(folder)
        raise
    replaced = [s.record["gather"] for s in earlier if states.get(s.record["gather"]) == "PENDING"]
    if replaced:
        subprocess.run(["scancel", *replaced])
        print(
            f"Cancelled the waiting gather job(s) {', '.join(replaced)} of earlier submissions: this one replaces them"
        )
    record = {"submitted": time.time(), "commit": commit, "root": str(root), "remote": remote,
              "array": array_job, "gather": gather_job}  # fmt: skip
    write_atomic(folder / "submission.json", json.dumps(record, indent=2) + "\n")
    print(f"Submitted array job {array_job} ({len(todo)} task(s)) and gather job {gather_job} (after the array)")
    print(f"Job scripts and logs: {folder.relative_to(root)}/; watch with `python -m lmcot.cluster status`")
    return [array_job, gather_job]


def workspace(root: Path, res: dict, name: str) -> Path:
    return root / res["workdir"] / "workspaces" / name


def task(folder: Path, name: str) -> None:
    """One configuration in its own workspace: restore or run its stages, push outputs and run-cache."""
    submission = Submission(folder)
    record = submission.record
    root = Path(record["root"])
    params = validate(read_yaml(folder / "params.yaml"))
    ws = workspace(root, params["cluster"], name)
    job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"
    status = {"configuration": name, "job": job, "host": os.uname().nodename, "started": time.time()}
    write_atomic(folder / "tasks" / f"{name}.json", json.dumps({**status, "state": "running"}) + "\n")
    try:
        if not (ws / ".git").exists():
            ws.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", "--no-checkout", str(root), str(ws)], check=True)
        else:
            subprocess.run(["git", "fetch", "-q", "origin"], cwd=ws, check=True)
        subprocess.run(["git", "checkout", "-q", "--force", "--detach", record["commit"]], cwd=ws, check=True)
        shutil.copy2(folder / "params.yaml", ws / "params.yaml")
        if (root / ".dvc" / "config.local").exists():  # the remote's user names and keys
            shutil.copy2(root / ".dvc" / "config.local", ws / ".dvc" / "config.local")
        with open_repo(ws) as repo:
            check_remote(repo)  # `dvc repro --pull` only warns when the remote is down, then runs everything
            targets = configuration_stages(repo, name)
        if not targets:
            raise ClusterError(f"{name}: no stage of dvc.yaml at commit {record['commit']} runs this configuration")
        print(f"{name}: workspace {ws}, commit {record['commit'][:12]}, stages {' '.join(targets)}", flush=True)
        run_dvc(ws, "repro", "--pull", *targets)
        run_dvc(ws, "push", "--run-cache", "--with-deps", *targets)
    except BaseException as err:
        state = {"state": "failed", "error": str(err) or type(err).__name__, "ended": time.time()}
        write_atomic(folder / "tasks" / f"{name}.json", json.dumps({**status, **state}) + "\n")
        raise
    write_atomic(
        folder / "tasks" / f"{name}.json", json.dumps({**status, "state": "done", "ended": time.time()}) + "\n"
    )
    print(f"{name}: done; outputs and run-cache pushed to the remote", flush=True)


def gather(folder: Path) -> None:
    """In the user's workspace: restore every configuration of the sweep from the run-cache, run report."""
    submission = Submission(folder)
    root = Path(submission.record["root"])
    if (root / "params.yaml").read_bytes() != (folder / "params.yaml").read_bytes():
        raise ClusterError(
            f"{root / 'params.yaml'} changed since this sweep was submitted; its params are in "
            f"{folder / 'params.yaml'}: copy them back and run `dvc repro --pull`, or submit the new sweep"
        )
    params = validate(read_yaml(folder / "params.yaml"))
    names = [c.name for c in configurations(params)]
    with open_repo(root) as repo:
        remote = check_remote(repo)
        pull_run_cache(repo, remote)
        missing = missing_configurations(repo, names, remote)
    if missing:
        latest = latest_tasks(root / params["cluster"]["workdir"])
        lines = []
        for name, why in missing.items():
            where = f"; log {latest[name][0].log(latest[name][1])}" if name in latest else ""
            lines.append(f"  {name}: {why}{where}")
        raise ClusterError(
            f"{len(missing)} of {len(names)} configuration(s) are not in the run-cache:\n" + "\n".join(lines)
            + "\n`python -m lmcot.cluster status` says what happened to their tasks; `python -m lmcot.cluster "
            "submit` submits them again (the others are skipped), and a new gather job"
        )  # fmt: skip
    run_dvc(root, "repro", "--pull")
    print(f"Gathered {len(names)} configuration(s) into {root}; the report is in reports/")


def status(root: Path | None = None) -> list[tuple[str, str, str, str]]:
    """One row per configuration of params.yaml's sweep, and per gather job: (name, state, job, log)."""
    root = project_root(root)
    params = validate(read_yaml(root / "params.yaml"))
    workdir = root / params["cluster"]["workdir"]
    names = [c.name for c in configurations(params)]
    with open_repo(root) as repo:
        remote = repo.config["core"].get("remote")
        if remote:
            pull_run_cache(repo, remote)
        missing = missing_configurations(repo, names, remote)
    latest = latest_tasks(workdir)
    subs = submissions(workdir)
    states = slurm_states([s.record["array"] for s in subs] + [s.record["gather"] for s in subs])
    rows = []
    for name in names:
        if name not in latest:
            rows.append((name, "in the run-cache" if name not in missing else "not submitted", "", ""))
            continue
        sub, index = latest[name]
        job = f"{sub.record['array']}_{index}"
        state = states.get(job) or sub.task_record(name).get("state", "unknown").upper()
        if name not in missing:
            state = "in the run-cache"
        elif state in ("DONE", "COMPLETED"):
            state = f"{state}, but not in the run-cache: {missing[name]}"
        elif state == "RUNNING" and job not in states:  # its record says running; Slurm has forgotten it
            state = "ended without finishing (cancelled, time limit or node lost)"
        rows.append((name, state, job, str(sub.log(index).relative_to(root))))
    for sub in subs[-1:]:
        gather_job = sub.record["gather"]
        log_path = sub.folder / "logs" / f"gather_{gather_job}.out"
        state = states.get(gather_job)
        if state is None:  # Slurm has forgotten it: its log says how it ended
            text = log_path.read_text() if log_path.exists() else ""
            state = "COMPLETED" if "Gathered " in text else "FAILED" if text else "unknown"
        rows.append(("gather", state, gather_job, str(log_path.relative_to(root))))
    return rows


def print_status(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in [("configuration", "state", "job", "log"), *rows]) for i in range(3)]
    for row in [("configuration", "state", "job", "log"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    failed = [r for r in rows if r[0] != "gather" and r[1] not in ("in the run-cache", *ACTIVE)]
    if failed:
        print(f"{len(failed)} configuration(s) need another submit: `python -m lmcot.cluster submit` "
              "resubmits only them (see their logs)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcot.cluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="submit the configurations the run-cache lacks, and a gather job")
    sub.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a param of params.yaml, as `dvc exp run -S` does (repeatable)")  # fmt: skip
    sub.add_argument("--partition")
    sub.add_argument("--account")
    sub.add_argument("--time", help="each task's time limit, e.g. 04:00:00")
    sub.add_argument("--cpus", type=int, help="CPUs per task")
    sub.add_argument("--mem", help="memory per task, e.g. 8G")
    sub.add_argument("--gpus", type=int, help="GPUs per task (--gres=gpu:N)")
    sub.add_argument("--max-running", type=int, help="at most this many tasks at once")
    commands.add_parser("status", help="what happened to each configuration's task")
    one = commands.add_parser("task", help="(run by the array job) one configuration")
    one.add_argument("submission", type=Path)
    one.add_argument("configuration")
    last = commands.add_parser("gather", help="(run by the gather job) restore the sweep and run report")
    last.add_argument("submission", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "submit":
            submit(args.overrides, {k: getattr(args, k) for k in RESOURCE_FLAGS})
        elif args.command == "status":
            print_status(status())
        elif args.command == "task":
            task(args.submission.resolve(), args.configuration)
        else:
            gather(args.submission.resolve())
    except ClusterError as err:
        print(f"lmcot.cluster {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
