"""The pseudo-label filter's keep/drop rule (normalisers and WER/CER: :mod:`distilflow.text`).

Everything here is a pure function of one label record and the filter options, so the rule is
unit-tested directly. Clips with a reference are judged by the WER (CER for languages written
without spaces) between the normalised reference and the teacher's text; clips without one are
judged by the teacher's own confidence. A clip whose label is dropped but whose reference is
usable stays in the manifest: it trains on its reference (``targets`` reference or auto) and
can be a dev clip (the dev split is drawn before this rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from distilflow.languages import NO_SPACE_LANGUAGES
from distilflow.text import NormalizerName, compression_ratio, error_rate, is_uppercase, normalize

KEEP = "kept"
EMPTY_REFERENCE = "empty_reference"
EMPTY_HYPOTHESIS = "empty_hypothesis"
UPPERCASE_HYPOTHESIS = "uppercase_hypothesis"
REPETITION_LOOP = "repetition_loop"
WER_ABOVE_THRESHOLD = "wer_above_threshold"
LOW_CONFIDENCE = "low_confidence"
NO_SPEECH = "no_speech"


@dataclass(frozen=True)
class FilterRule:
    """The options of the keep/drop rule for one language."""

    normalizer: NormalizerName  # english for en; basic (lower-case, no punctuation) otherwise
    strip_accents: bool  # also remove diacritics on both sides (references often lack them)
    use_cer: bool  # character error rate instead of WER (languages without spaces)
    max_error: float  # drop when WER/CER is above this
    max_compression_ratio: float  # gzip ratio above this means a repetition loop
    min_avg_logprob: float  # unlabelled clips: drop below this teacher confidence
    max_no_speech_prob: float  # unlabelled clips: drop when the teacher thinks it is not speech
    drop_uppercase: bool  # drop all-uppercase hypotheses (a known Whisper failure mode)


@dataclass(frozen=True)
class Decision:
    """The verdict on one clip's teacher label, and whether its human reference is usable."""

    status: str  # KEEP or the reason the teacher's label was dropped
    error: float | None  # WER or CER of the teacher's label when both texts are non-empty
    reference_norm: str | None
    hypothesis_norm: str
    # the reference is non-empty once normalised: the clip can still train on it (targets
    # reference/auto) and be scored on it (dev split) when its teacher label is dropped
    reference_usable: bool = False


def decide(
    reference: str | None,
    hypothesis: str,
    avg_logprob: float,
    no_speech_prob: float,
    rule: FilterRule,
) -> Decision:
    """Keep or drop one pseudo-label. Pure."""
    hyp = normalize(hypothesis, rule.normalizer, rule.strip_accents)
    ref = None if reference is None else normalize(reference, rule.normalizer, rule.strip_accents)
    error = error_rate(ref, hyp, rule.use_cer) if ref and hyp else None
    status = label_status(ref, hypothesis, hyp, avg_logprob, no_speech_prob, rule)
    if status == KEEP and error is not None and error > rule.max_error:
        status = WER_ABOVE_THRESHOLD
    return Decision(status, error, ref, hyp, bool(ref))


def label_status(
    ref: str | None,
    hypothesis: str,
    hyp: str,
    avg_logprob: float,
    no_speech_prob: float,
    rule: FilterRule,
) -> str:
    """KEEP, or why the teacher's label is unusable, before its error is judged. Pure."""
    if not hyp:
        return EMPTY_HYPOTHESIS
    if rule.drop_uppercase and is_uppercase(hypothesis):
        return UPPERCASE_HYPOTHESIS
    if compression_ratio(hypothesis) > rule.max_compression_ratio:
        return REPETITION_LOOP
    if ref is None:
        if no_speech_prob > rule.max_no_speech_prob:
            return NO_SPEECH
        if avg_logprob < rule.min_avg_logprob:
            return LOW_CONFIDENCE
        return KEEP
    return KEEP if ref else EMPTY_REFERENCE


def rule_for(
    language: str,
    normalizers: dict[str, NormalizerName],
    thresholds: dict[str, float],
    cer_languages: list[str] | None,
    **common: object,
) -> FilterRule:
    """The rule of one language from per-language maps with a ``default`` entry."""
    cer = set(cer_languages) if cer_languages is not None else NO_SPACE_LANGUAGES
    return FilterRule(
        normalizer=normalizers.get(language, normalizers["default"]),
        use_cer=language in cer,
        max_error=thresholds.get(language, thresholds["default"]),
        **common,  # type: ignore[arg-type]
    )
