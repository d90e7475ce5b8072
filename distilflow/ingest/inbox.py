"""The inbox: what new audio has arrived, by content hash (never by timestamps).

The watcher lists the inbox source (a folder or an S3 prefix, through the same source classes as
ingestion), hashes each clip's bytes and compares them with a small state file of hashes already
handed to a retrain run. What is new, grouped by language, says which languages to retrain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distilflow.atomic import atomic_write_json
from distilflow.config import SourceConfig
from distilflow.sources import SourceError, SourceItem, make_source

UNKNOWN = "und"  # language of a clip whose metadata names none (the teacher detects it later)
STATE_VERSION = 1


@dataclass(frozen=True)
class InboxClip:
    """One readable clip of the inbox."""

    sha256: str  # of the clip's bytes as stored in the inbox
    language: str  # as the metadata says, or UNKNOWN
    source_id: str  # where it is, for messages


@dataclass
class InboxScan:
    """The result of listing the inbox against what was handed on before."""

    new: list[InboxClip] = field(default_factory=list)
    seen: int = 0  # clips already handed to a retrain run
    unreadable: list[str] = field(default_factory=list)  # "id: reason" (ingestion quarantines)

    @property
    def languages(self) -> list[str]:
        return sorted({c.language for c in self.new})

    @property
    def needs_full_run(self) -> bool:
        """A clip of unknown language may belong anywhere: retrain everything."""
        return UNKNOWN in self.languages


def clip_of(item: SourceItem) -> InboxClip:
    """Read and hash one item; raises SourceError naming it when it cannot be read."""
    if item.problem is not None:
        raise SourceError(f"{item.source}/{item.source_id}: {item.problem} {item.detail}".strip())
    data = item.read()
    language = (item.language or "").strip().lower() or UNKNOWN
    return InboxClip(hashlib.sha256(data).hexdigest(), language, item.source_id)


def scan(source: SourceConfig, seen: Iterable[str]) -> InboxScan:
    """Every clip of ``source`` whose content hash is not in ``seen``."""
    known = set(seen)
    out = InboxScan()
    try:
        items = list(make_source(source).items())
    except SourceError:
        if source.kind == "audiofolder" and not Path(source.uri).exists():
            return out  # no inbox folder yet: nothing has arrived
        raise
    new_hashes: set[str] = set()
    for item in items:
        try:
            clip = clip_of(item)
        except SourceError as exc:
            out.unreadable.append(str(exc))
            continue
        if clip.sha256 in known:
            out.seen += 1
        elif clip.sha256 not in new_hashes:  # the same bytes twice: one clip
            new_hashes.add(clip.sha256)
            out.new.append(clip)
    return out


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """hash -> record of clips handed on (``language``, ``source_id``, ``run``, ``at``)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        msg = f"{path}: watcher state is not valid JSON ({exc}); delete it to rescan"
        raise ValueError(msg) from exc
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: watcher state of an unknown version; delete it to rescan")
    clips = raw.get("clips", {})
    if not isinstance(clips, dict):
        raise ValueError(f"{path}: watcher state: 'clips' must be a mapping")
    return clips


def record_handed_on(
    path: Path, state: Mapping[str, dict[str, Any]], clips: Iterable[InboxClip], run: str | None
) -> dict[str, dict[str, Any]]:
    """Add ``clips`` (handed to retrain run ``run``) to the state and write it atomically."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    updated = dict(state)
    for c in clips:
        updated[c.sha256] = {
            "language": c.language,
            "source_id": c.source_id,
            "run": run,
            "at": at,
        }
    atomic_write_json(path, {"version": STATE_VERSION, "clips": updated})
    return updated


def forget_runs(state: Mapping[str, dict[str, Any]], runs: set[str]) -> dict[str, dict[str, Any]]:
    """The state without the clips handed to ``runs`` (runs that failed: hand them on again)."""
    return {h: r for h, r in state.items() if r.get("run") not in runs}
