"""Write the params file of a padded, cut-decoder student beside the shipped dynamic one.

    python -m bench.padded_params [--out data/params-padded.yaml] [--timestamps]
    python -m flows.student --params data/params-padded.yaml    # -> data/student-padded/model

The shipped student (params.yaml) is the teacher made fast: dynamic audio context, every decoder
layer kept. This writes Distil-Whisper's recipe as distilflow shipped it until 2026-12-04 (4 of
the teacher's decoder layers trained on its padded, frozen encoder; docs/student.md) with
everything else params.yaml's: the same filtered labels, teacher, batch and step budget, so
``bench.dynamic`` can compare the two kinds.

``--timestamps``: its decoder trains, so it forgets Whisper's timestamps unless it learns them;
this also sets ``label.timestamps: true`` and ``student.timestamp_share: 0.5`` (clips packed
into 30 s windows; docs/evaluate.md, Long audio). The labels must then be made again with
timestamps (``dvc repro filter`` with this file as params.yaml, or the whole pipeline).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from distilflow.config import load_params

PADDED_STUDENT = {
    "audio_context": "padded",
    "decoder_layers": 4,
    "freeze_encoder": True,  # the teacher's encoder, its states cached once
    "freeze_decoder": False,
    "encoder_top_layers": -1,
    "alpha_ce": 1.0,
    "temperature": 2.0,
    "decoder_mse": 0.0,
    "lr": 1.0e-4,
    "warmup_steps": 15,
    "out_dir": "data/student-padded",
}

TIMESTAMP_SHARE = 0.5  # measured on the demo corpus: docs/evaluate.md, Long audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/params-padded.yaml"))
    parser.add_argument("--timestamps", action="store_true", help="learn timestamps (above)")
    args = parser.parse_args()
    raw = yaml.safe_load(args.params.read_text(encoding="utf-8"))
    raw["student"].update(PADDED_STUDENT)
    if args.timestamps:
        raw["label"]["timestamps"] = True
        raw["student"]["timestamp_share"] = TIMESTAMP_SHARE
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    load_params(args.out)  # validates
    print(args.out)


if __name__ == "__main__":
    main()
