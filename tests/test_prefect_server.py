"""The compose stack's Prefect half, for real: ``prefect server start`` on PostgreSQL (a
throwaway database on 127.0.0.1:5432, as ``PREFECT_API_DATABASE_CONNECTION_URL`` in
infra/compose.yaml), the process work pool of the compose worker, a deployment on it whose run
``prefect worker start --pool ... --run-once`` executes, the COMPLETED state read back from
PostgreSQL; and the kubernetes pools of infra/k8s created from their templates."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import (
    PG,
    postgres_database,
    prefect_env,
    prefect_server,
    start_process,
    stop_process,
    venv_bin,
)
from tests.test_infra import JOB_TEMPLATES, flag, service

pytestmark = pytest.mark.postgres

POOL = flag(service("prefect-worker")["command"], "--pool")  # the compose worker's pool

TINY_FLOW = """\
from pathlib import Path

from prefect import flow


@flow
def tiny(out: str) -> int:
    Path(out).write_text("ran on the worker")
    return 42
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    pytest.importorskip("asyncpg", reason="prefect's PostgreSQL driver")
    with postgres_database("distilflow_prefect") as name:
        yield name


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``prefect server start`` on a free local port; yields (API URL, a scratch folder)."""
    tmp = tmp_path_factory.mktemp("prefect-server")
    url = f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
    with prefect_server(
        tmp / "server-home", tmp / "server.log", PREFECT_API_DATABASE_CONNECTION_URL=url
    ) as api:
        yield api, tmp


def query(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(dbname=database, connect_timeout=3, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows: list[tuple[Any, ...]] = cur.fetchall()
    finally:
        conn.close()
    return rows


@pytest.mark.timeout(240)
def test_process_pool_runs_a_flow_stored_in_postgres(
    server: tuple[str, Path], database: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api, tmp = server
    source = tmp / "flow-source"
    source.mkdir()
    (source / "tiny_flow.py").write_text(TINY_FLOW)
    out = tmp / "out.txt"
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        c.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        deployment = c.create_deployment(
            flow_id=c.create_flow_from_name("tiny"),
            name="tiny",
            work_pool_name=POOL,
            entrypoint="tiny_flow.py:tiny",
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(source)}}
            ],
        )
        run = c.create_flow_run_from_deployment(deployment, parameters={"out": str(out)})

    worker = [venv_bin("prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    log = tmp / "worker.log"
    env = prefect_env(tmp / "worker-home", PREFECT_API_URL=api)
    proc = start_process([*worker, "--run-once"], env, log, cwd=tmp)
    try:
        proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not finish in 150 s:\n{log.read_text()[-3000:]}")
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert out.read_text() == "ran on the worker"  # the worker's subprocess ran the flow

    rows = query(
        database,
        "SELECT fr.state_type, wp.name, wp.type FROM flow_run fr"
        " JOIN work_queue wq ON fr.work_queue_id = wq.id"
        " JOIN work_pool wp ON wq.work_pool_id = wp.id WHERE fr.id = %s",
        str(run.id),
    )
    assert rows == [("COMPLETED", POOL, "process")]


def test_kubernetes_pools_from_the_templates(server: tuple[str, Path], database: str) -> None:
    """The server accepts the templates (it validates them), and a deployment's job variables
    are checked against their variables, e.g. the GPU template's integer ``gpu_count``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api, _ = server
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        for pool, path in JOB_TEMPLATES.items():
            template = json.loads(path.read_text())
            c.create_work_pool(
                WorkPoolCreate(name=pool, type="kubernetes", base_job_template=template)
            )
            assert c.read_work_pool(pool).base_job_template == template
        gpu = next(p for p in JOB_TEMPLATES if p.endswith("-gpu"))
        flow_id = c.create_flow_from_name("train")
        c.create_deployment(
            flow_id=flow_id, name="two-gpus", work_pool_name=gpu, job_variables={"gpu_count": 2}
        )
        with pytest.raises(PrefectHTTPStatusError) as rejected:
            c.create_deployment(
                flow_id=flow_id, name="bad", work_pool_name=gpu, job_variables={"gpu_count": "x"}
            )
        assert rejected.value.response.status_code == 422
        assert "gpu_count" in rejected.value.response.text
    stored = query(database, "SELECT name FROM work_pool WHERE type = 'kubernetes'")
    assert sorted(r[0] for r in stored) == sorted(JOB_TEMPLATES)
