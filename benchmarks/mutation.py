"""Mutation score of the science modules: ``make mutate`` (not part of CI).

mutmut (PyPI) plants one small change at a time in the modules that ``[tool.mutmut] only_mutate`` of
pyproject.toml names (an operator, a constant, an argument, a return value...) and runs the fast tests that
reach the changed function. A mutant is *killed* when one of them fails and *survives* when all pass.

Every survivor must be explained in ``tests/mutation_survivors.txt``, one line each::

    <mutant name>  <equivalent|untestable|open>  <one-line reason>

``equivalent``: the change cannot alter any result (say why); ``untestable``: it can, but no test of the fast
tier can show it (say why); ``open``: a test could show it and is still to be written (say what it would pin).

A whole run takes hours, so its verdicts are committed: ``reports/mutation-results.json`` keeps each mutant's
result with the hash of its function's code, and a run in a fresh clone starts from it. mutmut then tests only
the mutants of functions whose code changed since (or that no run finished), and this script runs the carried
survivors again by name, against the tests as they are now (a new test may kill them). ``--fresh`` tests every
mutant. It writes ``reports/mutation.md`` (per module: mutants, killed, survived, explained) and exits 1 when a
module kills under ``--min-killed`` of its mutants, a survivor is unexplained, or a listed survivor no longer
exists or is now killed (so the list stays true).

    python benchmarks/mutation.py                # run mutmut (from the committed results), then write the report
    python benchmarks/mutation.py --fresh        # test every mutant again
    python benchmarks/mutation.py --report-only  # the report (and committed results) of the last run (mutants/)
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
RESULTS = ROOT / "reports" / "mutation-results.json"
KINDS = ("equivalent", "untestable", "open")
# mutmut's exit codes of a mutant's test run (mutmut.stats.status_by_exit_code), grouped as this report counts them.
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {24, -24, 36, 152, 255}
SURVIVED_CODES = {0}
NO_TEST_CODES = {5, 33}
FINAL_CODES = KILLED_CODES | TIMEOUT_CODES | SURVIVED_CODES | NO_TEST_CODES  # others: not run, or interrupted


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


def _split(name: str) -> tuple[str, str]:
    """``lmcot.barrier.x_f__mutmut_3`` -> ``("x_f", "3")``: the mangled function and the mutant's number."""
    function, _, number = name.rsplit(".", 1)[1].rpartition("__mutmut_")
    return function, number


def save_results(modules: list[str], mutants_dir: Path, path: Path = RESULTS) -> int:
    """Write each module's final verdicts (mutmut's exit codes), grouped by function with the hash of the
    function's code, to ``path`` (atomically); a mutant not run or interrupted is left out. Returns their count."""
    results, count = {}, 0
    for module in modules:
        meta = json.loads((mutants_dir / f"{module}.meta").read_text())
        functions = {}
        for name, code in meta["exit_code_by_key"].items():
            function, number = _split(name)
            if code in FINAL_CODES and function in meta["hash_by_function_name"]:
                entry = functions.setdefault(function, {"hash": meta["hash_by_function_name"][function]})
                entry.setdefault("exit_codes", {})[number] = code
                count += 1
        results[module] = functions
    # One function per line, so that a rerun's diff shows which functions' verdicts changed.
    modules_text = []
    for module, functions in results.items():
        rows = [
            f"    {json.dumps(f)}: "
            + json.dumps(
                {"hash": e["hash"], "exit_codes": dict(sorted(e["exit_codes"].items(), key=lambda c: int(c[0])))}
            )
            for f, e in sorted(functions.items())
        ]
        modules_text.append(f"  {json.dumps(module)}: {{\n" + ",\n".join(rows) + "\n  }")
    text = "{\n" + ",\n".join(modules_text) + "\n}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return count


def seed_results(modules: list[str], mutants_dir: Path, path: Path = RESULTS) -> set[str]:
    """Give mutmut the committed verdicts: a module that has no ``.meta`` in ``mutants_dir`` gets one from
    ``path``. mutmut keeps a verdict only where the function's code still has the committed hash and tests
    the rest. Returns the names of the mutants given a verdict."""
    if not path.is_file():
        return set()
    results, seeded = json.loads(path.read_text()), set()
    for module in modules:
        meta = mutants_dir / f"{module}.meta"
        if meta.exists() or module not in results:
            continue
        prefix = module.removesuffix(".py").replace("/", ".")
        codes = {
            f"{prefix}.{function}__mutmut_{number}": code
            for function, entry in results[module].items()
            for number, code in entry.get("exit_codes", {}).items()
        }
        hashes = {function: entry["hash"] for function, entry in results[module].items()}
        meta.parent.mkdir(parents=True, exist_ok=True)
        empty = {"type_check_error_by_key": {}, "durations_by_key": {}, "estimated_durations_by_key": {}}
        meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": hashes, **empty}))
        seeded.update(codes)
    return seeded


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
    parser.add_argument("--fresh", action="store_true", help=f"test every mutant, not only those {RESULTS.name} lacks")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--min-killed", type=float, default=0.8, help="bar per module (default 0.8)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "mutation.md")
    args = parser.parse_args(argv)
    if not 0 <= args.min_killed <= 1:
        parser.error(f"--min-killed must be between 0 and 1, got {args.min_killed}")
    survivors = read_survivors()  # a malformed list fails before an hour of mutants
    modules = modules_to_mutate()
    mutants_dir = ROOT / "mutants"
    if not args.report_only:
        carried = set() if args.fresh else seed_results(modules, mutants_dir)
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        # Every mutant's test run imports the mutated modules (megabytes: all mutants of every function). Compiled
        # once, they load in milliseconds instead of seconds, so bytecode is written even where the shell says not.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        try:
            if subprocess.run(mutmut, cwd=ROOT, env=env).returncode != 0:
                return 1
            # Survivors found in this run met today's tests already; carried ones may meet a new test.
            scores = read_scores(modules, mutants_dir)
            alive = [n for s in scores.values() for n in s.survived + s.no_tests if n in carried]
            if alive and subprocess.run([*mutmut, *alive], cwd=ROOT, env=env).returncode != 0:
                return 1
        finally:  # an interrupted run keeps what it finished for the next one
            if all((mutants_dir / f"{m}.meta").is_file() for m in modules):
                save_results(modules, mutants_dir)
    scores = read_scores(modules, mutants_dir)
    if args.report_only:
        save_results(modules, mutants_dir)
    problems = check(scores, survivors, args.min_killed)
    text = render(scores, survivors, args.min_killed, problems)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
