"""Run a preset as a DVC experiment: `python presets/run.py NAME [-S key=value ...] [--queue] [--dry-run]`.

A preset is a partial params.yaml (presets/NAME.yaml). Its values, and any `-S key=value` given here
(which win over the preset's), are checked together with the rest of params.yaml first, then passed to
`dvc exp run -n NAME -S key=value ...`, so the run is an experiment that `dvc exp show` lists.
"""

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402

from lmcot.config import ParamsError, read_yaml, validate  # noqa: E402


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def merged(params: dict, overrides: dict) -> dict:
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a file presets/NAME.yaml")
    parser.add_argument("--queue", action="store_true", help="queue the experiment (dvc queue start runs it)")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")
    parser.add_argument(
        "-S", "--set-param", action="append", default=[], metavar="KEY=VALUE", help="a value over the preset's"
    )
    args = parser.parse_args()
    path = ROOT / "presets" / f"{args.name}.yaml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in (ROOT / "presets").glob("*.yaml")))
        sys.exit(f"no preset {args.name!r} (valid: {names})")
    overrides = flatten(read_yaml(path) or {})
    for item in args.set_param:
        key, sep, text = item.partition("=")
        if not sep:
            sys.exit(f"-S {item!r}: write KEY=VALUE, e.g. -S 'train.sweep.lrs=[0.01,0.1]'")
        overrides[key] = YAML(typ="safe", pure=True).load(text)
    try:
        validate(merged(read_yaml(ROOT / "params.yaml"), overrides))
    except ParamsError as err:
        sys.exit(f"preset {path.name} with params.yaml: {err}")
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml"], cwd=ROOT).returncode == 1
    if changed and not args.dry_run:
        print(
            "note: params.yaml differs from the last commit (a previous experiment's values?); the preset's keys "
            "are set on top of it. Run `git checkout params.yaml` first to start from the committed defaults.",
            file=sys.stderr,
        )
    cmd = ["dvc", "exp", "run", "-n", args.name, *(["--queue"] if args.queue else [])]
    for key, value in overrides.items():
        cmd += ["-S", f"{key}={json.dumps(value)}"]  # JSON is YAML, which is how DVC reads -S values
    print(" ".join(cmd))
    if not args.dry_run:
        sys.exit(subprocess.run(cmd, cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
