"""Where our ctranslate2 rows differ from faster-whisper: the weights or the serving path.

    python -m bench.serving_gap [--work ~/.cache/distilflow/results] [--ct2 DIR]
        [--out docs/bench/serving_gap.json]

Reads the deployed benchmark's transcripts (``work/deployed.json``) and runs faster-whisper's
own ``transcribe`` (as the baseline row) on *our* int8 conversion of the teacher (``--ct2``: the
consumer's cached conversion; default: the one whose ``distilflow_export.json`` names the
benchmark's teacher). Its WER against faster-whisper's row (the registry's weights) is the
conversion's share of the gap; against our consumer's ``teacher ct2`` row (the same weights),
the serving path's share; and our consumer's decoding with the log-mel zero-padded past the
clip, as faster-whisper pads (the serving path's difference). Asterisk ``test`` clips only.
Measured on 2026-12-04, when the consumer fed transformers' padding; since 2026-12-05 it pads
a model as it was trained (``distilflow.models.features``: the teacher as faster-whisper does),
so that row is the consumer's own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import provenance, write_result
from bench.deployed import PROJECT, REPO, THREADS, test_clips
from distilflow.audio import load_audio
from distilflow.evaluate.sets import AudioClip
from distilflow.export.verify import faster_whisper_text
from distilflow.text import clip_error_counts


def corpus_wer(clips: list[AudioClip], refs: dict[str, str], hyps: list[str]) -> float:
    """Corpus WER of the clips pooled, in % (as the deployed table's WER column)."""
    errors = words = 0
    for clip, hyp in zip(clips, hyps, strict=True):
        e, w = clip_error_counts(clip.language, refs[clip.id], hyp)
        errors, words = errors + e, words + w
    return 100 * errors / words


def zero_padded_transcripts(ct2: Path, teacher: str, clips: list[AudioClip]) -> list[str]:
    """Our consumer's ctranslate2 decoding with one change: the log-mel frames past the clip
    are zeros, as OpenAI's and faster-whisper's ``transcribe`` pad, instead of the log-mel of
    zero audio that transformers' feature extractor computes (and distilflow feeds)."""
    import torch

    from distilflow.decoding.ct2 import Ct2Whisper
    from distilflow.models import load_whisper

    loaded = load_whisper(teacher)
    model = Ct2Whisper(ct2, loaded.model.generation_config, threads=THREADS)
    tokenizer, extractor = loaded.processor.tokenizer, loaded.processor.feature_extractor
    out = []
    for clip in clips:
        audio = load_audio(clip.path)
        features = extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
        frames = audio.size // extractor.hop_length
        zero = torch.zeros_like(features)
        zero[..., :frames] = features[..., :frames]
        tokens = model.generate(zero, clip.language, 128)[0]
        out.append(str(tokenizer.decode(tokens, skip_special_tokens=True)).strip())
    return out


def main() -> None:
    from faster_whisper import WhisperModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "distilflow" / "results")
    ap.add_argument("--ct2", type=Path, help="our int8 conversion of the teacher")
    ap.add_argument("--teacher", default="pypi:whisper-base", help="its processor")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "serving_gap.json")
    args = ap.parse_args()
    deployed = json.loads((args.work / "deployed.json").read_text())
    teacher = deployed["models"]["teacher"]
    ct2 = args.ct2 or next(
        d.parent
        for d in (Path.home() / ".cache" / "distilflow" / "ct2").glob("*/distilflow_export.json")
        if json.loads(d.read_text()).get("source") == teacher
    )
    clips = test_clips(PROJECT, int(deployed["sets"]["test"]["clips"]) // 5)["test"]  # 5 languages
    rows = {r["id"]: r for r in deployed["sets"]["test"]["transcripts"]}
    refs = {k: r["reference"] for k, r in rows.items()}
    model = WhisperModel(str(ct2), device="cpu", compute_type="int8", cpu_threads=THREADS)
    ours = [faster_whisper_text(model, load_audio(c.path), c.language) for c in clips]
    wer: dict[str, float] = {}
    same: dict[str, int] = {}
    for name in ("faster-whisper", "teacher ct2"):
        hyps = [rows[c.id][name] for c in clips]
        wer[name] = round(corpus_wer(clips, refs, hyps), 1)
        same[name] = sum(a == b for a, b in zip(ours, hyps, strict=True))
    wer["faster-whisper on our conversion"] = round(corpus_wer(clips, refs, ours), 1)
    zero = zero_padded_transcripts(ct2, args.teacher, clips)
    wer["our consumer's decoding, log-mel zero-padded"] = round(corpus_wer(clips, refs, zero), 1)
    same["our consumer's decoding, log-mel zero-padded"] = sum(
        a == b for a, b in zip(ours, zero, strict=True)
    )
    out = {"clips": len(clips), "ct2": str(ct2), "wer": wer, "identical_to": same}
    write_result(args.out, provenance("bench.serving_gap") | out)


if __name__ == "__main__":
    main()
