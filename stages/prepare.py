"""Stage prepare: make or load one data set, standardise it, write data/prepared/<dataset>.safetensors."""

import argparse
import logging

from common import prepared_path, setup

from lmcot.data import prepare

log = logging.getLogger("prepare")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    args = parser.parse_args()
    params = setup("prepare")
    if args.dataset not in params["prepare"]:
        raise SystemExit(f"prepare: no options for dataset {args.dataset!r} under prepare in params.yaml")
    ds = prepare(args.dataset, params["prepare"][args.dataset])
    log.info(
        "%s: %d train and %d test samples of shape %s, %d classes",
        ds.name,
        len(ds.x_train),
        len(ds.x_test),
        ds.input_shape,
        ds.num_classes,
    )
    ds.save(prepared_path(args.dataset))


if __name__ == "__main__":
    main()
