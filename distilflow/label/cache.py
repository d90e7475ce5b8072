"""The pseudo-label cache: one small Parquet file per finished batch.

Keyed by (audio hash, teacher fingerprint, generation-settings hash): the directory names the
teacher and settings, each record names its audio. A batch file is written atomically after the
whole batch is labelled, so a run killed at any moment (``kill -9`` included) leaves only complete
files, and the next run labels just the clips no file holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distilflow.manifest import write_parquet

LABEL_SCHEMA = pa.schema(
    [
        pa.field("hash", pa.string(), nullable=False),  # audio content hash (sha256 of PCM)
        pa.field("language", pa.string(), nullable=False),  # forced, or detected when missing
        pa.field("language_detected", pa.bool_(), nullable=False),  # True when detected here
        pa.field("text", pa.string(), nullable=False),  # the teacher's transcript
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),  # content tokens, no prompt
        pa.field("avg_logprob", pa.float64(), nullable=False),  # mean log-prob incl. end token
        pa.field("compression_ratio", pa.float64(), nullable=False),  # gzip ratio of the text
        pa.field("no_speech_prob", pa.float64(), nullable=False),  # P(<|nospeech|>) at step 0
        pa.field("teacher_id", pa.string(), nullable=False),  # teacher model fingerprint
        pa.field("settings_hash", pa.string(), nullable=False),  # generation settings hash
    ]
)


@dataclass(frozen=True)
class LabelRecord:
    """What the teacher said about one clip."""

    hash: str
    language: str
    language_detected: bool
    text: str
    token_ids: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    teacher_id: str
    settings_hash: str


def records_table(records: list[LabelRecord]) -> pa.Table:
    rows = [asdict(r) for r in sorted(records, key=lambda r: r.hash)]
    return pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)


class LabelCache:
    """Finished batches of one (teacher, settings) pair."""

    def __init__(self, root: Path, teacher_id: str, settings_hash: str) -> None:
        self.dir = root / f"{teacher_id[:16]}-{settings_hash}"

    def batch_files(self) -> list[Path]:
        return sorted(self.dir.glob("*.parquet")) if self.dir.exists() else []

    def done(self) -> set[str]:
        """Audio hashes already labelled."""
        hashes: set[str] = set()
        for path in self.batch_files():
            hashes.update(pq.read_table(path, columns=["hash"]).column("hash").to_pylist())
        return hashes

    def write_batch(self, records: list[LabelRecord]) -> Path:
        """Persist one finished batch atomically; the name is the hash of its clips."""
        key = hashlib.sha256("".join(sorted(r.hash for r in records)).encode()).hexdigest()[:24]
        path = self.dir / f"{key}.parquet"
        write_parquet(path, records_table(records), None)
        return path

    def read(self, hashes: set[str] | None = None) -> list[LabelRecord]:
        """Every cached record (restricted to ``hashes`` when given), one per audio hash."""
        found: dict[str, LabelRecord] = {}
        for path in self.batch_files():
            for row in pq.read_table(path, schema=LABEL_SCHEMA).to_pylist():
                if hashes is None or row["hash"] in hashes:
                    found.setdefault(row["hash"], LabelRecord(**row))
        return [found[h] for h in sorted(found)]
