# syntax=docker/dockerfile:1
# distilflow worker, CPU: the pipeline's environment for Prefect process/kubernetes workers and
# the team MLflow server (mlflow/server.sh). Build from the repository root:
#   docker build -f infra/docker/worker-cpu.Dockerfile -t distilflow-worker-cpu:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false

# git: DVC and the lineage's commit id; libsndfile1: soundfile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

# torch first, pinned, from the CPU wheel index (as the Makefile does): PyPI's wheel of the same
# version would pull several GB of CUDA packages.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /opt/distilflow
# Dependencies in their own layer: code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY distilflow ./distilflow
COPY flows ./flows
COPY tasks ./tasks
RUN pip install .
COPY . .

RUN useradd --create-home --uid 1000 distilflow && chown -R distilflow /opt/distilflow
USER distilflow
CMD ["prefect", "worker", "start", "--pool", "distilflow", "--type", "process"]
