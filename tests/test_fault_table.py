"""The README's fault table names, for every row, the tests that cause that fault: each named test must exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fault_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Faults and recovery", 1)[1].split("\n## ", 1)[0]
    return [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| fault", "| ---"))
    ]


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_row_of_the_fault_table_names_tests_that_exist():
    rows = fault_rows()
    assert len(rows) >= 15
    missing = []
    for row in rows:
        test_cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        named = re.findall(r"`(test_\w+\.py)(?:::(\w+))?", test_cell)
        assert named, f"a fault-table row names no test: {row[:100]}"
        for file, function in named:
            path = ROOT / "tests" / file
            if not path.exists():
                missing.append(file)
            elif function and function not in functions_in(path):
                missing.append(f"{file}::{function}")
    assert not missing, f"the fault table names tests that do not exist: {missing}"
