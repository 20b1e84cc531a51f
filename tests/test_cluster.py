"""Sweeps on a Slurm cluster (issue 15, in progress): the throwaway cluster the tests run against."""

import subprocess
import time

import pytest
from slurm_cluster import SlurmCluster, find_slurm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not find_slurm():
        pytest.fail("no Slurm here: the tests install Debian's slurmctld, slurmd, slurm-client and munge as root")
    running = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield running
    running.stop()


def test_an_array_and_a_job_that_depends_on_it_run(cluster, tmp_path):
    def sbatch(*args):
        out = subprocess.run(
            ["sbatch", "--parsable", *args], env=cluster.env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip().split(";")[0]

    array = sbatch("--array=0-2", "-o", str(tmp_path / "task_%a.out"), "--wrap", "echo task $SLURM_ARRAY_TASK_ID")
    gather = sbatch(f"--dependency=afterok:{array}", "-o", str(tmp_path / "gather.out"), "--wrap", "echo gathered")
    deadline = time.monotonic() + 60
    while not (tmp_path / "gather.out").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    assert [(tmp_path / f"task_{i}.out").read_text().strip() for i in range(3)] == ["task 0", "task 1", "task 2"]
    assert (tmp_path / "gather.out").read_text().strip() == "gathered", gather
