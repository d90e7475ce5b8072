"""Write the params file of the benchmark's dynamic-context student: params.yaml, student changed.

    python -m bench.dynamic_params [--out data/params-dynamic.yaml]
    python -m flows.student --params data/params-dynamic.yaml

Everything but the ``student`` options below is params.yaml's, so both students are distilled
from the same filtered labels of the same teacher, with the same batch, learning rate, loss
weights and step budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from distilflow.config import load_params

DYNAMIC_STUDENT = {
    "audio_context": "dynamic",
    "context_multiple_s": 1.0,
    "encoder_mse": 1.0,
    "freeze_encoder": False,  # the encoder adapts to the short context
    "cache_encoder": True,  # the padded teacher's states, cached as for the padded student
    "out_dir": "data/student-dynamic",
    # the padded student's budget (params.yaml: 150 steps); the first run (2026-12-01, a shared
    # machine, the teacher's decoder every step) could afford 60
    "max_steps": 150,
    "warmup_steps": 15,
    "eval_every": 50,
    "save_every": 50,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/params-dynamic.yaml"))
    args = parser.parse_args()
    raw = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    raw["student"].update(DYNAMIC_STUDENT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    load_params(args.out)  # validates
    print(args.out)


if __name__ == "__main__":
    main()
