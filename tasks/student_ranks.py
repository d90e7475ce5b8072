"""One rank of a multi-process student run (launched by ``tasks.student.launch_ranks``).

python -m torch.distributed.run --nproc_per_node N -m tasks.student_ranks --params params.yaml
"""

from __future__ import annotations

import argparse

import tasks  # noqa: F401  (environment defaults)
from distilflow.config import load_params
from tasks.student import run_distillation


def main() -> None:
    import torch
    from accelerate import Accelerator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    params = load_params(parser.parse_args().params)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    run_distillation(params, accelerator)


if __name__ == "__main__":
    main()
