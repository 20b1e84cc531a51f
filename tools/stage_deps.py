"""Each stage's code deps in dvc.yaml are exactly the project files the stage imports, transitively, so that a
code change reruns every stage whose result it can change, and no other (DVC caches by deps).

    python tools/stage_deps.py          # list each stage whose deps disagree (exit 1 if any)
    python tools/stage_deps.py --fix    # rewrite the code deps in dvc.yaml (`make deps`)

The import closure is read from the source (``ast``; nothing is imported): every ``import``/``from`` of a project
module, absolute or relative, at the top or inside a function (lazy imports run too), except those under
``if TYPE_CHECKING:``. Importing ``lmcot.x.y`` also runs ``lmcot/__init__.py`` and ``lmcot/x/__init__.py``; a stage
script's ``import common`` is ``stages/common.py``. tests/test_stage_deps.py runs the check.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _is_type_checking_block(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def package_of(path: Path) -> list[str]:
    """The dotted package a project file belongs to, as parts (``lmcot/models/mlp.py`` -> lmcot, models)."""
    return list(path.relative_to(ROOT).parent.parts)


def imported_modules(source: str, package: list[str] | None = None) -> set[str]:
    """Dotted names of every module ``source`` imports at run time (``from a import b`` gives ``a`` and ``a.b``).
    Relative imports are resolved against ``package`` (the importing file's package parts)."""
    names = set()
    todo = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if _is_type_checking_block(node):
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None or node.level > len(package):
                    raise ValueError(f"relative import {'.' * node.level}{base} outside a package")
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
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
    """``script`` and every project file it imports, transitively (paths relative to the repository)."""
    seen, todo = set(), [script.relative_to(ROOT) if script.is_absolute() else script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = package_of(ROOT / path) if path.parts[0] == "lmcot" else None
        for module in imported_modules((ROOT / path).read_text(), package):
            todo += project_files(module, ROOT / path)
    return seen


def stages() -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_definition(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep theirs under do:


def code_deps(stage: dict) -> set[Path]:
    return {Path(dep) for dep in stage_definition(stage)["deps"] if str(dep).endswith(".py")}


def stage_script(stage: dict) -> Path:
    match = re.match(r"python (stages/\w+\.py)\b", stage_definition(stage)["cmd"])
    if not match:
        raise ValueError(f"cmd {stage_definition(stage)['cmd']!r} does not run a stage script")
    return ROOT / match[1]


def code_directories(stage: dict) -> list[str]:
    """Deps that are folders holding project code: they would rerun the stage on any change to any module."""
    found = []
    for dep in stage_definition(stage)["deps"]:
        path = ROOT / str(dep).split("$")[0]
        if path.is_dir() and (path.resolve() == ROOT or any(p.suffix == ".py" for p in path.rglob("*.py"))):
            found.append(str(dep))
    return found


def disagreements() -> dict[str, tuple[list[str], list[str]]]:
    """Stage name -> (files it imports that dvc.yaml does not list, listed files it does not import)."""
    found = {}
    for name, stage in stages().items():
        closure, listed = import_closure(stage_script(stage)), code_deps(stage)
        folders = code_directories(stage)
        if closure != listed or folders:
            found[name] = (sorted(map(str, closure - listed)), sorted(map(str, listed - closure)) + folders)
    return found


def _ordered(closure: set[Path], script: Path) -> list[Path]:
    """The script first, then its stages/ helpers, then package modules, each group sorted."""
    return sorted(closure, key=lambda p: (p != script, p.parts[0] != "stages", str(p)))


def fix(text: str) -> str:
    """dvc.yaml's text with each stage's ``.py`` deps replaced by its import closure (other deps kept in place:
    those listed before the first code dep stay before, the rest after)."""
    definitions = stages()
    lines, out, stage, i = text.split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i]
        if match := re.match(r"^  (\w+):\s*$", line):
            stage = match[1]
        deps = re.match(r"^(\s+)deps:\s*$", line)
        out.append(line)
        i += 1
        if not (deps and stage in definitions):
            continue
        indent = deps[1] + "  "
        before, after, seen_code = [], [], False
        while i < len(lines) and lines[i].startswith(f"{indent}- "):
            if lines[i].strip().endswith(".py"):
                seen_code = True
            else:
                (after if seen_code else before).append(lines[i])
            i += 1
        script = stage_script(definitions[stage]).relative_to(ROOT)
        code = [f"{indent}- {p}" for p in _ordered(import_closure(script), script)]
        out += before + code + after
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fix", action="store_true", help="rewrite dvc.yaml's code deps")
    args = parser.parse_args(argv)
    if args.fix:
        path, tmp = ROOT / "dvc.yaml", ROOT / "dvc.yaml.tmp"
        tmp.write_text(fix(path.read_text()))
        tmp.replace(path)  # atomic: an interrupted fix leaves dvc.yaml as it was
    problems = disagreements()
    for name, (missing, extra) in problems.items():
        print(f"dvc.yaml stage {name!r}: add {missing or 'nothing'}, remove {extra or 'nothing'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
