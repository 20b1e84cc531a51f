"""Which stages `dvc repro` would restore from DVC's run-cache instead of running them.

DVC finds a stage in its run-cache by a key computed from the stage's command, the hashes of its
dependencies and its params. A stage downstream of another depends on that stage's outputs, which are not
in the workspace until restored; but their hashes are written in the upstream stage's run-cache entry. So
the stages of a pipeline are looked up in DVC's own order, each dependency taking its hash from the
workspace, or from the entry of the stage that produces it: nothing is downloaded or run. The keys are
DVC's own (its serialisation and hash functions), checked against DVC's lookup in tests/test_cluster.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dvc.dependency import ParamsDependency
from dvc.repo import Repo
from dvc.repo.reproduce import plan_repro
from dvc.stage import PipelineStage
from dvc.stage.cache import _get_cache_hash
from dvc.stage.loader import StageLoader
from dvc.stage.serialize import to_single_stage_lockfile


@dataclass
class Lookup:
    """A stage's lookup: ``entry`` is its lock entry where `dvc repro` would not run it (None: it would run).

    ``source`` says why not: "run-cache" (restored from it) or "workspace" (up to date with dvc.lock).
    """

    stage: str
    source: str | None
    entry: dict | None
    reason: str = ""  # why it would run

    @property
    def found(self) -> bool:
        return self.entry is not None


def pipeline_order(repo: Repo, names: list[str]) -> list[PipelineStage]:
    """The stages ``dvc repro names`` evaluates (those stages and everything upstream), in DVC's order."""
    return plan_repro(repo.index.graph, [stage for stage in repo.index.stages if stage.name in names])


def _newest_entry(repo: Repo, key: str) -> dict | None:
    """The entry DVC restores for ``key``: the newest file in the key's run-cache folder."""
    folder = repo.stage_cache._get_cache_dir(key)
    if not os.path.isdir(folder):
        return None
    for value in sorted(os.listdir(folder), key=lambda f: os.path.getmtime(os.path.join(folder, f)), reverse=True):
        entry = repo.stage_cache._load_cache(key, value)
        if entry:
            return entry
    return None


def lookup(repo: Repo, names: list[str]) -> dict[str, Lookup]:
    """Look up every stage that ``dvc repro names`` would evaluate in the local run-cache.

    ``names`` are stage names of the repository's dvc.yaml (``train@...``). Returns one :class:`Lookup`
    per stage name, in DVC's order. A stage is found when it is up to date
    in the workspace, or when its key (from the hashes of its dependencies in the workspace, or in the
    entries of the stages upstream) is in the run-cache; downstream of a stage that would run, nothing is.
    """
    try:
        return _lookup(repo, names)
    finally:
        repo._reset()  # drop the stages whose dependency hashes were filled in: the next reader loads them anew


def _lookup(repo: Repo, names: list[str]) -> dict[str, Lookup]:
    produced: dict[str, dict] = {}  # output path -> its lock entry (path, md5, size, ...)
    unknown: set[str] = set()  # outputs of stages that would run: nothing downstream can be looked up
    restored: set[str] = set()  # outputs restored from the run-cache, which the workspace does not hold yet
    found: dict[str, Lookup] = {}
    for stage in pipeline_order(repo, names):
        if not any(dep.def_path in unknown | restored for dep in stage.deps) and not stage.changed():
            entry = to_single_stage_lockfile(stage)
            found[stage.name] = Lookup(stage.name, "workspace", entry)
            produced.update({out["path"]: out for out in entry.get("outs", [])})
            continue
        files = [dep for dep in stage.deps if not isinstance(dep, ParamsDependency)]
        StageLoader.fill_from_lock(stage, {"deps": [produced[d.def_path] for d in files if d.def_path in produced]})
        missing = [
            dep.def_path
            for dep in stage.deps
            if (isinstance(dep, ParamsDependency) or dep.def_path not in produced) and not dep.exists
        ]
        upstream = [dep.def_path for dep in files if dep.def_path in unknown]
        if missing or upstream:
            reason = f"{', '.join(upstream)}: its stage runs first" if upstream else f"{', '.join(missing)} missing"
            found[stage.name] = Lookup(stage.name, None, None, reason)
            unknown.update(out.def_path for out in stage.outs)
            continue
        for dep in stage.deps:
            if isinstance(dep, ParamsDependency) or dep.def_path not in produced:
                dep.save()
        entry = _newest_entry(repo, _get_cache_hash(to_single_stage_lockfile(stage), key=True))
        if entry is None:
            found[stage.name] = Lookup(stage.name, None, None, "not in the run-cache")
            unknown.update(out.def_path for out in stage.outs)
            continue
        found[stage.name] = Lookup(stage.name, "run-cache", entry)
        produced.update({out["path"]: out for out in entry.get("outs", [])})
        restored.update(out["path"] for out in entry.get("outs", []))
    return found


def outputs_available(repo: Repo, entry: dict, remote: str | None = None) -> bool:
    """Whether every output object of a run-cache ``entry`` is in the local cache or on the remote (a
    directory by its listing object), i.e. whether ``dvc repro --pull`` can check the outputs out."""
    for out in entry.get("outs", []):
        oid = out.get("md5")
        if not oid:
            return False
        hash_name = "md5" if out.get("hash") == "md5" else "md5-dos2unix"
        local = repo.cache.local if hash_name == "md5" else repo.cache.legacy
        if not local.exists(oid) and not repo.cloud.get_remote_odb(remote, "fetch", hash_name=hash_name).exists(oid):
            return False
    return True
