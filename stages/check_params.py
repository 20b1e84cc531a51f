"""Stage check_params: validate the whole params.yaml before any other stage runs.

Every stage depends on its output, whose content never changes, so a valid edit reruns only the
stages whose own params changed, and an invalid one stops `dvc repro` before any output is touched.
"""

from common import run, setup

from lmcot.io import write_text


def main():
    setup("check_params")  # a ParamsError lists every problem of params.yaml
    write_text("data/params.valid", "params.yaml passed validation\n")


if __name__ == "__main__":
    run("check_params", main)
