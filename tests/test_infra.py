"""infra/ as files: Docker cannot run on the development machines, so the compose stack, the
worker images and the Kubernetes work-pool example are parsed and checked against each other
and against the files they name (mlflow/server.sh, .dvc/config, pyproject.toml, the Makefile).
Their local equivalents run for real in tests/test_prefect_server.py (Prefect server on
PostgreSQL, a process work pool, a flow run), tests/test_registry_server.py (MLflow on
PostgreSQL with S3 artifacts) and tests/test_dvc_remotes.py (the DVC remotes)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers import REPO_ROOT

INFRA = REPO_ROOT / "infra"
COMPOSE_FILE = INFRA / "compose.yaml"
DOCKERFILES = {
    "cpu": INFRA / "docker" / "worker-cpu.Dockerfile",
    "gpu": INFRA / "docker" / "worker-gpu.Dockerfile",
}
JOB_TEMPLATES = {
    "distilflow-k8s": INFRA / "k8s" / "base-job-template.json",
    "distilflow-k8s-gpu": INFRA / "k8s" / "base-job-template-gpu.json",
}
POOL = "distilflow"  # the process work pool of the compose worker
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.IGNORECASE)
INTERPOLATION = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}$")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?])?")
DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def env_of(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (service(name).get("environment") or {}).items()}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    """Exact pins of pyproject's dependencies: name -> version."""
    out = {}
    for dep in pyproject()["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", dep.split("#")[0].strip())
        if match:
            out[match[1].lower()] = match[2]
    return out


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            instruction, _, args = pending.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
            pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a backslash"
    return out


def dockerignore() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
        for pat in patterns
        for p in prefixes
    )


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def created_databases() -> set[str]:
    init = (INFRA / "postgres" / "init-databases.sh").read_text()
    return set(re.findall(r"CREATE DATABASE (\w+)", init))


def buckets() -> set[str]:
    return set(env_of("minio-buckets")["BUCKETS"].split())


def dvc_remote_url(name: str) -> str:
    text = (REPO_ROOT / ".dvc" / "config").read_text()
    match = re.search(rf"\['remote \"{name}\"'\]\s*\n\s*url = (\S+)", text)
    assert match, f"no remote {name!r} in .dvc/config"
    return match[1]


def shell_variables(path: Path) -> tuple[set[str], set[str]]:
    """(every variable a shell script reads, those it requires with ${VAR:?...})."""
    text = path.read_text()
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    return used, required


def example_variables(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            out[match[1]] = match[2].strip()
    return out


def test_every_infra_file_parses() -> None:
    files = sorted(p for p in INFRA.rglob("*") if p.is_file())
    assert {p.suffix for p in files} <= {".yaml", ".json", ".md", ".Dockerfile", ".sh", ".example"}
    for path in files:
        if path.suffix == ".yaml":
            assert all(doc for doc in yaml.safe_load_all(path.read_text())), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".Dockerfile":
            steps = dockerfile(path)
            assert {i for i, _ in steps} <= DOCKER_INSTRUCTIONS, path
            assert next(i for i, _ in steps if i != "ARG") == "FROM", path
        elif path.suffix == ".sh":
            subprocess.run(["bash", "-n", str(path)], check=True)
            assert path.stat().st_mode & 0o111, f"{path} is not executable"
    subprocess.run(["bash", "-n", str(REPO_ROOT / "mlflow" / "server.sh")], check=True)


def test_compose_services_depend_on_what_exists() -> None:
    data = compose()
    services = data["services"]
    assert {"postgres", "minio", "minio-buckets", "prefect-server", "prefect-worker", "mlflow"} <= (
        set(services)
    )
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source} missing"
            else:
                assert source in data["volumes"], f"{name}: volume {source} not declared"
        build = svc.get("build")
        if build:
            context = (INFRA / build["context"]).resolve()
            assert context == REPO_ROOT, f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
            tag = f"distilflow-worker-cpu:{pyproject()['project']['version']}"
            assert svc["image"] == tag and build["dockerfile"].endswith("worker-cpu.Dockerfile")


def test_mlflow_service_runs_server_sh_with_its_variables() -> None:
    svc, env = service("mlflow"), env_of("mlflow")
    assert svc["entrypoint"] == ["mlflow/server.sh"]
    script = REPO_ROOT / "mlflow" / "server.sh"
    assert script.stat().st_mode & 0o111
    used, required = shell_variables(script)
    documented = example_variables(REPO_ROOT / "mlflow" / "server.env.example")
    assert required == {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"}
    assert required <= set(env)
    assert set(env) <= used | set(documented), set(env) - used - set(documented)

    backend = urlsplit(env["MLFLOW_BACKEND_STORE_URI"])
    assert backend.scheme == "postgresql" and backend.password is None  # PGPASSWORD instead
    assert backend.hostname == "postgres" and backend.path.lstrip("/") in created_databases()
    assert INTERPOLATION.match(env["PGPASSWORD"])
    artifacts = urlsplit(env["MLFLOW_ARTIFACTS_DESTINATION"])
    assert artifacts.scheme == "s3" and artifacts.hostname in buckets()
    endpoint = urlsplit(env["MLFLOW_S3_ENDPOINT_URL"])
    assert (
        endpoint.hostname == "minio"
        and f"{endpoint.port}:{endpoint.port}" in (service("minio")["ports"])
    )
    port = env["MLFLOW_PORT"]
    assert f"{port}:{port}" in svc["ports"] and f"127.0.0.1:{port}/health" in str(
        svc["healthcheck"]
    )
    assert svc["depends_on"]["minio-buckets"]["condition"] == "service_completed_successfully"


def test_prefect_server_on_postgres_and_the_worker_on_its_pool() -> None:
    server, env = service("prefect-server"), env_of("prefect-server")
    assert server["image"] == f"prefecthq/prefect:{pins()['prefect']}-python3.11"
    db = urlsplit(env["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert db.scheme == "postgresql+asyncpg" and db.password is None  # asyncpg reads PGPASSWORD
    assert db.hostname == "postgres" and db.path.lstrip("/") in created_databases()
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    port = flag(server["command"], "--port")

    worker = service("prefect-worker")
    wenv = env_of("prefect-worker")
    assert flag(worker["command"], "--pool") == POOL
    assert flag(worker["command"], "--type") == "process"
    assert wenv["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
    assert wenv["MLFLOW_TRACKING_URI"] == f"http://mlflow:{env_of('mlflow')['MLFLOW_PORT']}"
    assert urlsplit(wenv["AWS_ENDPOINT_URL_S3"]).hostname == "minio"  # the DVC remote "s3"
    assert urlsplit(dvc_remote_url("s3")).hostname in buckets()
    cpu_cmd = json.loads(dict(dockerfile(DOCKERFILES["cpu"]))["CMD"])
    assert flag(cpu_cmd, "--pool") == POOL  # the image's default is the compose worker
    assert f"--pool {POOL} --type process" in (INFRA / "README.md").read_text()


def test_no_literal_secrets() -> None:
    data = compose()
    for name, svc in data["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert INTERPOLATION.match(value), f"{name}.{key} is not a ${{VARIABLE}}"
            assert urlsplit(value).password is None, f"{name}.{key} embeds a password"
    text = COMPOSE_FILE.read_text()
    for var, _ in VARIABLE.findall(text):  # every variable is documented in .env.example
        assert var in example_variables(INFRA / ".env.example"), var
    for var, value in example_variables(INFRA / ".env.example").items():
        if SECRET_NAME.search(var):
            assert value == "change-me", f".env.example {var} holds a value"
    for doc in yaml.safe_load_all((INFRA / "k8s" / "worker.yaml").read_text()):
        assert doc["kind"] != "Secret"  # created by kubectl from the operator's values
        assert not [k for k in doc.get("data", {}) if SECRET_NAME.search(k)]
        for container in (
            doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            assert not [e for e in container.get("env", []) if SECRET_NAME.search(e["name"])]
    for path in JOB_TEMPLATES.values():
        env_default = json.loads(path.read_text())["variables"]["properties"]["env"]["default"]
        assert not [k for k in env_default if SECRET_NAME.search(k)], path
    secrets_files = ["infra/.env", "mlflow/server.env", ".dvc/config.local"]
    check = subprocess.run(
        ["git", "check-ignore", *secrets_files], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert check.stdout.split() == secrets_files, check.stderr  # git-ignored, never committed


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_worker_images_pin_torch_first_then_install_the_project(kind: str) -> None:
    steps = dockerfile(DOCKERFILES[kind])
    torch = pins()["torch"]
    assert f"torch=={torch}" in (REPO_ROOT / "Makefile").read_text()
    runs = [args for i, args in steps if i == "RUN"]
    torch_at = next(n for n, r in enumerate(runs) if f"torch=={torch}" in r)
    project_at = next(n for n, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < project_at
    index = dict((i, a) for i, a in steps if i == "ARG")["ARG"].partition("=")[2]
    assert "$TORCH_INDEX_URL" in runs[torch_at]
    base = dict(steps)["FROM"]
    if kind == "cpu":
        assert index.endswith("/whl/cpu")
        python = re.fullmatch(r"python:(3\.\d+)-slim-\w+", base)
    else:
        assert re.search(r"/whl/cu\d+$", index) and base.startswith("nvidia/cuda:")
        assert "cudnn" in base and "runtime" in base
        python = re.search(r"python(3\.\d+)-venv", " ".join(runs))
    assert python, base
    minor = int(python[1].split(".")[1])
    assert re.fullmatch(r">=3\.11,<3\.13", pyproject()["project"]["requires-python"])
    assert 11 <= minor < 13

    patterns = dockerignore()
    for instruction, args in steps:
        if instruction == "COPY":
            *sources, _ = shlex.split(args)
            for src in sources:
                assert src == "." or (REPO_ROOT / src).exists(), src
                assert src == "." or not ignored(src, patterns), f"{src} is in .dockerignore"
    for needed in ("pyproject.toml", "README.md", "distilflow", "mlflow/server.sh", "dvc.yaml"):
        assert not ignored(needed, patterns), needed
    for excluded in (".venv", "data", "mlflow/server.env", "infra/.env", ".git", "mlflow.db"):
        assert ignored(excluded, patterns), excluded


def prefect_default_kubernetes_template() -> dict[str, Any]:
    """The kubernetes worker's default base job template, as bundled with Prefect."""
    import prefect

    path = Path(prefect.__file__).parent / "server/api/collections_data/views"
    metadata = json.loads((path / "aggregate-worker-metadata.json").read_text())
    template: dict[str, Any] = metadata["prefect-kubernetes"]["kubernetes"][
        "default_base_job_configuration"
    ]
    return template


def rendered(template: dict[str, Any]) -> dict[str, Any]:
    """The job configuration with the variables' defaults, rendered as Prefect renders it."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v}
    out: dict[str, Any] = apply_values(template["job_configuration"], values)
    return out


@pytest.mark.parametrize("pool", sorted(JOB_TEMPLATES))
def test_kubernetes_job_templates(pool: str) -> None:
    from prefect.server.schemas.actions import validate_base_job_template

    template = json.loads(JOB_TEMPLATES[pool].read_text())
    validate_base_job_template(template)  # what the server checks on work-pool create
    default = prefect_default_kubernetes_template()
    assert set(default["job_configuration"]) <= set(template["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(template["variables"]["properties"])

    spec = rendered(template)["job_manifest"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    kind = "gpu" if pool.endswith("-gpu") else "cpu"
    assert container["image"] == f"distilflow-worker-{kind}:{pyproject()['project']['version']}"
    assert f"-t {container['image']} ." in DOCKERFILES[kind].read_text()
    assert container["envFrom"] == [{"secretRef": {"name": "distilflow-s3"}}]
    assert set(container["env"]) == {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3"}
    if kind == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        assert template["variables"]["properties"]["gpu_count"]["type"] == "integer"
    else:
        assert "nvidia.com/gpu" not in JOB_TEMPLATES[pool].read_text()


def test_kubernetes_workers_serve_the_documented_pools() -> None:
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "worker.yaml").read_text()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ServiceAccount", "prefect-worker"), ("Role", "prefect-worker")} <= kinds
    assert ("RoleBinding", "prefect-worker") in kinds and ("ConfigMap", "distilflow-stack") in kinds
    pools = set()
    for doc in (d for d in docs if d["kind"] == "Deployment"):
        spec = doc["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "prefect-worker"
        (container,) = spec["containers"]
        assert container["image"] == f"prefecthq/prefect:{pins()['prefect']}-python3.11-kubernetes"
        assert flag(container["args"], "--type") == "kubernetes"
        assert container["envFrom"] == [{"configMapRef": {"name": "distilflow-stack"}}]
        pools.add(flag(container["args"], "--pool"))
    assert pools == set(JOB_TEMPLATES)
    readme = " ".join((INFRA / "README.md").read_text().replace("\\\n", " ").split())
    for pool, path in JOB_TEMPLATES.items():
        rel = path.relative_to(REPO_ROOT)
        assert f"prefect work-pool create {pool} --type kubernetes --base-job-template {rel}" in (
            readme
        ), pool
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert urlsplit(config["PREFECT_API_URL"]).path == "/api"
