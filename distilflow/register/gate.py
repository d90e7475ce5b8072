"""The promotion gate: does a challenger beat the champion? Pure (no MLflow), fully explained.

Rule (WER, lower is better, ``tolerance`` an absolute WER):

- no champion yet: the challenger is promoted if it has at least one WER to show;
- else promoted only if **no language regresses** by more than ``tolerance`` against the
  champion **and** the macro mean over the languages both score is strictly lower.

Missing or NaN figures are never silently skipped; each case has its reason:

- champion scores a language the challenger does not: promotion is blocked (a regression cannot
  be ruled out);
- challenger scores a language the champion does not: not compared (nothing to regress from),
  left out of the means that are compared;
- neither scores it: ignored, and said so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Decision:
    """The outcome of the gate with the figures it was taken on."""

    promote: bool
    reasons: list[str]
    tolerance: float
    challenger_wer: dict[str, float | None]  # None: missing or NaN
    champion_wer: dict[str, float | None] | None  # None: there is no champion
    deltas: dict[str, float | None] = field(default_factory=dict)  # challenger - champion
    compared: list[str] = field(default_factory=list)  # languages both score
    challenger_mean: float | None = None  # macro mean over ``compared`` (all, without champion)
    champion_mean: float | None = None  # macro mean over ``compared``
    champion_version: str | None = None  # registry version of the champion, when known
    # languages where the champion was scored again on the challenger's clips (its recorded
    # figure was measured on other clips or decoding; see distilflow/register/wer_basis.py): the
    # recorded figure, replaced in ``champion_wer`` by the new one
    champion_rescored: dict[str, float | None] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "promoted" if self.promote else "rejected"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN): what decision.json and the registry record."""
        return asdict(self) | {"verdict": self.verdict}


def with_rescored(decision: Decision, recorded: Mapping[str, Any]) -> Decision:
    """``decision`` taken on re-scored champion figures, saying so (``recorded``: language ->
    the champion's recorded WER that was replaced). Pure."""
    if not recorded or decision.champion_wer is None:
        return decision
    rescored = {lang: finite_or_none(recorded[lang]) for lang in sorted(recorded)}
    notes = []
    for lang, old in rescored.items():
        new = decision.champion_wer.get(lang)
        was = "none" if old is None else f"{old:.4f}"
        now = "none" if new is None else f"{new:.4f}"
        notes.append(
            f"{lang}: champion scored again on the challenger's dev clips: {now} (recorded: "
            f"{was}, not known to be on the same clips and decoding)"
        )
    return replace(decision, reasons=decision.reasons + notes, champion_rescored=rescored)


def finite_or_none(value: Any) -> float | None:
    """A float WER, or None for missing/NaN/inf/non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def clean_scores(scores: Mapping[str, Any]) -> dict[str, float | None]:
    """Per-language WER with missing and NaN values as None, sorted by language."""
    return {lang: finite_or_none(scores[lang]) for lang in sorted(scores)}


def mean_of(scores: Mapping[str, float | None], languages: list[str]) -> float | None:
    """Macro mean of ``scores`` over ``languages`` (None when there is nothing to average)."""
    values = [v for lang in languages if (v := scores.get(lang)) is not None]
    return sum(values) / len(values) if values else None


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    tolerance: float,
    champion_version: str | None = None,
) -> Decision:
    """Whether ``challenger`` (per-language WER) replaces ``champion`` (None: no champion)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    chal = clean_scores(challenger)
    if champion is None:
        return _first_version(chal, tolerance)
    champ = clean_scores(champion)
    reasons, blockers, compared, deltas = _compare(chal, champ, tolerance)
    chal_mean, champ_mean = mean_of(chal, compared), mean_of(champ, compared)
    if chal_mean is None or champ_mean is None:
        if any(v is not None for v in champ.values()):
            blockers.append("no language scored by both: the means cannot be compared")
        elif any(v is not None for v in chal.values()):
            reasons.append("the champion has no finite WER at all: any scored challenger wins")
        else:
            blockers.append("neither model has a finite WER: nothing to judge")
    elif chal_mean < champ_mean:
        reasons.append(f"macro mean WER improves: {champ_mean:.4f} -> {chal_mean:.4f}")
    else:
        blockers.append(f"macro mean WER does not improve: {champ_mean:.4f} -> {chal_mean:.4f}")
    if chal_mean is None and not compared:
        chal_mean = mean_of(chal, sorted(chal))
    return Decision(
        promote=not blockers,
        reasons=blockers + reasons,
        tolerance=tolerance,
        challenger_wer=chal,
        champion_wer=champ,
        deltas=deltas,
        compared=compared,
        challenger_mean=chal_mean,
        champion_mean=champ_mean,
        champion_version=champion_version,
    )


def _first_version(chal: dict[str, float | None], tolerance: float) -> Decision:
    scored = [lang for lang, v in chal.items() if v is not None]
    mean = mean_of(chal, scored)
    if mean is None:
        reasons = ["no champion yet, but the challenger has no finite WER: nothing to promote on"]
    else:
        reasons = [f"no champion yet: first scored version (macro mean WER {mean:.4f})"]
    unscored = [lang for lang, v in chal.items() if v is None]
    if unscored and mean is not None:
        reasons.append(f"not scored (missing/NaN), left out of the mean: {', '.join(unscored)}")
    return Decision(
        promote=mean is not None,
        reasons=reasons,
        tolerance=tolerance,
        challenger_wer=chal,
        champion_wer=None,
        compared=scored,
        challenger_mean=mean,
    )


def _compare(
    chal: dict[str, float | None], champ: dict[str, float | None], tolerance: float
) -> tuple[list[str], list[str], list[str], dict[str, float | None]]:
    """Per-language comparison: (reasons, blockers, compared languages, deltas)."""
    reasons: list[str] = []
    blockers: list[str] = []
    compared: list[str] = []
    deltas: dict[str, float | None] = {}
    for lang in sorted(set(chal) | set(champ)):
        new, old = chal.get(lang), champ.get(lang)
        if new is not None and old is not None:
            delta = new - old
            deltas[lang] = delta
            compared.append(lang)
            if delta > tolerance:
                blockers.append(
                    f"{lang}: WER regresses by {delta:+.4f} ({old:.4f} -> {new:.4f}), "
                    f"more than the tolerance {tolerance:.4f}"
                )
            continue
        deltas[lang] = None
        if old is not None:
            blockers.append(
                f"{lang}: champion WER {old:.4f} but the challenger has none (missing/NaN): "
                "a regression cannot be ruled out"
            )
        elif new is not None:
            reasons.append(f"{lang}: new language (champion has no WER), not compared")
        else:
            reasons.append(f"{lang}: neither model has a WER (missing/NaN), ignored")
    regressed = any(v is not None and v > tolerance for v in deltas.values())
    if compared and not regressed:
        reasons.insert(
            0, f"no language regresses by more than {tolerance:.4f} ({', '.join(compared)})"
        )
    return reasons, blockers, compared, deltas
