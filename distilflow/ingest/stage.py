"""Ingestion: source items -> validated 16 kHz FLAC store, per-language manifests, quarantine.

Every input item ends up either kept (in a manifest) or quarantined with a reason; the report's
counts satisfy ``input == kept + quarantined`` exactly. Work is incremental: a ledger remembers the
outcome for each (source item, file bytes hash, metadata, validation rules), so re-ingesting an
unchanged source decodes nothing and adding files processes only them.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distilflow import audio
from distilflow.atomic import atomic_write_bytes, atomic_write_jsonl
from distilflow.config import IngestConfig, section_hash
from distilflow.ingest.report import IngestReport, LanguageIngest
from distilflow.languages import normalize_language
from distilflow.lineage import Lineage, combine_hashes, git_commit
from distilflow.manifest import ManifestRow, table_bytes, write_manifests
from distilflow.progress import progress, tracked
from distilflow.sources.base import MISSING_FILE, UNREADABLE, SourceError, SourceItem

KEPT = "kept"
# Quarantine reasons found by ingestion itself (sources add theirs, see sources/base.py).
EMPTY = "empty"
SILENT = "silent"
NON_FINITE = "non_finite"
TOO_LONG = "too_long"
UNKNOWN_LANGUAGE = "unknown_language"
LANGUAGE_NOT_SELECTED = "language_not_selected"
DUPLICATE = "duplicate"
DUPLICATE_ID_CONFLICT = "duplicate_id_conflict"

# The lowest sample rate a header may claim (Hz). Speech is recorded at 8 kHz or more (telephony
# the lowest); under 1 kHz the Nyquist band (500 Hz) holds almost none of speech, so the header is
# broken, and resampling it to 16 kHz would invent seconds of audio from a handful of samples.
MIN_SAMPLE_RATE = 1_000

LEDGER_FIELDS = (
    "source",
    "source_id",
    "bytes_hash",
    "text",
    "language",
    "speaker",
    "rules",
    "status",
    "detail",
    "clip_hash",
    "duration_s",
)


@dataclass(frozen=True)
class Outcome:
    """What examining one item decided, before de-duplication."""

    source: str
    source_id: str
    bytes_hash: str | None  # None when the bytes could not be read
    text: str | None
    language: str | None  # normalised code when valid, else as given
    speaker: str | None
    rules: str  # hash of the validation rules that decided it
    status: str  # KEPT or a quarantine reason
    detail: str = ""
    clip_hash: str | None = None  # sha256 of 16 kHz int16 PCM, when decoded
    duration_s: float | None = None

    @classmethod
    def of(
        cls,
        item: SourceItem,
        bytes_hash: str | None,
        language: str | None,
        rules: str,
        status: str = KEPT,
        detail: str = "",
    ) -> Outcome:
        """An outcome for ``item`` with its metadata copied over."""
        return cls(
            item.source,
            item.source_id,
            bytes_hash,
            item.text,
            language,
            item.speaker,
            rules,
            status,
            detail,
        )

    def key(self) -> tuple[Any, ...]:
        return (
            self.source,
            self.source_id,
            self.bytes_hash,
            self.text,
            self.language,
            self.speaker,
            self.rules,
        )


@dataclass(frozen=True)
class IngestResult:
    """Summary of one ingestion run."""

    report: IngestReport
    kept: int
    quarantined: int
    decoded: int  # items decoded this run (0 when nothing changed)
    changed: bool  # whether any output file changed


def rules_hash(cfg: IngestConfig) -> str:
    """Hash of the options and limits that decide keep/quarantine (a change re-examines all)."""
    rules = {k: getattr(cfg, k) for k in ("max_duration_s", "min_duration_s", "silence_peak")}
    rules["languages"] = sorted(cfg.languages)
    rules["min_sample_rate"] = MIN_SAMPLE_RATE
    return combine_hashes([json.dumps(rules, sort_keys=True)])


def check_sample_rate(sample_rate: int) -> tuple[str, str]:
    """The keep/quarantine rule for the rate a file claims, before resampling. Pure."""
    if sample_rate < MIN_SAMPLE_RATE:
        return UNREADABLE, f"sample rate {sample_rate} Hz (minimum {MIN_SAMPLE_RATE} Hz)"
    return KEPT, ""


def check_samples(samples: np.ndarray, cfg: IngestConfig) -> tuple[str, str]:
    """The keep/quarantine rule for decoded 16 kHz audio: (status, detail). Pure."""
    duration = samples.size / audio.SAMPLE_RATE
    if samples.size == 0 or duration < cfg.min_duration_s:
        return EMPTY, f"{duration:.3f} s of audio (minimum {cfg.min_duration_s} s)"
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        return NON_FINITE, f"{bad} NaN or infinite samples"
    peak = float(np.abs(samples).max())
    if peak <= cfg.silence_peak:
        return SILENT, f"peak amplitude {peak:.2e} <= {cfg.silence_peak:.2e}"
    if duration > cfg.max_duration_s:
        return TOO_LONG, f"{duration:.2f} s > maximum {cfg.max_duration_s} s"
    return KEPT, ""


def check_language(language: str | None, cfg: IngestConfig) -> tuple[str | None, str, str]:
    """(normalised code, status, detail) for a language as the source gave it. Pure."""
    if language is None:
        return None, KEPT, ""  # undetermined: the teacher detects it later
    code = normalize_language(language)
    if code is None:
        return language, UNKNOWN_LANGUAGE, f"{language!r} is not a language Whisper knows"
    if cfg.languages and code not in cfg.languages:
        return code, LANGUAGE_NOT_SELECTED, f"{code} is not in ingest.languages"
    return code, KEPT, ""


def examine(item: SourceItem, data: bytes, cfg: IngestConfig, store: Path, rules: str) -> Outcome:
    """Decode and validate one item; store its FLAC when kept."""
    code, status, detail = check_language(item.language, cfg)
    base = Outcome.of(item, audio.bytes_hash(data), code, rules, status, detail)
    if not data:
        return dataclasses.replace(base, status=EMPTY, detail="the file has no bytes")
    try:
        decoded = audio.decode(data)
    except audio.AudioDecodeError as exc:
        return dataclasses.replace(base, status=UNREADABLE, detail=f"cannot decode: {exc}")
    rate_status, rate_detail = check_sample_rate(decoded.sample_rate)
    if rate_status != KEPT:
        return dataclasses.replace(base, status=rate_status, detail=rate_detail)
    samples = audio.to_mono_16k(decoded)
    audio_status, audio_detail = check_samples(samples, cfg)
    duration = samples.size / audio.SAMPLE_RATE
    if audio_status != KEPT:
        return dataclasses.replace(
            base, status=audio_status, detail=audio_detail, duration_s=duration
        )
    pcm = audio.quantize(samples)
    clip_hash = audio.pcm_hash(pcm)
    if status == KEPT:
        target = audio.store_path(store, clip_hash)
        if not target.exists():
            audio.write_flac(target, pcm)
    return dataclasses.replace(base, clip_hash=clip_hash, duration_s=duration)


class Ledger:
    """Outcomes of earlier runs, keyed by item, bytes, metadata and rules."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[tuple[Any, ...], Outcome] = {}
        if path.exists():
            for row in pq.read_table(path).to_pylist():
                outcome = Outcome(**{k: row[k] for k in LEDGER_FIELDS})
                self.entries[outcome.key()] = outcome

    def lookup(self, probe: Outcome, store: Path) -> Outcome | None:
        found = self.entries.get(probe.key())
        if found is None:
            return None
        lost = found.status == KEPT and found.clip_hash is not None
        if lost and not audio.store_path(store, found.clip_hash or "").exists():
            return None  # the store lost the file: redo
        return found

    @staticmethod
    def to_bytes(outcomes: Iterable[Outcome]) -> bytes:
        rows = [dataclasses.asdict(o) for o in outcomes]
        cols = {k: [r[k] for r in rows] for k in LEDGER_FIELDS}
        types = {k: pa.string() for k in LEDGER_FIELDS} | {"duration_s": pa.float64()}
        schema = pa.schema([pa.field(k, types[k]) for k in LEDGER_FIELDS])
        return table_bytes(pa.table(cols, schema=schema), None)


def _quarantine_copy(root: Path, data: bytes, bytes_hash: str, source_id: str) -> str:
    """Keep the original bytes of a quarantined item, content-addressed. Returns the path."""
    suffix = Path(source_id).suffix[:8] or ".bin"
    rel = f"quarantine/files/{bytes_hash}{suffix}"
    if not (root / rel).exists():
        atomic_write_bytes(root / rel, data)
    return rel


def resolve_duplicates(outcomes: list[Outcome]) -> list[Outcome]:
    """Collapse identical audio to its first occurrence; quarantine conflicting ids. Pure."""
    first_by_hash: dict[str, Outcome] = {}
    first_by_id: dict[tuple[str, str], Outcome] = {}
    resolved = []
    for o in outcomes:
        prior = first_by_id.get((o.source, o.source_id))
        if prior is not None and (prior.bytes_hash, prior.text) != (o.bytes_hash, o.text):
            detail = f"{o.source_id} appears again with different audio or text"
            o = dataclasses.replace(o, status=DUPLICATE_ID_CONFLICT, detail=detail)
        first_by_id.setdefault((o.source, o.source_id), o)
        clip = o.clip_hash
        if o.status == KEPT and clip:
            kept = first_by_hash.get(clip)
            if kept is not None:
                detail = f"same audio as {kept.source}/{kept.source_id} (id {clip[:16]})"
                o = dataclasses.replace(o, status=DUPLICATE, detail=detail)
            else:
                first_by_hash[clip] = o
        resolved.append(o)
    return resolved


def _read(item: SourceItem) -> tuple[bytes | None, str, str]:
    """(bytes, status, detail) of an item; the status names why reading failed."""
    if item.problem:
        return None, item.problem, item.detail
    try:
        return item.read(), KEPT, ""
    except SourceError as exc:
        missing = "No such file" in str(exc) or "does not exist" in str(exc)
        return None, MISSING_FILE if missing else UNREADABLE, str(exc)


def process_items(
    items: Iterable[SourceItem], cfg: IngestConfig, root: Path, ledger: Ledger
) -> Iterator[tuple[Outcome, bool, str | None]]:
    """Yield (outcome, decoded now?, quarantine copy path) per item, in order."""
    store, rules = root / "audio", rules_hash(cfg)
    for item in items:
        data, status, detail = _read(item)
        if data is None:
            yield Outcome.of(item, None, item.language, rules, status, detail), False, None
            continue
        code, _, _ = check_language(item.language, cfg)
        probe = Outcome.of(item, audio.bytes_hash(data), code, rules)
        found = ledger.lookup(probe, store)
        outcome = found or examine(item, data, cfg, store, rules)
        copy = None
        if outcome.status != KEPT:
            copy = _quarantine_copy(root, data, outcome.bytes_hash or "", item.source_id)
        yield outcome, found is None, copy


def build_report(outcomes: list[Outcome], lineage: Lineage) -> IngestReport:
    """Counts per language and reason; input == kept + quarantined by construction."""
    per_lang: dict[str, Counter[str]] = {}
    seconds: dict[str, float] = {}
    for o in outcomes:
        per_lang.setdefault(o.language or "und", Counter())[o.status] += 1
        if o.status == KEPT:
            lang = o.language or "und"
            seconds[lang] = seconds.get(lang, 0.0) + (o.duration_s or 0.0)
    kept = sum(c[KEPT] for c in per_lang.values())
    reasons = Counter(o.status for o in outcomes if o.status != KEPT)
    by_language = {
        lang: LanguageIngest(
            kept=c[KEPT],
            quarantined={r: n for r, n in sorted(c.items()) if r != KEPT},
            hours_kept=round(seconds.get(lang, 0.0) / 3600, 4),
        )
        for lang, c in sorted(per_lang.items())
    }
    quarantined = sum(reasons.values())
    assert len(outcomes) == kept + quarantined
    return IngestReport(
        input=len(outcomes),
        kept=kept,
        quarantined=quarantined,
        by_reason=dict(sorted(reasons.items())),
        by_language=by_language,
        lineage=lineage,
    )


def ingest(items: Iterable[SourceItem], cfg: IngestConfig) -> IngestResult:
    """Run ingestion of ``items`` into ``cfg.out_dir``."""
    root = Path(cfg.out_dir)
    ledger = Ledger(root / "ledger.parquet")
    outcomes, copies, decoded = [], {}, 0
    bar = progress(None, "ingest", unit="clip", enabled=cfg.progress)  # sources stream
    for outcome, did_decode, copy in process_items(tracked(items, bar), cfg, root, ledger):
        outcomes.append(outcome)
        decoded += did_decode
        if copy:
            copies[(outcome.source, outcome.source_id)] = copy
    changed = atomic_write_bytes(root / "ledger.parquet", Ledger.to_bytes(outcomes))
    final = resolve_duplicates(outcomes)
    kept = [o for o in final if o.status == KEPT]
    lineage = Lineage(
        git_commit(), section_hash(cfg), combine_hashes(o.clip_hash or "" for o in kept)
    )
    rows = [
        ManifestRow(
            id=o.clip_hash[:16],
            hash=o.clip_hash,
            path=audio.store_path(Path("audio"), o.clip_hash).as_posix(),
            language=o.language,
            text=o.text,
            duration_s=round(o.duration_s or 0.0, 4),
            source=o.source,
            source_id=o.source_id,
            speaker=o.speaker,
        )
        for o in kept
        if o.clip_hash
    ]
    write_manifests(root, rows, lineage, cfg.languages)
    quarantine = [
        {
            "source": o.source,
            "source_id": o.source_id,
            "reason": o.status,
            "detail": o.detail,
            "language": o.language,
            "text": o.text,
            "copy": copies.get((o.source, o.source_id)),
        }
        for o in final
        if o.status != KEPT
    ]
    changed |= atomic_write_jsonl(root / "quarantine" / "quarantine.jsonl", quarantine)
    report = build_report(final, lineage)
    changed |= report.write(root / "report.json")
    return IngestResult(report, len(kept), len(quarantine), decoded, changed)
