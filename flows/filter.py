"""WER-filter flow: judge every pseudo-label (against the reference, or by the teacher's
confidence); keep the clips whose label passes or whose human reference is usable.

python -m flows.filter [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from distilflow.filter.report import FilterReport
from tasks.filter import filter_labels


def report_markdown(report: FilterReport) -> str:
    lines = [
        "| language | input | kept | of them, for their reference only | dropped | mean WER/CER |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for lang, row in report.by_language.items():
        dropped = ", ".join(f"{k}: {v}" for k, v in row.dropped.items()) or "0"
        ref_only = ", ".join(f"{k}: {v}" for k, v in row.reference_only.items()) or "0"
        lines.append(
            f"| {lang} | {row.input} | {row.kept} | {ref_only} | {dropped} | {row.mean_error} |"
        )
    return "\n".join(lines)


@flow(name="filter", log_prints=True)
def filter_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    params = load_params(params_path)
    # the per-language stages' languages (experts, evaluation) get a manifest before they have data
    languages = (*params.experts.languages, *params.evaluate.languages)
    report = filter_labels(params.filter, params.label.out_dir, tuple(dict.fromkeys(languages)))
    create_markdown_artifact(report_markdown(report), key="filter-report")
    return report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    report = FilterReport.from_dict(filter_flow(parser.parse_args().params))
    print(json.dumps({"input": report.input, "kept": report.kept, "dropped": report.dropped}))


if __name__ == "__main__":
    main()
