"""The WER-filter stage: apply the keep/drop rule to every pseudo-label and persist why.

Outputs in ``filter.out_dir``: ``decisions.parquet`` (every clip, its status, error and
normalised texts), ``manifests/<lang>.parquet`` (kept clips: those whose teacher label passes
and those with a usable human reference; ``text`` is the teacher's label, ``reference`` the
human one, ``label_ok`` whether the label passed, ``teacher_error`` its WER/CER against the
reference; the training stages choose their targets from these, see
distilflow/training/targets.py), ``report.json`` and ``wer.png``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from distilflow.atomic import atomic_write_bytes
from distilflow.config import FilterConfig, section_hash
from distilflow.filter.report import FilterReport, LanguageFilter
from distilflow.filter.rule import KEEP, FilterRule, decide, rule_for
from distilflow.lineage import Lineage, combine_hashes, git_commit
from distilflow.manifest import read_language_tables, write_language_tables, write_parquet


def rule_of(cfg: FilterConfig, language: str) -> FilterRule:
    return rule_for(
        language,
        cfg.normalizer,
        cfg.max_error,
        cfg.cer_languages,
        strip_accents=cfg.strip_accents,
        max_compression_ratio=cfg.max_compression_ratio,
        min_avg_logprob=cfg.min_avg_logprob,
        max_no_speech_prob=cfg.max_no_speech_prob,
        drop_uppercase=cfg.drop_uppercase,
    )


def decide_all(labels: pd.DataFrame, cfg: FilterConfig) -> pd.DataFrame:
    """One decision row per label. Pure (apart from reading the rule's normalisers)."""
    rows = []
    for r in labels.itertuples():
        ref = None if pd.isna(r.reference) else str(r.reference)
        d = decide(
            ref,
            str(r.text),
            float(r.avg_logprob),
            float(r.no_speech_prob),
            rule_of(cfg, r.language),
        )
        rows.append(
            {
                "id": r.id,
                "hash": r.hash,
                "language": r.language,
                "status": d.status,
                "error": d.error,
                "reference_norm": d.reference_norm,
                "hypothesis_norm": d.hypothesis_norm,
                "has_reference": ref is not None,
                "reference_usable": d.reference_usable,
                "kept": d.status == KEEP or d.reference_usable,
            }
        )
    return pd.DataFrame(rows)


def wer_plot(decisions: pd.DataFrame, path: Path, thresholds: dict[str, float]) -> None:
    """Histogram of WER/CER per language, with the threshold drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    langs = sorted(decisions["language"].unique())
    fig, axes = plt.subplots(
        1, max(len(langs), 1), figsize=(3.2 * max(len(langs), 1), 2.8), squeeze=False
    )
    for ax, lang in zip(axes[0], langs, strict=False):
        errors = decisions.loc[
            (decisions["language"] == lang) & decisions["error"].notna(), "error"
        ]
        ax.hist(errors.clip(upper=1.5), bins=20, range=(0, 1.5), color="#4477aa")
        ax.axvline(thresholds.get(lang, thresholds["default"]), color="#cc3311", linestyle="--")
        ax.set_title(f"{lang} (n={len(errors)})")
        ax.set_xlabel("WER/CER of teacher vs reference")
    axes[0][0].set_ylabel("clips")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_filter(labels_dir: Path, cfg: FilterConfig, languages: Iterable[str] = ()) -> FilterReport:
    """Filter every label of ``labels_dir``; write the outputs and return the report."""
    out = Path(cfg.out_dir)
    # the label stage's labels/<lang>.parquet (read here without importing the teacher's torch)
    labels = read_language_tables(labels_dir / "labels", labels_dir)
    if labels.empty:
        raise RuntimeError(f"{labels_dir}: no label files to filter")
    decisions = decide_all(labels, cfg)
    teacher_id = str(labels["teacher_id"].iloc[0])
    lineage = Lineage(git_commit(), section_hash(cfg), combine_hashes(labels["hash"]), teacher_id)
    write_parquet(
        out / "decisions.parquet", pa.Table.from_pandas(decisions, preserve_index=False), lineage
    )
    in_manifest = decisions["kept"].to_numpy(dtype=bool)
    kept = labels[in_manifest].assign(
        label_ok=(decisions["status"] == KEEP).to_numpy()[in_manifest],
        teacher_error=decisions["error"].astype(float).to_numpy()[in_manifest],
    )
    # a table for every language labelled, and for each of ``languages`` (downstream per-language
    # stages depend on their file) even when it has no clip yet
    tables = {*labels["language"], *languages}
    write_language_tables(out / "manifests", kept, out, tables, lineage)
    wer_plot(decisions, out / "wer.png", cfg.max_error)
    report = summarise(decisions, lineage)
    report.write(out / "report.json")
    return report


def _mean(values: pd.Series) -> float | None:
    present = values.dropna()
    return round(float(present.mean()), 4) if len(present) else None


def summarise(decisions: pd.DataFrame, lineage: Lineage) -> FilterReport:
    """Kept and dropped per language and reason; input == kept + dropped. A kept clip whose
    teacher label failed (kept for its reference) is counted under ``reference_only`` too."""
    by_language: dict[str, LanguageFilter] = {}
    for lang, part in decisions.groupby("language", sort=True):
        kept = part["kept"].astype(bool)
        by_language[str(lang)] = LanguageFilter(
            input=len(part),
            kept=int(kept.sum()),
            dropped=_reasons(part.loc[~kept, "status"]),
            mean_error=_mean(part["error"]),
            mean_error_kept=_mean(part.loc[part["status"] == KEEP, "error"]),
            reference_only=_reasons(part.loc[kept & (part["status"] != KEEP), "status"]),
        )
    kept_total = sum(v.kept for v in by_language.values())
    return FilterReport(
        input=len(decisions),
        kept=kept_total,
        dropped=len(decisions) - kept_total,
        by_language=by_language,
        lineage=lineage,
    )


def _reasons(statuses: pd.Series) -> dict[str, int]:
    """Reason -> clips, sorted by reason."""
    return {str(k): int(v) for k, v in sorted(statuses.value_counts().items())}
