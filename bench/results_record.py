"""The results page's inputs, kept in the repository (``docs/bench/results_record.json``) so
that phases run on different days make one page.

On two CPU cores the whole results run (pipeline, baselines, depth sweep, speed, labelling) takes
longer than one working session, and its work folder does not outlive the machine. Each page
therefore records what it was made from: every phase's figures with per-clip transcripts (for
the paired intervals), the run's params, the date and commit each phase ran on, and the identity
of the data the stages trained on. A later run that recomputes some phases takes the others from
the record, but only where the record was made from the same data and the same params; anything
else is dropped and the page says that the phase did not run. ``merge`` is pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.results_project import repo_commit

# phase -> the page inputs it makes (``write_page``'s names)
PHASE_INPUTS: dict[str, tuple[str, ...]] = {
    "pipeline": (
        "metrics", "transcripts", "split", "metas", "filter", "decision", "dvc_status",
        "stages", "student", "export",
    ),
    "baselines": ("baselines",),
    "depth": ("depth",),
    "speed": ("speed",),
    "labelling": ("labelling",),
    "deployed": ("deployed", "context"),
}  # fmt: skip
# the filter manifests' columns a model learns from
KEY_COLUMNS = ("hash", "language", "reference", "text", "token_ids", "label_ok", "teacher_id")
# params that do not change a figure
NEUTRAL = ("progress",)


def params_key(params: Mapping[str, Any]) -> str:
    """A hash of the run's params as the typed config reads them (an option added since, at
    its default, changes nothing), without the keys that change no figure (progress bars)."""
    import dataclasses

    from distilflow.config import build_params

    typed = dataclasses.asdict(build_params(dict(params), "results record"))
    kept = {
        section: (
            {k: v for k, v in values.items() if k not in NEUTRAL}
            if isinstance(values, Mapping)
            else values
        )
        for section, values in typed.items()
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_key(proj: Path) -> str | None:
    """A hash of the filter stage's kept clips with their labels and references, row by row:
    what every trained model learns from (``KEY_COLUMNS``; not the Parquet files' lineage
    metadata, which names the commit, nor the teacher's confidence figures, floats that another
    CPU may round otherwise). None before the filter ran."""
    import pyarrow.parquet as pq

    files = sorted((proj / "data" / "filtered" / "manifests").glob("*.parquet"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        table = pq.read_table(f)
        rows = table.select([c for c in KEY_COLUMNS if c in table.schema.names]).to_pylist()
        digest.update(f.name.encode() + json.dumps(rows, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def stamp(inputs: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """phase -> {date, commit} for each phase that has inputs in ``inputs`` (made today)."""
    today = {"date": dt.date.today().isoformat(), "commit": repo_commit()}
    return {p: dict(today) for p, names in PHASE_INPUTS.items() if has_phase(inputs, names)}


def has_phase(inputs: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    return inputs.get(names[0]) is not None


def merge(
    recorded: Mapping[str, Any] | None, fresh: Mapping[str, Any], other_labels: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """(the page's inputs, notes): ``fresh``'s phases, and the recorded ones it lacks where the
    record was made from the same data and params; with ``other_labels``, also where only the
    training data differ (the clips relabelled), each such phase marked ``earlier_labels``
    for the page to say so. Pure.

    Both hold the page inputs of ``PHASE_INPUTS`` plus ``params_key``, ``data_key`` and
    ``phases`` (phase -> date and commit)."""
    out = dict(fresh)
    out["phases"] = dict(fresh.get("phases") or {})
    if not recorded:
        return out, []
    missing = [
        p
        for p, names in PHASE_INPUTS.items()
        if not has_phase(fresh, names) and has_phase(recorded, names)
    ]
    if not missing:
        return out, []
    # the record's params hashed again with today's typed config: an option added since, at
    # its default, changes no figure and must not void the record (its stored key cannot know)
    recorded_key = params_key(recorded["params"]) if recorded.get("params") else None
    same_params = (recorded_key or recorded.get("params_key")) == fresh.get("params_key")
    same_data = fresh.get("data_key") is None or recorded.get("data_key") == fresh.get("data_key")
    if not (same_params and (same_data or other_labels)):
        why = "params" if not same_params else "training data"
        return out, [f"recorded {', '.join(missing)} not used: other {why} than this run"]
    for phase in missing:
        for name in PHASE_INPUTS[phase]:
            out[name] = recorded.get(name)
        out["phases"][phase] = dict(recorded["phases"][phase])
        if not same_data or recorded["phases"][phase].get("earlier_labels"):
            out["phases"][phase]["earlier_labels"] = True
    if out.get("data_key") is None:
        out["data_key"] = recorded.get("data_key")
    when = ", ".join(f"{p} ({recorded['phases'][p]['date']})" for p in missing)
    return out, [f"from the record: {when}"]


def read_record(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_record(path: Path, inputs: Mapping[str, Any]) -> None:
    """The page's inputs as one JSON file (compact: it holds every clip's transcripts)."""
    from distilflow.atomic import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(inputs, ensure_ascii=False, sort_keys=True, allow_nan=True)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
