"""The languages Whisper knows, and normalisation of what sources call them."""

from __future__ import annotations

from functools import cache

# Languages written without spaces between words: scored by CER instead of WER.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "bo", "yue"})


@cache
def whisper_languages() -> dict[str, str]:
    """code -> English name, in Whisper's token order (from transformers' tokenizer)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return dict(LANGUAGES)


@cache
def _aliases() -> dict[str, str]:
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    return {name.lower(): code for name, code in TO_LANGUAGE_CODE.items()}


def normalize_language(value: str) -> str | None:
    """Whisper code for a code, a locale (``pt-BR``, ``es_ES``) or an English name; else None."""
    text = value.strip().lower().replace("_", "-")
    codes = whisper_languages()
    if text in codes:
        return text
    if text in _aliases():
        return _aliases()[text]
    base = text.split("-", 1)[0]
    return base if base in codes else None
