"""``params.yaml``: reading, checking against one schema, and the list of configurations it sweeps.

Every stage calls :func:`load_params` first, so a typo or an out-of-range value fails in seconds with
a message naming the key, the value and what is valid, before any data is made or model trained.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# Names only: validating params imports no science module (and no torch), so that it costs no start-up.
from lmcot.choices import (
    ARCHITECTURES,
    BIAS_AWARE_UNSUPPORTED,
    COUPLE_TO,
    DATASETS,
    DEVICES,
    HEADED,
    HEADS_UNSUPPORTED,
    INPUT_TRANSPORTS,
    METHODS,
    NORM_CORRECTIONS,
    OPTIMIZERS,
    PAIRINGS,
    REPLICATIONS,
    SCHEDULES,
    SOLVERS,
    STARTS,
)
from lmcot.errors import MissingFileError, UserError
from lmcot.sources import PACKAGES


class ParamsError(UserError, ValueError):
    """One or more problems in params.yaml; the message lists each on its own line."""


# --- a tiny schema language: each rule checks one value and returns it (normalised) or raises ------


class Invalid(Exception):
    pass


def integer(minimum=None, maximum=None, multiple_of=1):
    expected = f"must be an integer{_range(minimum, maximum)}" + (
        f", a multiple of {multiple_of}" if multiple_of > 1 else ""
    )

    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v % multiple_of:
            raise Invalid(expected)
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            raise Invalid(expected)
        return v

    return check


def number(minimum=None, maximum=None, exclusive_minimum=False):
    def check(v):
        if isinstance(v, str):  # YAML 1.1 readers turn 1e-4 into a string; accept it if it is a number
            try:
                v = float(v)
            except ValueError:
                raise Invalid(f"must be a number{_range(minimum, maximum, exclusive_minimum)}") from None
        if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) > 1e300 or not math.isfinite(v):
            raise Invalid(f"must be a finite number{_range(minimum, maximum, exclusive_minimum)}")
        too_low = minimum is not None and (v <= minimum if exclusive_minimum else v < minimum)
        if too_low or (maximum is not None and v > maximum):
            raise Invalid(f"must be a number{_range(minimum, maximum, exclusive_minimum)}")
        return v

    return check


def _range(minimum, maximum, exclusive_minimum=False):
    low = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
    if minimum is not None and maximum is not None:
        return f" {low} and <= {maximum}"
    if minimum is not None:
        return f" {low}"
    return f" <= {maximum}" if maximum is not None else ""


def boolean(v):
    if not isinstance(v, bool):
        raise Invalid("must be true or false")
    return v


def text(v):
    if not isinstance(v, str) or not v:
        raise Invalid("must be a non-empty string")
    return v


def one_of(choices):
    def check(v):
        if v not in choices:
            hint = difflib.get_close_matches(str(v), choices, n=1)
            raise Invalid(
                f"is not valid{'; did you mean ' + repr(hint[0]) + '?' if hint else ''} (valid: {', '.join(choices)})"
            )
        return v

    return check


def list_of(item, min_length=1, unique=True):
    def check(v):
        if not isinstance(v, list):
            raise Invalid(f"must be a list (for one value write [{v}])")
        if len(v) < min_length:
            raise Invalid(f"must list at least {min_length} value{'s' if min_length > 1 else ''}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Invalid as err:
                raise Invalid(f"item [{i}] = {x!r} {err}") from None
        if unique and len(set(out)) != len(out):
            raise Invalid("must not repeat a value")
        return out

    return check


MODEL_PATTERN = re.compile(r"^(?P<arch>[a-z0-9_]+)-d(?P<depth>[0-9]+)-w(?P<width>[0-9]+)(-h(?P<heads>[0-9]+))?$")


def model_spec(v):
    """A model of the sweep, ``<arch>-d<depth>-w<width>``: e.g. ``mlp-d2-w128`` or ``lstm-d1-w64``; an
    architecture with attention heads (``HEADED``) adds ``-h<heads>``: ``vit-d2-w64-h4``."""
    match = MODEL_PATTERN.match(v) if isinstance(v, str) else None
    example = "write <arch>-d<depth>-w<width>, e.g. mlp-d2-w128 (with attention heads: vit-d2-w64-h4)"
    if not match:
        raise Invalid(f"is not a model; {example} (archs: {', '.join(ARCHITECTURES)})")
    one_of(tuple(ARCHITECTURES))(match["arch"])
    if int(match["depth"]) < 1 or int(match["width"]) < 1:
        raise Invalid(f"needs depth and width >= 1; {example}")
    if match["arch"] in HEADED:
        if match["heads"] is None or int(match["heads"]) < 1:
            raise Invalid(f"{match['arch']} needs -h<heads> with heads >= 1, e.g. {match['arch']}-d2-w64-h4")
        if int(match["width"]) % int(match["heads"]):
            raise Invalid(f"{match['heads']} heads do not divide the width {match['width']}; give heads that do")
    elif match["heads"] is not None:
        raise Invalid(f"{match['arch']} has no attention heads: drop -h{match['heads']}")
    return v


def either(*rules):
    def check(v):
        errors = []
        for rule in rules:
            try:
                return rule(v)
            except Invalid as err:
                errors.append(str(err))
        raise Invalid(" or ".join(errors))

    return check


def optional(rule):
    """``rule``, or null (YAML ``null``: the tool's default)."""

    def check(v):
        return None if v is None else rule(v)

    return check


SLURM_TIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")
SLURM_MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")


def slurm_time(v):
    """A Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (quote it in YAML)."""
    if not isinstance(v, str) or not SLURM_TIME.match(v):
        raise Invalid('must be a Slurm time limit in quotes: "MM", "HH:MM:SS" or "D-HH:MM:SS", e.g. "04:00:00"')
    return v


def slurm_memory(v):
    """A Slurm memory size: a whole number of megabytes, or with a unit K, M, G or T (e.g. 8G)."""
    if isinstance(v, bool) or not SLURM_MEMORY.match(str(v)):
        raise Invalid("must be a Slurm memory size: megabytes (e.g. 8000), or with a unit K, M, G or T (e.g. 8G)")
    return str(v)


def params_schema() -> dict:
    """The schema of params.yaml: nested dicts whose leaves are rules (a value in, the normalised value out).

    Built on each call (microseconds), so that every rule is made by the code under test, never at import.
    """
    split = {"test_fraction": number(0, 1, exclusive_minimum=True), "seed": integer(0)}
    datasets = {
        "mnist1d": {"num_samples": integer(100, multiple_of=10), **split, "standardise": boolean},
        "digits": {**split, "standardise": boolean},
        "mnist10k": {**split, "standardise": boolean},
        **{
            name: {"root": text, "download": boolean, "standardise": boolean}
            for name in ("mnist", "fashion_mnist", "cifar10")
        },
    }

    return {
        "device": one_of(DEVICES),
        "fetch": {"datasets": list_of(one_of(tuple(PACKAGES)), min_length=0)},
        "prepare": datasets,
        "train": {
            "sweep": {
                "datasets": list_of(one_of(DATASETS)),
                "models": list_of(model_spec),
                "lrs": list_of(number(0, exclusive_minimum=True)),
            },
            "seeds": list_of(integer(0), min_length=2),
            "checkpoint_every": integer(0),
            "recipe": {
                "optimizer": one_of(OPTIMIZERS),
                "momentum": number(0, 1),
                "weight_decay": number(0),
                "epochs": integer(1),
                "batch_size": integer(1),
                "warmup_epochs": number(0),
                "warmup_steps": integer(0),
                "schedule": one_of(SCHEDULES),
            },
        },
        "align": {
            "methods": list_of(one_of(tuple(METHODS))),
            "pairs": one_of(PAIRINGS),
            "num_samples": integer(1),
            "weight_matching": {"max_sweeps": integer(1), "seed": integer(0)},
            "ot_emd": {"num_iter_max": integer(1000)},
            "ot_sinkhorn": {
                "epsilon": number(0, exclusive_minimum=True),
                "num_iter_max": integer(1),
                "stop_threshold": number(0, exclusive_minimum=True),
            },
        },
        "dimension": {
            "num_samples": integer(1),
            "min_ambient": integer(1),
            "wasserstein_rate": {"repeats": integer(1), "seed": integer(0)},
        },
        "fuse": {
            "ot": {
                "solver": one_of(SOLVERS),
                "epsilon": number(0, exclusive_minimum=True),
                "max_iterations": integer(1),
                "alpha_h": number(0),
                "start": one_of(STARTS),
                "input_transport": one_of(INPUT_TRANSPORTS),
                "couple_to": one_of(COUPLE_TO),
            },
            "alpha_h_grid": list_of(number(0), min_length=0),
            "num_models": integer(2),
            "groups": integer(1),
            "weights": either(one_of(("uniform",)), list_of(number(0, exclusive_minimum=True), unique=False)),
            "width_factors": list_of(number(0, 16, exclusive_minimum=True)),
            "fine_tune": {"epochs": integer(0), "lr_factor": number(0, exclusive_minimum=True)},
        },
        "barrier": {
            "alphas": list_of(number(0, 1), min_length=2),
            "splits": list_of(one_of(("train", "test"))),
            "batch_size": integer(1),
            "train_samples": integer(1),
            "norm_corrections": list_of(one_of(NORM_CORRECTIONS), min_length=0),
            "norm_samples": integer(1),
        },
        "plane": {
            "grid_size": integer(3, 101),
            "margin": number(0, 2),
            "num_samples": integer(1),
        },
        "cluster": {
            "workdir": text,
            "partition": optional(text),
            "account": optional(text),
            "time": slurm_time,
            "cpus": integer(1),
            "mem": slurm_memory,
            "gpus": integer(0),
            "max_running": integer(0),
            "gather_time": slurm_time,
        },
        "report": {
            "replications": list_of(one_of(tuple(REPLICATIONS)), min_length=0),
            "overfit_gap": number(0),
            "min_train_accuracy": number(0, 1),
            "dpi": integer(50, 600),
            "figure_format": one_of(("png", "svg", "pdf")),
        },
    }


def validate(params, schema=None, where="") -> dict:
    """Check ``params`` against ``schema`` (default: :func:`params_schema`); return the normalised params or raise
    :class:`ParamsError`."""
    errors = []
    result = _validate(params, params_schema() if schema is None else schema, where, errors)
    if errors:
        raise ParamsError("invalid params.yaml:\n" + "\n".join(f"  - {e}" for e in errors))
    _check_rules(result)
    return result


def _validate(value, schema, where, errors):
    if callable(schema):
        try:
            return schema(value)
        except Invalid as err:
            errors.append(f"{where} = {value!r}: {err}")
            return value
    if not isinstance(value, dict):
        errors.append(f"{where or 'params'} must be a mapping with keys {', '.join(schema)}; got {value!r}")
        return value
    out = {}
    for key in value:
        if key not in schema:
            hint = difflib.get_close_matches(str(key), list(schema), n=1)
            suggestion = f"; did you mean {_join(where, hint[0])!r}?" if hint else ""
            errors.append(
                f"unknown key {_join(where, key)!r}{suggestion} "
                f"(valid under {where or 'the top level'}: {', '.join(schema)})"
            )
    for key, sub in schema.items():
        if key not in value:
            errors.append(f"missing key {_join(where, key)!r}")
        else:
            out[key] = _validate(value[key], sub, _join(where, key), errors)
    return out


def _join(where, key):
    return f"{where}.{key}" if where else str(key)


def _check_rules(params):
    """Rules across fields."""
    errors = []
    datasets = params["train"]["sweep"]["datasets"]
    for dataset in datasets:
        if dataset in PACKAGES and dataset not in params["fetch"]["datasets"]:
            errors.append(
                f"train.sweep.datasets names {dataset!r}, which is made from {PACKAGES[dataset].label}: list it in "
                f"fetch.datasets too (e.g. -S 'fetch.datasets=[{dataset}]'), so that the stage fetch@{dataset} gets it"
            )
    unused = [d for d in params["fetch"]["datasets"] if d not in datasets]
    if unused:
        kept = [d for d in params["fetch"]["datasets"] if d in datasets]
        errors.append(
            f"fetch.datasets lists {', '.join(unused)}, which train.sweep.datasets does not use: the stage fetch@"
            f"{unused[0]} would download it for nothing (and fail offline); write "
            f"-S 'fetch.datasets=[{','.join(kept)}]'"
        )
    recipe = params["train"]["recipe"]
    if recipe["warmup_epochs"] and recipe["warmup_steps"]:
        errors.append(
            f"train.recipe.warmup_epochs = {recipe['warmup_epochs']} and train.recipe.warmup_steps = "
            f"{recipe['warmup_steps']}: give the warm-up in epochs or in steps, and set the other to 0"
        )
    if params["align"]["pairs"] == "disjoint" and len(params["train"]["seeds"]) % 2:
        errors.append(
            f"align.pairs = 'disjoint' pairs seeds two by two, but train.seeds has {len(params['train']['seeds'])} "
            "seeds; give an even number, or write align.pairs: all"
        )
    archs = sorted({parse_model(m)[0] for m in params["train"]["sweep"]["models"]} & set(BIAS_AWARE_UNSUPPORTED))
    if "cov_weight_matching_with_biases" in params["align"]["methods"] and archs:
        errors.append(
            f"align.methods lists cov_weight_matching_with_biases, which needs one bias per unit beside a single "
            f"incoming weight matrix; train.sweep.models has {', '.join(archs)}, whose units have "
            + " / ".join(BIAS_AWARE_UNSUPPORTED[a] for a in archs)
            + ". Leave the method out, or those models"
        )
    headed = sorted({parse_model(m)[0] for m in params["train"]["sweep"]["models"]} & set(HEADED))
    refused = [m for m in params["align"]["methods"] if m in HEADS_UNSUPPORTED]
    if headed and refused:
        errors.append(
            f"align.methods lists {', '.join(refused)}, which cannot keep an attention head's units together ("
            + "; ".join(HEADS_UNSUPPORTED[m] for m in refused)
            + f"); train.sweep.models has {', '.join(headed)}. Leave the method out, or those models"
        )
    fuse, seeds = params["fuse"], params["train"]["seeds"]
    if fuse["num_models"] > len(seeds):
        errors.append(f"fuse.num_models = {fuse['num_models']} but train.seeds has only {len(seeds)} seeds")
    if fuse["weights"] != "uniform" and len(fuse["weights"]) != fuse["num_models"]:
        errors.append(
            f"fuse.weights lists {len(fuse['weights'])} numbers but fuse.num_models = {fuse['num_models']}; "
            "give one weight per fused model, or write uniform"
        )
    if errors:
        raise ParamsError("invalid params.yaml:\n" + "\n".join(f"  - {e}" for e in errors))


def read_yaml(path):
    """Read YAML the way DVC does (YAML 1.2, so ``1e-4`` is a number)."""
    from ruamel.yaml import YAML

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: params file not found")
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except Exception as err:  # ruamel raises many error types, all of them parse errors here
        raise ParamsError(f"{path} is not valid YAML: {err}") from None


PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the project's own: the command line's defaults


def load_params(path="params.yaml") -> dict:
    """Read and validate the whole params file."""
    return validate(read_yaml(path))


# --- the configurations a sweep spans -------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """One cell of the sweep; every seed of it is trained alike."""

    dataset: str
    arch: str
    depth: int
    width: int
    lr: float
    heads: int | None = None  # attention heads (the architectures of HEADED); None for the others

    @property
    def model(self) -> str:
        """The model as ``train.sweep.models`` writes it: ``<arch>-d<depth>-w<width>[-h<heads>]``."""
        heads = f"-h{self.heads}" if self.heads is not None else ""
        return f"{self.arch}-d{self.depth}-w{self.width}{heads}"

    @property
    def name(self) -> str:
        """Directory name used by dvc.yaml's matrix stages (``${item.*}`` printed as Python prints)."""
        return f"{self.dataset}-{self.model}-lr{self.lr}"

    def as_dict(self) -> dict:
        """``{"dataset", "arch", "depth", "width", "lr"}`` (and ``"heads"`` where the model has attention heads): the
        sweep keys, as result tables name their columns."""
        keys = asdict(self)
        if self.heads is None:
            del keys["heads"]
        return keys


def parse_model(spec: str) -> tuple[str, int, int, int | None]:
    """``"mlp-d2-w128"`` -> ``("mlp", 2, 128, None)``, ``"vit-d2-w64-h4"`` -> ``("vit", 2, 64, 4)`` (arch, depth,
    width, heads)."""
    match = MODEL_PATTERN.match(spec)
    if not match:
        raise ValueError(f"{spec!r} is not a model; write <arch>-d<depth>-w<width>, e.g. mlp-d2-w128")
    heads = int(match["heads"]) if match["heads"] is not None else None
    return match["arch"], int(match["depth"]), int(match["width"]), heads


def configurations(params: dict) -> list[Configuration]:
    """Every configuration of ``train.sweep`` (datasets x models x lrs), in the order dvc.yaml's matrix
    lists them."""
    sweep = params["train"]["sweep"]
    return [
        Configuration(dataset, *parse_model(model)[:3], lr, parse_model(model)[3])
        for dataset, model, lr in itertools.product(sweep["datasets"], sweep["models"], sweep["lrs"])
    ]


def main(argv=None) -> int:
    """``python -m lmcot.config [params.yaml]``: validate a params file, print the configurations."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "params.yaml"
    try:
        params = load_params(path)
    except (ParamsError, FileNotFoundError) as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 2
    configs = configurations(params)
    print(f"{path}: valid; {len(configs)} configuration(s) x {len(params['train']['seeds'])} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
