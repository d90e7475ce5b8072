"""What every benchmark records with its figures: date, machine, the command that made them."""

from __future__ import annotations

import os
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any


def cpu_name() -> str | None:
    """The CPU's model name and whether it has int8 dot-product instructions (VNNI: int8
    inference speed, hence every speed-up against a padded int8 baseline, depends on them);
    None off Linux."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    vnni = "with VNNI" if "vnni" in flags else "no VNNI"
    return f"{names[0]} ({platform.machine()}, {vnni})" if names else None


def provenance(script: str) -> dict[str, Any]:
    """Date, machine and the command line of this run."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    cpu = cpu_name() or platform.processor() or platform.machine()
    return {
        "date": date.today().isoformat(),
        "machine": f"{cpu}, {os.cpu_count()} CPUs" + (f", {gpu}" if gpu else ", no GPU"),
        "command": " ".join(["python -m", script, *sys.argv[1:]]),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
