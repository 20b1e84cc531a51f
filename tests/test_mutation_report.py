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
