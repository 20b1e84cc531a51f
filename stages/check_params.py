"""Stage check_params: validate the whole params.yaml before any other stage runs.

Every stage depends on its output, whose content never changes, so a valid edit reruns only the
stages whose own params changed, and an invalid one stops `dvc repro` before any output is touched.
"""

from common import setup

from lmcot.io import write_text

if __name__ == "__main__":
    setup("check_params")  # exits with the list of problems if params.yaml is invalid
    write_text("data/params.valid", "params.yaml passed validation\n")
