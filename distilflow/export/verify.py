"""Check a CTranslate2 export against the torch model it came from, on real clips.

Both decode greedily (forced language, ``transcribe``, no timestamps, the same token budget) from
the same features: the processor's log-mel of each clip padded to 30 s as the model was trained
(models/features.py: zeros past the clip, as faster-whisper pads, for students trained since
2026-12-05). faster-whisper computes its own log-mel, so on hard audio it may decode slightly
differently; its transcripts are compared separately (``faster_whisper_transcribe``).

An int8 export is not bit-identical to a float32 torch model: the report gives the share of
identical transcripts, the mean token agreement and the WER of the export's output against the
torch output, from which a caller decides what is acceptable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from distilflow.audio import load_audio
from distilflow.decoding.ct2 import ct2_greedy, load_ct2_whisper
from distilflow.decoding.speculative import greedy_generate
from distilflow.models.dynamic import fit_features
from distilflow.text import compression_ratio, normalize
from distilflow.training.data import is_dev_clip, load_training_examples, log_mel, prompt_ids
from distilflow.training.targets import clean_reference

LOOP_COMPRESSION_RATIO = 2.4  # above this a transcript is a repetition loop (Whisper's threshold)


def loops(tokens: Sequence[int], text: str, max_new_tokens: int) -> bool:
    """A repetition loop: the whole token budget used, or text that gzip compresses more than
    Whisper's own 2.4 (CTranslate2 may stop a loop before the budget). Pure."""
    return len(tokens) >= max_new_tokens or compression_ratio(text) > LOOP_COMPRESSION_RATIO


@dataclass(frozen=True)
class VerifyClip:
    """One clip to decode with both models."""

    id: str
    audio_path: str
    language: str


@dataclass(frozen=True)
class ClipComparison:
    """One clip's transcripts (text tokens, no prompt, no end-of-text) from both models."""

    id: str
    language: str
    torch_text: str
    ct2_text: str
    torch_tokens: list[int]
    ct2_tokens: list[int]

    @property
    def identical_tokens(self) -> bool:
        return self.torch_tokens == self.ct2_tokens

    @property
    def token_agreement(self) -> float:
        """Length of the common prefix over the longer output (1.0: identical)."""
        return token_agreement(self.torch_tokens, self.ct2_tokens)


@dataclass(frozen=True)
class VerifyReport:
    """Per-clip comparisons and their summary."""

    comparisons: list[ClipComparison]
    max_new_tokens: int

    def summary(self) -> dict[str, Any]:
        """Shares of identical outputs, token agreement, and WER against the torch output.

        WERs are on normalised text (lower case, no punctuation). ``wer_vs_torch_settled``
        leaves out the clips where either output is a repetition loop (``loops``), whose length
        (and so the corpus WER) hangs on where a near-tie first flips. Loops of the
        export on clips where torch stopped are counted apart (``export_loop_share``): that is a
        difference in stability, gated on its own, not a drift in what is transcribed.
        """
        comps = self.comparisons
        n = max(len(comps), 1)
        budget = self.max_new_tokens
        torch_loops = [loops(c.torch_tokens, c.torch_text, budget) for c in comps]
        ct2_loops = [loops(c.ct2_tokens, c.ct2_text, budget) for c in comps]
        looped = [c for c, t in zip(comps, torch_loops, strict=True) if t]
        export_only = [
            c for c, t, e in zip(comps, torch_loops, ct2_loops, strict=True) if e and not t
        ]
        settled = [c for c, t, e in zip(comps, torch_loops, ct2_loops, strict=True) if not (t or e)]
        return {
            "clips": len(comps),
            "identical_tokens_share": sum(c.identical_tokens for c in comps) / n,
            "exact_text_share": sum(c.torch_text == c.ct2_text for c in comps) / n,
            "mean_token_agreement": sum(c.token_agreement for c in comps) / n,
            "wer_vs_torch": normalised_wer(comps),
            "torch_loop_clips": len(looped),
            "export_loop_clips": len(export_only),
            "export_loop_share": len(export_only) / n,
            "wer_vs_torch_settled": normalised_wer(settled),
            "max_new_tokens": self.max_new_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        clips = [asdict(c) | {"token_agreement": c.token_agreement} for c in self.comparisons]
        return self.summary() | {"per_clip": clips}


def dev_verify_clips(
    filtered_dir: Path, dev_fraction: float, language: str | None, limit: int
) -> list[VerifyClip]:
    """The first ``limit`` clips (by content hash) of the student's dev split, no clip it trained
    on; only ``language``'s when given."""
    df = load_training_examples(Path(filtered_dir), [language] if language else None)
    clips: list[VerifyClip] = []
    for row in df.sort_values("hash").itertuples():
        if len(clips) >= limit:
            break
        if is_dev_clip(str(row.hash), clean_reference(row.reference), dev_fraction):
            clips.append(VerifyClip(str(row.id), str(row.audio_path), str(row.language)))
    return clips


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Common-prefix length of ``a`` and ``b`` over the longer one's length. Pure."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same / longest


def wer_between(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER of ``hypotheses`` against ``references`` on the raw text (no normalising)."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        n_ref = len(ref.split())
        words += n_ref
        if n_ref == 0:
            errors += len(hyp.split())
            continue
        out = jiwer.process_words(ref, hyp)
        errors += out.substitutions + out.deletions + out.insertions
    if words == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / words


def normalised_wer(comparisons: Sequence[ClipComparison]) -> float:
    """Corpus WER of the export's transcripts against torch's, both normalised."""
    refs = [_normalise(c.torch_text, c.language) for c in comparisons]
    return wer_between(refs, [_normalise(c.ct2_text, c.language) for c in comparisons])


def _normalise(text: str, language: str) -> str:
    return normalize(text, "english" if language == "en" else "basic")


def verify_export(
    ct2_dir: Path,
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    clips: Sequence[VerifyClip],
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> VerifyReport:
    """Decode ``clips`` with the export in ``ct2_dir`` and with ``model``; compare the outputs."""
    ct2_model = load_ct2_whisper(ct2_dir)
    tokenizer: Any = processor.tokenizer
    generation = model.generation_config
    comparisons: list[ClipComparison] = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        features = log_mel([c.audio_path for c in batch], processor.feature_extractor)
        # a dynamic-context model: the batch's longest clip plus its margin, for both
        features = fit_features(model, features, [load_audio(c.audio_path).size for c in batch])
        prompts = [prompt_ids(generation, c.language) for c in batch]
        ct2_ids = ct2_greedy(ct2_model, features, prompts, max_new_tokens)
        for i, clip in enumerate(batch):
            torch_ids = greedy_generate(model, features[i : i + 1], clip.language, max_new_tokens)
            comparisons.append(
                ClipComparison(
                    id=clip.id,
                    language=clip.language,
                    torch_text=str(tokenizer.decode(torch_ids, skip_special_tokens=True)).strip(),
                    ct2_text=str(tokenizer.decode(ct2_ids[i], skip_special_tokens=True)).strip(),
                    torch_tokens=torch_ids,
                    ct2_tokens=ct2_ids[i],
                )
            )
    return VerifyReport(comparisons, max_new_tokens)


def faster_whisper_transcribe(
    ct2_dir: Path, clips: Sequence[VerifyClip], compute_type: str = "int8"
) -> list[str]:
    """Transcripts by ``faster_whisper.WhisperModel`` (greedy, forced language, no VAD)."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type)
    return [faster_whisper_text(fw, load_audio(c.audio_path), c.language) for c in clips]


def faster_whisper_text(fw: Any, audio: np.ndarray, language: str) -> str:
    """One clip's transcript by a ``faster_whisper.WhisperModel`` as users run it plainly:
    greedy, forced language, no VAD, no temperature fallback, no previous-text conditioning."""
    segments, _ = fw.transcribe(
        audio,
        language=language,
        beam_size=1,
        temperature=0.0,
        vad_filter=False,
        without_timestamps=True,
        condition_on_previous_text=False,
    )
    return "".join(s.text for s in segments).strip()
