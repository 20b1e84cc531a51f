"""Stage prepare: make or load one data set, standardise it if prepare.<dataset>.standardise says so,
write data/prepared/<dataset>.safetensors."""

import argparse
import logging

from common import item_stage, package_path, prepared_path, run, setup

from lmcot.data import prepare
from lmcot.errors import UserError
from lmcot.sources import PACKAGES

log = logging.getLogger("prepare")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    args = parser.parse_args()
    params = setup("prepare")
    if args.dataset not in params["prepare"]:
        valid = ", ".join(params["prepare"])
        raise UserError(f"no options for dataset {args.dataset!r} under prepare in params.yaml (valid: {valid})")
    options = params["prepare"][args.dataset]
    source = package_path(args.dataset) if args.dataset in PACKAGES else None
    ds = prepare(args.dataset, options, source)
    log.info(
        "%s: %d train and %d test samples of shape %s, %d classes, %s",
        ds.name,
        len(ds.x_train),
        len(ds.x_test),
        ds.input_shape,
        ds.num_classes,
        "standardised with train-split statistics" if options["standardise"] else "not standardised",
    )
    ds.save(prepared_path(args.dataset))


if __name__ == "__main__":
    run(item_stage("prepare"), main)
