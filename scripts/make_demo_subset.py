"""Rebuild demo/asterisk: a fixed, seeded subset of the asterisk-dev corpus (30 clips a language).

    python scripts/make_demo_subset.py ../shared/data/asterisk-dev demo/asterisk

Clips over 12 s are left out so the demo pipeline stays fast on 2 CPU cores.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

PER_LANGUAGE = 30
MAX_SECONDS = 12.0
SEED = 20261123


def main(src: Path, dst: Path) -> None:
    rows = [json.loads(line) for line in (src / "metadata.jsonl").open(encoding="utf-8")]
    chosen = []
    for lang in sorted({r["language"] for r in rows}):
        pool = sorted(
            (r for r in rows if r["language"] == lang and r["duration_s"] <= MAX_SECONDS),
            key=lambda r: r["file_name"],
        )
        chosen += sorted(
            random.Random(SEED).sample(pool, PER_LANGUAGE), key=lambda r: r["file_name"]
        )
    (dst / "audio").mkdir(parents=True, exist_ok=True)
    for r in chosen:
        shutil.copyfile(src / r["file_name"], dst / r["file_name"])
    with (dst / "metadata.jsonl").open("w", encoding="utf-8") as fh:
        for r in chosen:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(chosen)} clips -> {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
