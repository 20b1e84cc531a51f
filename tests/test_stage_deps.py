"""dvc.yaml's code deps of every stage are exactly the project files the stage imports, transitively, so that
any code change reruns every stage whose result it can change, and no other (DVC caches by deps).

The import closure is read from the source (``ast``; nothing is imported): every ``import``/``from`` of a project
module, at the top or inside a function (lazy imports run too), except those under ``if TYPE_CHECKING:``.
Importing ``lmcot.x`` also runs ``lmcot/__init__.py``; a stage script's ``import common`` is ``stages/common.py``.
"""

import ast
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def _is_type_checking_block(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(source: str) -> set[str]:
    """Dotted names of every module ``source`` imports at run time (``from a import b`` gives ``a`` and ``a.b``)."""
    names = set()
    todo = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if _is_type_checking_block(node):
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        todo += ast.iter_child_nodes(node)
    return names


def project_files(module: str, importer: Path) -> set[Path]:
    """The project files that importing ``module`` from ``importer`` runs (relative to the repository)."""
    parts = module.split(".")
    if parts[0] != "lmcot":
        sibling = importer.parent / f"{parts[0]}.py"  # a script's own directory is first on sys.path
        return {sibling.relative_to(ROOT)} if importer.parent.name == "stages" and sibling.is_file() else set()
    files = set()
    for depth in range(1, len(parts) + 1):
        path = ROOT.joinpath(*parts[:depth])
        for candidate in (path / "__init__.py", path.with_suffix(".py")):
            if candidate.is_file():
                files.add(candidate.relative_to(ROOT))
    return files


def import_closure(script: Path) -> set[Path]:
    """``script`` and every project file it imports, transitively."""
    seen, todo = set(), [script.relative_to(ROOT)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules((ROOT / path).read_text()):
            todo += project_files(module, ROOT / path)
    return seen


def stage_definition(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep theirs under do:


def code_deps(stage: dict) -> set[Path]:
    return {Path(dep) for dep in stage_definition(stage)["deps"] if str(dep).endswith(".py")}


def stage_script(stage: dict) -> Path:
    match = re.match(r"python (stages/\w+\.py)\b", stage_definition(stage)["cmd"])
    assert match, f"cmd {stage_definition(stage)['cmd']!r} does not run a stage script"
    return ROOT / match[1]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name):
    closure = import_closure(stage_script(STAGES[name]))
    listed = code_deps(STAGES[name])
    missing, extra = sorted(map(str, closure - listed)), sorted(map(str, listed - closure))
    assert not missing and not extra, (
        f"dvc.yaml stage {name!r}: code deps must be the files the stage imports; "
        f"add {missing or 'nothing'}, remove {extra or 'nothing'}"
    )


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
