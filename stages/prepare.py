"""Stage prepare: make or load one data set, standardise it if prepare.<dataset>.standardise says so,
write data/prepared/<dataset>.safetensors."""

import argparse
import logging
import sys

from common import package_path, prepared_path, setup

from lmcot.data import prepare
from lmcot.sources import PACKAGES, SourceError

log = logging.getLogger("prepare")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    args = parser.parse_args()
    params = setup("prepare")
    if args.dataset not in params["prepare"]:
        raise SystemExit(f"prepare: no options for dataset {args.dataset!r} under prepare in params.yaml")
    options = params["prepare"][args.dataset]
    source = package_path(args.dataset) if args.dataset in PACKAGES else None
    try:
        ds = prepare(args.dataset, options, source)
    except FileNotFoundError as err:
        sys.exit(f"prepare@{args.dataset}: {err}" + (f" (stage fetch@{args.dataset})" if source else ""))
    except (SourceError, ValueError) as err:
        sys.exit(f"prepare@{args.dataset}: {err}")
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
    main()
