"""What every stage's typed report shares: a frozen dataclass kept as one atomic JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self, cast

from distilflow.atomic import atomic_write_json


class JsonReport:
    """Base of the reports' dataclasses; a report class gives ``from_dict`` (strict: a missing
    key raises) and its fields in the order its file has them."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(cast(Any, self))

    def write(self, path: Path) -> bool:
        """Write atomically (skipped when unchanged); True when the file changed."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        raise NotImplementedError(f"{cls.__name__}.from_dict")

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
