"""benchmarks/mutation.py (`make mutate`): how mutmut's results become the per-module table and its verdict."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutation", ROOT / "benchmarks" / "mutation.py")
mutation = importlib.util.module_from_spec(spec)
sys.modules["mutation"] = mutation  # dataclasses look their module up there
spec.loader.exec_module(mutation)


def write_meta(mutants, path, codes):
    meta = mutants / f"{path}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))


def test_outcomes_shares_and_verdict(tmp_path):
    write_meta(tmp_path, "lmcot/a.py", {"a.x_f__mutmut_1": 1, "a.x_f__mutmut_2": 36, "a.x_f__mutmut_3": 0})
    write_meta(tmp_path, "lmcot/b.py", {f"b.x_g__mutmut_{i}": 1 for i in range(9)} | {"b.x_g__mutmut_9": 5})
    scores = mutation.read_scores(["lmcot/a.py", "lmcot/b.py"], tmp_path)
    a, b = scores["lmcot/a.py"], scores["lmcot/b.py"]
    assert (len(a.killed), len(a.timeout), a.survived, a.total) == (1, 1, ["a.x_f__mutmut_3"], 3)
    assert a.killed_fraction == pytest.approx(2 / 3) and b.killed_fraction == pytest.approx(0.9)
    assert b.no_tests == ["b.x_g__mutmut_9"]

    explained = {"a.x_f__mutmut_3": ("equivalent", "why"), "b.x_g__mutmut_9": ("open", "what")}
    assert mutation.check(scores, explained, min_killed=0.6) == []
    problems = mutation.check(scores, {"a.x_f__mutmut_1": ("open", "stale")}, min_killed=0.8)
    assert any("lmcot/a.py: 66.7% of mutants killed, under 80%" in p for p in problems)
    assert any(p.startswith("a.x_f__mutmut_3 survives and is not explained") for p in problems)
    assert any(p.startswith("b.x_g__mutmut_9 survives and is not explained") for p in problems)
    assert any(p.startswith("a.x_f__mutmut_1 is listed") and "is now killed" in p for p in problems)
    table = mutation.render(scores, explained, 0.6, [])
    assert "| `lmcot/a.py` | 3 | 1 | 1 | 1 | 0 | 1 | 0 | 0 | 66.7% |" in table
    assert "| `lmcot/b.py` | 10 | 9 | 0 | 0 | 1 | 0 | 0 | 1 | 90.0% |" in table


def test_the_survivor_list_is_read_strictly(tmp_path):
    path = tmp_path / "survivors.txt"
    path.write_text("# comment\n\na.x_f__mutmut_3  equivalent  a batch size only splits a sum\n")
    assert mutation.read_survivors(path) == {"a.x_f__mutmut_3": ("equivalent", "a batch size only splits a sum")}
    for bad in ("a.x_f__mutmut_3  maybe  no idea\n", "a.x_f__mutmut_3  open\n", "x  open  a\nx  open  b\n"):
        path.write_text(bad)
        with pytest.raises(SystemExit, match="survivors.txt:[12]: "):
            mutation.read_survivors(path)


def test_the_committed_list_is_well_formed_and_names_the_mutated_modules():
    survivors = mutation.read_survivors()
    modules = set(mutation.modules_to_mutate())
    outside = [n for n in survivors if n.rsplit(".", 1)[0].replace(".", "/") + ".py" not in modules]
    assert not outside, f"survivors of modules that are not mutated: {outside[:3]}"


def test_no_computing_function_of_a_mutated_module_is_decorated():
    """mutmut 3.8.1 leaves decorated functions unmutated, so a ``@torch.no_grad()`` on a science function would drop
    it from the score without a word: such functions open a ``with torch.no_grad():`` block instead. Properties
    (one-line derived fields: a name, a total) are left as they are: a trampoline cannot replace them."""
    import ast

    decorated = []
    for path in mutation.modules_to_mutate():
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # mutmut's own trampolines are what its mutated copies (where this test also runs) add
                names = [ast.unparse(d) for d in node.decorator_list if "_mutmut" not in ast.unparse(d)]
                if names and names != ["property"]:
                    decorated.append(f"{path}: {node.name} (@{', @'.join(names)})")
    assert not decorated, f"decorated functions mutmut would skip: {decorated}"


def test_verdicts_are_carried_to_a_fresh_clone_with_their_functions_code(tmp_path):
    done, fresh = tmp_path / "done", tmp_path / "fresh"
    codes = {"lmcot.a.x_f__mutmut_1": 1, "lmcot.a.x_f__mutmut_2": 0, "lmcot.a.x_f__mutmut_3": None}
    codes |= {"lmcot.a.xǁCǁg__mutmut_1": -9, "lmcot.a.xǁCǁg__mutmut_2": 33}  # -9: interrupted by a kill
    write_meta(done, "lmcot/a.py", codes)
    meta = done / "lmcot/a.py.meta"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"hash_by_function_name": {"x_f": "h1", "xǁCǁg": "h2"}}))
    results = tmp_path / "results.json"
    assert mutation.save_results(["lmcot/a.py"], done, results) == 3  # the not-run and the interrupted left out
    assert json.loads(results.read_text()) == {
        "lmcot/a.py": {
            "x_f": {"hash": "h1", "exit_codes": {"1": 1, "2": 0}},
            "xǁCǁg": {"hash": "h2", "exit_codes": {"2": 33}},
        }
    }
    seeded = mutation.seed_results(["lmcot/a.py", "lmcot/b.py"], fresh, results)
    assert seeded == {"lmcot.a.x_f__mutmut_1", "lmcot.a.x_f__mutmut_2", "lmcot.a.xǁCǁg__mutmut_2"}
    written = json.loads((fresh / "lmcot/a.py.meta").read_text())
    assert written["hash_by_function_name"] == {"x_f": "h1", "xǁCǁg": "h2"}
    assert written["exit_code_by_key"] == {k: v for k, v in codes.items() if k in seeded}
    assert not (fresh / "lmcot/b.py.meta").exists()  # a module without results is left to mutmut
    # A module that has its own results in mutants/ keeps them: they are newer than the committed ones.
    (fresh / "lmcot/a.py.meta").write_text("{}")
    assert mutation.seed_results(["lmcot/a.py"], fresh, results) == set()
    assert (fresh / "lmcot/a.py.meta").read_text() == "{}"
    assert mutation.seed_results(["lmcot/a.py"], tmp_path / "other", tmp_path / "absent.json") == set()


def test_the_committed_results_name_only_mutated_modules_and_final_verdicts():
    results = json.loads(mutation.RESULTS.read_text())
    assert set(results) <= set(mutation.modules_to_mutate())
    for functions in results.values():
        for entry in functions.values():
            assert set(entry["exit_codes"].values()) <= mutation.FINAL_CODES and len(entry["hash"]) == 12


def test_every_module_the_fork_server_preloads_exists():
    """mutmut skips a preload it cannot import without a word: a misspelt name would cost speed silently."""
    lines = (ROOT / "benchmarks" / "mutation_preload.txt").read_text().splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def found(name):
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            return False

    sys.path.insert(0, str(ROOT))  # mutmut runs from the project root: benchmarks/ is importable there
    try:
        assert [name for name in names if not found(name)] == []
        assert not found("sklearn.datasetz") and not found("sklearnz.datasets")  # the check can fail
    finally:
        sys.path.remove(str(ROOT))
    assert names[-1] == "benchmarks.mutation_freeze"  # after every import, or it freezes too little
