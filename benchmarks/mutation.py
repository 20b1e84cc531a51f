"""Mutation score of the science modules: ``make mutate`` (about 3.5 hours on 2 cores; not part of CI).

mutmut (PyPI) plants one small change at a time in the modules that ``[tool.mutmut] only_mutate`` of
pyproject.toml names (an operator, a constant, an argument, a return value...) and runs the fast tests that
reach the changed function. A mutant is *killed* when one of them fails and *survives* when all pass.

Every survivor must be explained in ``tests/mutation_survivors.txt``, one line each::

    <mutant name>  <equivalent|untestable|open>  <one-line reason>

``equivalent``: the change cannot alter any result (say why); ``untestable``: it can, but no test of the fast
tier can show it (say why); ``open``: a test could show it and is still to be written (say what it would pin).

mutmut keeps the result of a mutant whose function is unchanged, so after its run this script runs the survivors
again by name, against the tests as they are now. It writes ``reports/mutation.md`` (per module: mutants,
killed, survived, explained) and exits 1 when a module kills under ``--min-killed`` of its mutants, a survivor
is unexplained, or a listed survivor no longer exists or is now killed (so the list stays true).

    python benchmarks/mutation.py                # run mutmut, then write the report
    python benchmarks/mutation.py --report-only  # the report of the last run (mutants/)
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SURVIVORS = ROOT / "tests" / "mutation_survivors.txt"
KINDS = ("equivalent", "untestable", "open")
# mutmut's exit codes of a mutant's test run (mutmut.stats.status_by_exit_code), grouped as this report counts them.
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {24, -24, 36, 152, 255}
SURVIVED_CODES = {0}
NO_TEST_CODES = {5, 33}


@dataclass
class ModuleScore:
    path: str
    killed: list[str] = field(default_factory=list)
    timeout: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)  # tests ran and passed
    no_tests: list[str] = field(default_factory=list)  # no fast test reaches the function
    other: list[str] = field(default_factory=list)  # not checked, crashed, skipped

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.timeout) + len(self.survived) + len(self.no_tests) + len(self.other)

    @property
    def killed_fraction(self) -> float:
        """Killed (a test failed or ran over its time limit) over all mutants; 0 when there are none."""
        return (len(self.killed) + len(self.timeout)) / self.total if self.total else 0.0


def modules_to_mutate(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The files that ``[tool.mutmut] only_mutate`` names, in its order."""
    config = tomllib.loads(pyproject.read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def read_scores(modules: list[str], mutants_dir: Path) -> dict[str, ModuleScore]:
    """Each module's mutants by outcome, from the ``.meta`` files that mutmut writes next to the mutated copies."""
    scores = {}
    for path in modules:
        meta = mutants_dir / f"{path}.meta"
        if not meta.is_file():
            raise SystemExit(f"{meta} is missing: run mutmut first (benchmarks/mutation.py without --report-only)")
        score = ModuleScore(path)
        for name, code in sorted(json.loads(meta.read_text())["exit_code_by_key"].items()):
            if code in KILLED_CODES:
                score.killed.append(name)
            elif code in TIMEOUT_CODES:
                score.timeout.append(name)
            elif code in SURVIVED_CODES:
                score.survived.append(name)
            elif code in NO_TEST_CODES:
                score.no_tests.append(name)
            else:
                score.other.append(name)
        scores[path] = score
    return scores


def read_survivors(path: Path = SURVIVORS) -> dict[str, tuple[str, str]]:
    """``{mutant name: (kind, reason)}`` from the committed list; a malformed line raises naming its number."""
    survivors = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3 or parts[1] not in KINDS:
            raise SystemExit(f"{path}:{number}: expected '<mutant name>  <{'|'.join(KINDS)}>  <reason>', got {line!r}")
        if parts[0] in survivors:
            raise SystemExit(f"{path}:{number}: {parts[0]} is listed twice")
        survivors[parts[0]] = (parts[1], parts[2])
    return survivors


def check(scores: dict[str, ModuleScore], survivors: dict[str, tuple[str, str]], min_killed: float) -> list[str]:
    """Everything that makes the run fail, one line each."""
    problems = []
    alive = set()
    for score in scores.values():
        alive.update(score.survived, score.no_tests)
        if score.other:
            problems.append(f"{score.path}: {len(score.other)} mutants not checked (interrupted?): {score.other[:3]}")
        if score.killed_fraction < min_killed:
            problems.append(f"{score.path}: {score.killed_fraction:.1%} of mutants killed, under {min_killed:.0%}")
    all_names = {name for s in scores.values() for bucket in (s.killed, s.timeout) for name in bucket}
    for name in sorted(alive - set(survivors)):
        problems.append(f"{name} survives and is not explained in {SURVIVORS.relative_to(ROOT)}")
    for name in sorted(set(survivors) - alive):
        state = "is now killed" if name in all_names else "no longer exists"
        problems.append(f"{name} is listed in {SURVIVORS.relative_to(ROOT)} but {state}: remove its line")
    return problems


def mutmut_version() -> str:
    """The installed mutmut's version; the report is also rendered (and tested) where mutmut is absent."""
    try:
        return importlib.metadata.version("mutmut")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def render(scores: dict[str, ModuleScore], survivors: dict[str, tuple[str, str]], min_killed: float, problems) -> str:
    kinds = {
        path: Counter(survivors[n][0] for n in s.survived + s.no_tests if n in survivors) for path, s in scores.items()
    }
    lines = [
        "# Mutation score of the science modules",
        "",
        f"mutmut {mutmut_version()}, {dt.date.today().isoformat()}, `make mutate` (`python benchmarks/mutation.py`).",
        "Each mutant is one small change to one function; the fast tests (`pytest -m 'not slow'`) that reach that",
        "function run against it. *Killed*: a test failed or ran past its time limit. Every survivor is listed with",
        "a reason in `tests/mutation_survivors.txt`: *equivalent* (no result can change), *untestable* (no fast",
        "test can show the change) or *open* (a test could, and is still to be written).",
        "mutmut skips decorated functions, so the science functions of these modules carry none (properties",
        "aside; `tests/test_mutation_report.py` checks it): each computing function is mutated.",
        f"The bar: at least {min_killed:.0%} of each module's mutants killed.",
        "",
        "| module | mutants | killed | timeouts | survived | no test reaches it | equivalent | untestable | open "
        "| killed share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, s in scores.items():
        lines.append(
            f"| `{path}` | {s.total} | {len(s.killed)} | {len(s.timeout)} | {len(s.survived)} | {len(s.no_tests)} "
            f"| {kinds[path]['equivalent']} | {kinds[path]['untestable']} | {kinds[path]['open']} "
            f"| {s.killed_fraction:.1%} |"
        )
    lines += ["", "## Verdict", ""]
    verdict = [f"- {p}" for p in problems] or ["Every module meets the bar and every survivor is explained."]
    lines += verdict
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-only", action="store_true", help="summarise the last run in mutants/")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--min-killed", type=float, default=0.8, help="bar per module (default 0.8)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "mutation.md")
    args = parser.parse_args(argv)
    if not 0 <= args.min_killed <= 1:
        parser.error(f"--min-killed must be between 0 and 1, got {args.min_killed}")
    survivors = read_survivors()  # a malformed list fails before an hour of mutants
    modules = modules_to_mutate()
    if not args.report_only:
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        if subprocess.run(mutmut, cwd=ROOT).returncode != 0:
            return 1
        alive = [n for s in read_scores(modules, ROOT / "mutants").values() for n in s.survived + s.no_tests]
        if alive and subprocess.run([*mutmut, *alive], cwd=ROOT).returncode != 0:
            return 1
    scores = read_scores(modules, ROOT / "mutants")
    problems = check(scores, survivors, args.min_killed)
    text = render(scores, survivors, args.min_killed, problems)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
