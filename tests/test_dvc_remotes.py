"""The DVC remotes of ``.dvc/config``, used for real: a tiny project laid out like the pipeline
(a git repository with the repository's ``.gitignore`` and ``.dvc/config``, ``data/`` outputs of
``dvc.yaml`` stages, and a user's corpus folder added with ``dvc add``) pushes with the ``dvc``
CLI and pulls its data back, once through the default local remote into a fresh ``git clone``,
once through the S3 remote on a local S3-protocol server (moto). ``HOME`` is a temporary folder:
the user-level default remote, DVC's global config and any ``~/.aws`` stay out of reach."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, run_in
from tests.stack import S3_ENV, moto_s3, s3_client, venv_bin

BUCKET, PREFIX = "distilflow-dvc", "cache"  # the "s3" remote of .dvc/config

INGEST = """\
import hashlib, json, pathlib, sys
src, out = pathlib.Path("demo/tiny"), pathlib.Path("data/ingest")
(out / "flac").mkdir(parents=True, exist_ok=True)
(out / "manifests").mkdir(exist_ok=True)
rows = []
for clip in sorted(src.glob("*.wav")):
    data = clip.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (out / "flac" / f"{sha}.flac").write_bytes(data[::-1])
    rows.append({"id": clip.stem, "sha256": sha})
(out / "manifests" / "en.json").write_text(json.dumps(rows))
"""


def dvc(cwd: Path, env: dict[str, str], *args: str) -> str:
    return run_in(cwd, env, venv_bin("dvc"), *args, timeout=120)


def content(root: Path) -> dict[str, str]:
    """sha256 of every file DVC manages in the tiny project (``data/``, ``corpus/``)."""
    files = [p for d in ("data", "corpus") for p in sorted((root / d).rglob("*"))]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and p.name != ".gitignore"
    }


def minimal_env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment: no credentials but those a test adds, HOME and caches in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return minimal_env(tmp_path)


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project with the repository's .dvc/config and tiny data, produced and
    committed (outputs in the DVC cache, not in git); built once, tests work on copies."""
    tmp = tmp_path_factory.mktemp("dvc-project")
    env = minimal_env(tmp)
    root = tmp / "project"
    root.mkdir()
    run_in(root, env, "git", "init", "-q", "-b", "main")
    dvc(root, env, "init", "-q")
    shutil.copyfile(REPO_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copyfile(REPO_ROOT / ".gitignore", root / ".gitignore")
    demo = root / "demo" / "tiny"
    demo.mkdir(parents=True)
    for i in range(3):
        (demo / f"clip{i}.wav").write_bytes(os.urandom(2048 + i))
    (root / "ingest.py").write_text(INGEST)
    ingest = {"cmd": f"{sys.executable} ingest.py", "deps": ["demo/tiny", "ingest.py"]}
    ingest["outs"] = [{"data/ingest": {"persist": True}}]
    count = f"{sys.executable} -c \"import os; print(len(os.listdir('data/ingest/flac')))\""
    filt = {"cmd": f"{count} > data/filtered.txt", "deps": ["data/ingest"]}
    filt["outs"] = ["data/filtered.txt"]
    pipeline = {"stages": {"ingest": ingest, "filter": filt}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    corpus = root / "corpus" / "nested"
    corpus.mkdir(parents=True)
    (corpus / "a.bin").write_bytes(os.urandom(4096))
    (root / "corpus" / "b.txt").write_text("tiny\n")
    dvc(root, env, "add", "corpus")
    dvc(root, env, "repro")
    run_in(root, env, "git", "add", "-A")
    run_in(root, env, "git", "commit", "-q", "-m", "tiny pipeline")
    tracked = run_in(root, env, "git", "ls-files").split()
    assert "dvc.lock" in tracked and "corpus.dvc" in tracked
    assert not [f for f in tracked if f.startswith(("data/", "corpus/"))]
    return root


@pytest.fixture
def project(committed: Path, tmp_path: Path) -> Path:
    """A copy of ``committed`` of the test's own (it pushes, changes config, deletes)."""
    return shutil.copytree(committed, tmp_path / "project", symlinks=True)


def test_default_local_remote_round_trip_into_a_fresh_clone(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    assert dvc(project, env, "remote", "default").strip() == "local"
    remote = Path(env["HOME"]) / ".cache" / "distilflow" / "dvc-remote"  # ~ of .dvc/config
    before = content(project)
    assert len(before) == 3 + 1 + 1 + 2  # flac/*, manifests/en.json, filtered.txt, corpus/*

    dvc(project, env, "push")  # no -r: the default remote
    pushed = [p for p in (remote / "files" / "md5").rglob("*") if p.is_file()]
    assert len(pushed) == len(before) + 2  # every file, and the two folders' .dir listings

    clone = tmp_path / "clone"
    run_in(tmp_path, env, "git", "clone", "-q", str(project), str(clone))
    assert content(clone) == {} and not (clone / ".dvc" / "cache").exists()
    dvc(clone, env, "pull")
    assert content(clone) == before
    assert "up to date" in dvc(clone, env, "status").lower()  # the pipeline sees nothing to do


@pytest.mark.timeout(180)
def test_s3_remote_round_trip_on_a_local_s3_server(project: Path, env: dict[str, str]) -> None:
    committed = (project / ".dvc" / "config").read_text()
    env = env | S3_ENV | {"AWS_EC2_METADATA_DISABLED": "true"}  # credentials: environment only
    with moto_s3([BUCKET]) as endpoint:
        # The endpoint is per machine: the git-ignored .dvc/config.local, as infra/README.md says.
        dvc(project, env, "remote", "modify", "--local", "s3", "endpointurl", endpoint)
        assert (project / ".dvc" / "config").read_text() == committed
        before = content(project)
        dvc(project, env, "push", "-r", "s3")
        objects = s3_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
        keys = [o["Key"] for o in objects.get("Contents", [])]
        assert keys and all(k.startswith(f"{PREFIX}/files/md5/") for k in keys)

        lock = yaml.safe_load((project / "dvc.lock").read_text())
        dir_md5 = lock["stages"]["ingest"]["outs"][0]["md5"]  # "<md5>.dir": the folder's listing
        assert f"{PREFIX}/files/md5/{dir_md5[:2]}/{dir_md5[2:]}" in keys

        for cfg in (project / ".dvc").glob("config*"):  # no credential written to any config
            text = cfg.read_text()
            assert "access_key" not in text and S3_ENV["AWS_SECRET_ACCESS_KEY"] not in text

        shutil.rmtree(project / ".dvc" / "cache")
        shutil.rmtree(project / "data")
        shutil.rmtree(project / "corpus")
        assert content(project) == {}
        # A worker configured by its environment alone (infra/compose.yaml, infra/k8s): the
        # endpoint from AWS_ENDPOINT_URL_S3 (botocore), no config.local.
        (project / ".dvc" / "config.local").unlink()
        dvc(project, env | {"AWS_ENDPOINT_URL_S3": endpoint}, "pull", "-r", "s3")
        assert content(project) == before
