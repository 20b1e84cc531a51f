"""dvc.yaml's code deps of every stage are exactly the files the stage imports (tools/stage_deps.py), so that
any code change reruns every stage whose result it can change, and no other."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from stage_deps import (  # noqa: E402
    code_deps,
    code_directories,
    fix,
    import_closure,
    imported_modules,
    project_files,
    stage_script,
    stages,
)

STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name):
    closure = import_closure(stage_script(STAGES[name]))
    listed = code_deps(STAGES[name])
    missing, extra = sorted(map(str, closure - listed)), sorted(map(str, listed - closure))
    assert not missing and not extra, (
        f"dvc.yaml stage {name!r}: code deps must be the files the stage imports; "
        f"add {missing or 'nothing'}, remove {extra or 'nothing'} (`make deps` rewrites them)"
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_depends_on_a_folder_of_code(name):
    assert not code_directories(STAGES[name]), f"dvc.yaml stage {name!r}: list the modules it imports, not a folder"


def test_the_closure_sees_lazy_imports_and_skips_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\nimport lmcot.config\nif TYPE_CHECKING:\n    from lmcot.models import X\n"
        "def f():\n    from lmcot import analysis\n    import common\n"
    )
    assert imported_modules(source) == {"typing", "typing.TYPE_CHECKING", "lmcot.config", "lmcot", "lmcot.analysis"} | {
        "common"
    }
    assert project_files("lmcot.analysis", ROOT / "stages" / "report.py") == {
        Path("lmcot/__init__.py"),
        Path("lmcot/analysis.py"),
    }
    assert project_files("common", ROOT / "stages" / "report.py") == {Path("stages/common.py")}
    assert project_files("common", ROOT / "lmcot" / "report" / "build.py") == set()
    assert project_files("numpy", ROOT / "stages" / "report.py") == set()


def test_relative_imports_resolve_against_the_importing_package():
    source = "from . import ot\nfrom .evaluation import evaluate\nfrom ..io import write_csv\n"
    assert imported_modules(source, ["lmcot", "report"]) == {
        "lmcot.report",
        "lmcot.report.ot",
        "lmcot.report.evaluation",
        "lmcot.report.evaluation.evaluate",
        "lmcot.io",
        "lmcot.io.write_csv",
    }
    with pytest.raises(ValueError, match="outside a package"):
        imported_modules("from ... import x\n", ["lmcot"])


def test_fix_rewrites_only_the_code_deps(tmp_path):
    """A stale list is replaced by the closure; data deps keep their places around it."""
    text = (ROOT / "dvc.yaml").read_text()
    stale = text.replace(
        "      - stages/check_params.py\n", "      - stages/check_params.py\n      - lmcot/cluster.py\n", 1
    )
    assert stale != text
    assert fix(stale) == text


def test_light_stages_do_not_import_the_models():
    """check_params and fetch validate and download; a change to the science must not rerun them."""
    for name in ("check_params", "fetch"):
        closure = {str(p) for p in import_closure(stage_script(STAGES[name]))}
        assert not {f for f in closure if f.startswith(("lmcot/models", "lmcot/align", "lmcot/training"))}, name


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT)
    return None


def import_graph() -> dict[Path, set[Path]]:
    """Package file -> the package files it imports (a package's __init__ that Python runs first is not an edge)."""
    graph = {}
    for path in sorted((ROOT / "lmcot").rglob("*.py")):
        rel = path.relative_to(ROOT)
        modules = imported_modules(path.read_text(), list(rel.parent.parts))
        graph[rel] = {f for m in modules if m.startswith("lmcot") and (f := _module_file(m)) and f != rel}
    return graph


def find_cycle(graph: dict) -> list | None:
    """One cycle of ``graph`` as a list of nodes, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(map(str, cycle))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds one


def test_config_imports_no_science_module():
    graph = import_graph()
    config = {Path("lmcot/config.py")}
    todo = [Path("lmcot/config.py")]
    while todo:
        for nxt in graph[todo.pop()] - config:
            config.add(nxt)
            todo.append(nxt)
    assert {str(p) for p in config} <= {"lmcot/config.py", "lmcot/choices.py", "lmcot/sources.py", "lmcot/errors.py"}
