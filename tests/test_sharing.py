"""Sharing results between clones through DVC remotes, the run-cache and experiment refs.

Each scenario is what two (or three) team members do on their own machines: clone A runs the pipeline and
pushes; clone B, a fresh clone with its own empty cache, pulls and finds nothing to run, then adds one model
width and shares it as an experiment; A pulls it and gets B's results without training; clone C, which runs
the same share of the sweep as B, restores every stage from the run-cache. It runs once with a local-directory
remote and once with an SSH remote served by a real OpenSSH server on 127.0.0.1.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from dvc_project import (
    SMALLEST_DOWNSTREAM,
    commit_all,
    copy_project,
    copy_with_cache,
    dvc,
    git,
    run,
    set_params,
    stages_restored,
    stages_run,
)

pytestmark = pytest.mark.slow

SMALL = {
    "train.sweep.datasets": ["digits"],
    "fetch.datasets": [],
    "train.sweep.models": ["mlp-d2-w4"],
    "train.sweep.lrs": [0.05],
    "train.seeds": [0, 1],
    "train.recipe.epochs": 1,
    **SMALLEST_DOWNSTREAM,
}
ONE_MORE_WIDTH = ["mlp-d2-w4", "mlp-d2-w8"]
NEW_CONFIGURATION = "digits-mlp-d2-w8-0.05"
PER_CONFIGURATION = ("train", "align", "dimension", "barrier", "fuse", "plane")


def clone(origin: Path, destination: Path, remote_url: str, remote_options: dict) -> Path:
    """A team member's clone: git clone, its own empty DVC cache, the shared remote set in config.local."""
    run(origin.parent, "git", "clone", "-q", str(origin), str(destination))
    add_remote(destination, remote_url, remote_options)
    return destination


def add_remote(project: Path, url: str, options: dict) -> None:
    """The shared remote as the default, set in the clone's own config.local."""
    dvc(project, "remote", "add", "--local", "--default", "shared", url)
    for option, value in options.items():
        dvc(project, "remote", "modify", "--local", "shared", option, value)


def metrics(project: Path) -> dict:
    return json.loads((project / "reports/metrics.json").read_text())


def cache_files(project: Path) -> dict[str, int]:
    cache = project / ".dvc/cache"
    return {str(p.relative_to(cache)): p.stat().st_size for p in cache.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def team_after_a_ran(tmp_path_factory):
    """The team's Git server (a bare repository holding the project with the small sweep) and clone A after its
    ``dvc repro``, made once: A's run is the same whichever remote the team shares through."""
    root = tmp_path_factory.mktemp("team")
    project = copy_project(root / "seed")
    set_params(project, SMALL)
    commit_all(project, "small sweep")
    run(root, "git", "clone", "-q", "--bare", str(project), str(root / "origin.git"))
    run(root, "git", "clone", "-q", str(root / "origin.git"), str(root / "a"))
    ran_a = stages_run(dvc(root / "a", "repro"))
    return root, ran_a


@pytest.fixture
def team(team_after_a_ran, tmp_path):
    """A copy of the team for one test: ``(origin, a, stages A ran)``; A's Git remote is the copied origin."""
    root, ran_a = team_after_a_ran
    copied = copy_with_cache(root, tmp_path / "team")
    git(copied / "a", "remote", "set-url", "origin", str(copied / "origin.git"))
    return copied / "origin.git", copied / "a", ran_a


# ---------------------------------------------------------------------------------------------------------
# An OpenSSH server on 127.0.0.1 with a throwaway host key and user key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_sshd() -> str | None:
    """Debian's sshd, installed with apt-get when this machine allows it (as root, with a package index)."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        sshd = "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None
    return sshd


def serve_with_asyncssh(port: int, keys: Path):
    """An SSH server with SFTP in this process (asyncssh, which dvc-ssh itself uses), on a thread of its own: the
    proof runs where OpenSSH's sshd cannot be installed. Returns a function that stops it."""
    import asyncio
    import threading

    import asyncssh

    loop = asyncio.new_event_loop()
    started = threading.Event()
    servers = []

    def run():
        asyncio.set_event_loop(loop)
        servers.append(
            loop.run_until_complete(
                asyncssh.listen(
                    "127.0.0.1",
                    port,
                    server_host_keys=[str(keys / "host_key")],
                    authorized_client_keys=str(keys / "authorized_keys"),
                    sftp_factory=True,
                )
            )
        )
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(20):
        raise RuntimeError("the in-process SSH server did not start")

    def stop():
        loop.call_soon_threadsafe(servers[0].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return stop


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """OpenSSH's sshd where it is installed or installable, else asyncssh's server in this process: the SSH
    proof never skips (``LMCOT_TEST_SSH=asyncssh`` picks the second)."""
    keys = tmp_path_factory.mktemp("ssh")
    import asyncssh  # its keys in OpenSSH's format: no ssh-keygen needed

    for name in ("host_key", "user_key"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(keys / name)
        (keys / name).chmod(0o600)
        key.write_public_key(keys / f"{name}.pub")
    shutil.copy(keys / "user_key.pub", keys / "authorized_keys")
    port = free_port()
    sshd = None if os.environ.get("LMCOT_TEST_SSH") == "asyncssh" else find_sshd()
    if sshd is None:
        stop = serve_with_asyncssh(port, keys)
        yield {"port": port, "user_key": keys / "user_key", "server": "asyncssh"}
        stop()
        return
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None  # privilege separation directory
    log = open(keys / "sshd.log", "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                log.close()
                raise RuntimeError(f"sshd did not start:\n{(keys / 'sshd.log').read_text()}") from None
            time.sleep(0.2)
    yield {"port": port, "user_key": keys / "user_key", "server": "sshd"}
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    log.close()


@pytest.fixture(params=["local", "ssh"])
def remote(request, tmp_path_factory):
    """(url, options) of an empty shared remote."""
    if request.param == "local":
        return str(tmp_path_factory.mktemp("shared") / "dvc-store"), {}
    server = request.getfixturevalue("ssh_server")
    store = tmp_path_factory.mktemp("ssh-store") / "dvc-store"
    user = pwd.getpwuid(os.geteuid()).pw_name
    url = f"ssh://{user}@127.0.0.1:{server['port']}{store}"
    return url, {"keyfile": str(server["user_key"])}


def test_two_clones_share_results_through_the_remote(team, remote, tmp_path):
    url, options = remote
    origin, a, ran_a = team

    # A ran the sweep (in the fixture) and shares it: outputs and run-cache to the DVC remote, dvc.lock to Git.
    assert "train@digits-mlp-d2-w4-0.05" in ran_a
    add_remote(a, url, options)
    dvc(a, "push", "--run-cache")
    commit_all(a, "results of the small sweep")
    git(a, "push", "-q", "origin", "main")

    # B: a fresh clone with an empty cache pulls, and there is nothing left to run.
    b = clone(origin, tmp_path / "b", url, options)
    assert not (b / ".dvc/cache").exists() or not cache_files(b)
    dvc(b, "pull")
    again = dvc(b, "repro")
    assert stages_run(again) == [] and stages_restored(again) == []
    assert metrics(b) == metrics(a)
    assert (b / "models/digits-mlp-d2-w4-lr0.05/seed1.safetensors").read_bytes() == (
        a / "models/digits-mlp-d2-w4-lr0.05/seed1.safetensors"
    ).read_bytes()

    # B adds one width as an experiment: only the new configuration's stages run; B shares it.
    experiment = dvc(b, "exp", "run", "-n", "one-more-width", "-S", f"train.sweep.models=[{','.join(ONE_MORE_WIDTH)}]")
    ran_b = stages_run(experiment)
    assert [s for s in ran_b if s.startswith("train@")] == [f"train@{NEW_CONFIGURATION}"]
    assert not any("-w4-" in s for s in ran_b)
    dvc(b, "exp", "push", "--run-cache", "origin", "one-more-width")
    print(f"\n[{url}]\nA ran {len(ran_a)} stages: {ran_a}\nB pulled and ran none; B's experiment ran {ran_b}")

    # A pulls the experiment and gets B's new results without training anything.
    dvc(a, "exp", "pull", "origin", "one-more-width")
    dvc(a, "exp", "apply", "one-more-width")
    after = dvc(a, "repro")
    assert stages_run(after) == []
    assert (a / "models/digits-mlp-d2-w8-lr0.05/seed0.safetensors").exists()
    assert metrics(a) == metrics(b)

    # C runs the same share of the sweep as B, from A's commit: every stage comes from the run-cache but
    # `report`, whose outputs live in Git rather than in the cache, so that the run-cache cannot restore it.
    c = clone(origin, tmp_path / "c", url, options)
    set_params(c, {"train.sweep.models": ONE_MORE_WIDTH})
    restored = dvc(c, "repro", "--pull")
    print(f"A applied B's experiment and ran none; C ran {stages_run(restored)}, restored {stages_restored(restored)}")
    assert stages_run(restored) == ["report"]
    assert {f"{stage}@{NEW_CONFIGURATION}" for stage in PER_CONFIGURATION} <= set(stages_restored(restored))
    assert metrics(c) == metrics(b)


def test_unreachable_remote_is_named_and_the_cache_is_kept(team, tmp_path):
    origin, _, _ = team
    project = clone(origin, tmp_path / "a", str(tmp_path / "unused"), {})
    dvc(project, "repro", "prepare@digits")
    before = cache_files(project)
    assert before
    port = free_port()  # nothing listens there
    dvc(project, "remote", "add", "--local", "gone", f"ssh://tester@127.0.0.1:{port}/store")
    for command in ("push", "pull", "fetch"):
        result = dvc(project, command, "-r", "gone", check=False, timeout=120)
        assert result.returncode != 0, command
        assert f"127.0.0.1', {port}" in result.stderr + result.stdout, result.stderr
    assert cache_files(project) == before
    assert (project / "data/prepared/digits.safetensors").exists()
    assert stages_run(dvc(project, "repro", "prepare@digits")) == []
