"""The names that params.yaml may give each choice, in a module that imports nothing heavy.

`lmcot.config` validates params against these at the start of every stage, before torch or any science
module is imported; each science module keys its implementations by the same names (tests/test_config.py
checks that the two agree).
"""

from lmcot.sources import PACKAGES  # standard library only

DEVICES = ("auto", "cpu", "cuda")
ARCHITECTURES = ("mlp", "cnn", "resnet", "resnet_bn", "rnn", "lstm", "vit")
HEADED = ("vit",)  # the architectures with attention heads: named <arch>-d<depth>-w<width>-h<heads>
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")  # read from their files on disk
DATASETS = ("mnist1d", "digits", *PACKAGES, *TORCHVISION_DATASETS)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
METHODS = (
    "identity",
    "weight_matching",
    "weight_matching_without_biases",
    "activation_matching",
    "naive_weight_matching",
    "cov_weight_matching",
    "cov_weight_matching_with_biases",
    "activation_covariance",
    "ot_emd",
    "ot_sinkhorn",
    "barycenter",
)
PAIRINGS = ("all", "disjoint")
# Architectures whose units have no single (incoming weights, bias) pair, so that the bias-aware
# covariance method does not apply: what they have instead.
BIAS_AWARE_UNSUPPORTED = {
    "lstm": "four gates, each with its own incoming weights and bias",
    "resnet_bn": "no bias but a BatchNorm shift after the convolution",
    "vit": "query/key units read two weight matrices, q's and k's, each with its own bias",
}
# Alignment methods that cannot keep an attention head's units together (HEADED architectures): why.
HEADS_UNSUPPORTED = {
    "barycenter": "the Wasserstein barycentre couples units one at a time, so it may split a head",
}
NORM_CORRECTIONS = ("reset", "repair")
NO_CORRECTION = "none"  # the correction column of a path evaluated as it is (results/<config>/barriers.csv)
SOLVERS = ("emd", "sinkhorn")
STARTS = ("mean", "best", "first")
COUPLE_TO = ("others", "all")  # the barycentre couples each model to the mean of the others, or to all (the paper)
INPUT_TRANSPORTS = ("average", "sum")
REPLICATIONS = ("ferbach2024", "ainsworth2023")
