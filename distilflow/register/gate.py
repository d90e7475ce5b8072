"""The promotion gate: does a challenger beat the champion? Pure (no MLflow), fully explained.

Rule (WER, lower is better, ``tolerance`` an absolute WER), three verdicts:

- no champion yet: the challenger is promoted if it has at least one WER to show;
- else, per language both score, is the challenger's WER more than ``tolerance`` above the
  champion's? Where both versions' per-clip errors on the same dev clips are known
  (:class:`PairedClips`), the answer comes from the paired bootstrap interval of
  ``challenger - champion`` (95 %, :func:`distilflow.stats.paired_bootstrap`):

  - the whole interval above ``tolerance``: a regression, **rejected**;
  - the whole interval at or below ``tolerance``: no regression;
  - the interval holds values on both sides (or there is a single clip, which gives no
    interval): the clips cannot rule a regression in or out.

  Without per-clip errors for both, the point figures decide as before (``delta > tolerance``:
  a regression), and the reasons say so;
- **promoted** only if no language regresses, every language is resolved **and** the macro mean
  over the languages both score is strictly lower; **rejected** if a language regresses or the
  mean does not improve; otherwise **insufficient_evidence**: the version is registered but not
  made champion, and the reasons name the languages, their dev clips and intervals.

Missing or NaN figures are never silently skipped; each case has its reason:

- champion scores a language the challenger does not: rejected (a regression cannot be ruled
  out);
- challenger scores a language the champion does not: not compared (nothing to regress from),
  left out of the means that are compared;
- neither scores it: ignored, and said so.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from distilflow.stats import CONFIDENCE, N_RESAMPLES, SEED, Interval, paired_bootstrap

MIN_CLIPS = 2  # fewer paired clips give no interval (one clip resamples to a single point)
PROMOTED, REJECTED, INSUFFICIENT = "promoted", "rejected", "insufficient_evidence"


@dataclass(frozen=True)
class PairedClips:
    """Champion and challenger errors on the same dev clips of one language (clip ``i``:
    ``champion[i]``, ``challenger[i]`` errors against ``words[i]`` reference words)."""

    champion: tuple[int, ...]
    challenger: tuple[int, ...]
    words: tuple[int, ...]

    def interval(self) -> Interval | None:
        """``WER(challenger) - WER(champion)`` with its paired bootstrap interval."""
        return paired_bootstrap(
            self.champion, self.challenger, self.words, N_RESAMPLES, SEED, CONFIDENCE
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of the gate with the figures it was taken on."""

    promote: bool  # made champion
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
    # not promoted only because some languages' dev clips cannot resolve the tolerance
    insufficient: bool = False
    unresolved: list[str] = field(default_factory=list)  # those languages
    # per language judged on paired clips: Interval.to_dict() of challenger - champion
    intervals: dict[str, dict[str, float | int]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``promoted`` (made champion), ``insufficient_evidence`` or ``rejected``."""
        if self.promote:
            return PROMOTED
        return INSUFFICIENT if self.insufficient else REJECTED

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN): what decision.json and the registry record."""
        return asdict(self) | {"verdict": self.verdict}


def with_rescored(
    decision: Decision, recorded: Mapping[str, Any], same_clips: Collection[str] = ()
) -> Decision:
    """``decision`` taken on re-scored champion figures, saying so (``recorded``: language ->
    the champion's recorded WER that was replaced; ``same_clips``: the languages whose recorded
    figure was on the same clips and decoding, scored again only for per-clip errors). Pure."""
    if not recorded or decision.champion_wer is None:
        return decision
    rescored = {lang: finite_or_none(recorded[lang]) for lang in sorted(recorded)}
    notes = []
    for lang, old in rescored.items():
        new = decision.champion_wer.get(lang)
        was = "none" if old is None else f"{old:.4f}"
        now = "none" if new is None else f"{new:.4f}"
        why = (
            "same clips and decoding, scored again for its per-clip errors"
            if lang in same_clips
            else "not known to be on the same clips and decoding"
        )
        notes.append(
            f"{lang}: champion scored again on the challenger's dev clips: {now} (recorded: "
            f"{was}, {why})"
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
    paired: Mapping[str, PairedClips] | None = None,
) -> Decision:
    """Whether ``challenger`` (per-language WER) replaces ``champion`` (None: no champion);
    ``paired``: per language, both versions' errors on the same dev clips (see the module)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    chal = clean_scores(challenger)
    if champion is None:
        return _first_version(chal, tolerance)
    champ = clean_scores(champion)
    cmp = _compare(chal, champ, tolerance, paired or {})
    chal_mean, champ_mean = mean_of(chal, cmp.compared), mean_of(champ, cmp.compared)
    if chal_mean is None or champ_mean is None:
        if any(v is not None for v in champ.values()):
            cmp.blockers.append("no language scored by both: the means cannot be compared")
        elif any(v is not None for v in chal.values()):
            cmp.reasons.append("the champion has no finite WER at all: any scored challenger wins")
        else:
            cmp.blockers.append("neither model has a finite WER: nothing to judge")
    elif chal_mean < champ_mean:
        cmp.reasons.append(f"macro mean WER improves: {champ_mean:.4f} -> {chal_mean:.4f}")
    else:
        cmp.blockers.append(f"macro mean WER does not improve: {champ_mean:.4f} -> {chal_mean:.4f}")
    if chal_mean is None and not cmp.compared:
        chal_mean = mean_of(chal, sorted(chal))
    return Decision(
        promote=not cmp.blockers and not cmp.unresolved,
        reasons=cmp.blockers + cmp.undecided + cmp.reasons,
        tolerance=tolerance,
        challenger_wer=chal,
        champion_wer=champ,
        deltas=cmp.deltas,
        compared=cmp.compared,
        challenger_mean=chal_mean,
        champion_mean=champ_mean,
        champion_version=champion_version,
        insufficient=not cmp.blockers and bool(cmp.unresolved),
        unresolved=cmp.unresolved,
        intervals=cmp.intervals,
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


@dataclass
class _Comparison:
    """What the per-language comparison found (mutable while it runs)."""

    reasons: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)  # reasons to reject
    undecided: list[str] = field(default_factory=list)  # reasons of the unresolved languages
    compared: list[str] = field(default_factory=list)  # languages both score
    deltas: dict[str, float | None] = field(default_factory=dict)  # challenger - champion
    regressed: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    point: list[str] = field(default_factory=list)  # judged on the point figures
    intervals: dict[str, dict[str, float | int]] = field(default_factory=dict)


def _compare(
    chal: dict[str, float | None],
    champ: dict[str, float | None],
    tolerance: float,
    paired: Mapping[str, PairedClips],
) -> _Comparison:
    """Per-language comparison: on the paired clips' interval where known, else on the figures."""
    out = _Comparison()
    for lang in sorted(set(chal) | set(champ)):
        new, old = chal.get(lang), champ.get(lang)
        if new is not None and old is not None:
            out.deltas[lang] = new - old
            out.compared.append(lang)
            if lang in paired:
                _judge_interval(out, lang, paired[lang], tolerance)
            else:
                _judge_point(out, lang, new, old, tolerance)
            continue
        out.deltas[lang] = None
        if old is not None:
            out.blockers.append(
                f"{lang}: champion WER {old:.4f} but the challenger has none (missing/NaN): "
                "a regression cannot be ruled out"
            )
        elif new is not None:
            out.reasons.append(f"{lang}: new language (champion has no WER), not compared")
        else:
            out.reasons.append(f"{lang}: neither model has a WER (missing/NaN), ignored")
    cleared = [x for x in out.compared if x not in out.regressed and x not in out.unresolved]
    if cleared and not out.regressed:
        out.reasons.insert(
            0, f"no language regresses by more than {tolerance:.4f} ({', '.join(cleared)})"
        )
    if out.point and paired:
        out.reasons.append(
            "judged on the WER figures alone (no per-clip errors of both versions on the same "
            f"clips): {', '.join(out.point)}"
        )
    return out


def _judge_point(out: _Comparison, lang: str, new: float, old: float, tolerance: float) -> None:
    out.point.append(lang)
    delta = new - old
    if delta > tolerance:
        out.regressed.append(lang)
        out.blockers.append(
            f"{lang}: WER regresses by {delta:+.4f} ({old:.4f} -> {new:.4f}), "
            f"more than the tolerance {tolerance:.4f}"
        )


def _judge_interval(out: _Comparison, lang: str, pair: PairedClips, tolerance: float) -> None:
    """Rejects when the whole interval lies above ``tolerance``, leaves ``lang`` unresolved
    when it straddles it (or there are too few clips for an interval)."""
    clips = len(pair.words)
    interval = pair.interval()
    if interval is None or clips < MIN_CLIPS:
        out.unresolved.append(lang)
        out.undecided.append(
            f"{lang}: insufficient evidence: {clips} dev clip{'s' if clips != 1 else ''}, too "
            f"few for an interval to resolve the tolerance {tolerance:.4f}"
        )
        return
    out.intervals[lang] = interval.to_dict()
    span = (
        f"WER change {interval.estimate:+.4f}, {100 * interval.confidence:.0f}% interval "
        f"[{interval.low:+.4f}, {interval.high:+.4f}] on {clips} dev clips"
    )
    if interval.low > tolerance:
        out.regressed.append(lang)
        out.blockers.append(
            f"{lang}: WER regresses by more than the tolerance {tolerance:.4f}: {span}"
        )
    elif max(interval.high, interval.estimate) > tolerance:  # the estimate: a skewed resample
        out.unresolved.append(lang)
        out.undecided.append(
            f"{lang}: insufficient evidence: {span}, values both at or below and above the "
            f"tolerance {tolerance:.4f}: a regression can be neither ruled in nor out"
        )
    else:
        out.reasons.append(f"{lang}: within the tolerance {tolerance:.4f}: {span}")
