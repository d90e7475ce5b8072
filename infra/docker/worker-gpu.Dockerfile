# syntax=docker/dockerfile:1
# distilflow worker, GPU (CUDA 12.8, cuDNN 9: torch's CUDA wheel and CTranslate2 4.x need them).
# Build from the repository root:
#   docker build -f infra/docker/worker-gpu.Dockerfile -t distilflow-worker-gpu:0.1.0 .
# Run with the NVIDIA container toolkit (docker run --gpus all, or nvidia.com/gpu on Kubernetes).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python is 3.12 (pyproject: >=3.11,<3.13), in a venv (PEP 668).
# git: DVC and the lineage's commit id; libsndfile1: soundfile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv git libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

# torch first, pinned, the CUDA wheel (as the Makefile installs torch first).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /opt/distilflow
COPY pyproject.toml README.md ./
COPY distilflow ./distilflow
COPY flows ./flows
COPY tasks ./tasks
RUN pip install .
COPY . .

RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 distilflow && chown -R distilflow /opt/distilflow
USER distilflow
# On Kubernetes the job template runs each flow run in this image; on a GPU host with Docker,
# this default joins the process pool of GPU runs.
CMD ["prefect", "worker", "start", "--pool", "distilflow-gpu", "--type", "process"]
