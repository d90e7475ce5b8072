"""Ingestion flow: configured sources -> manifests, FLAC store, quarantine and report.

python -m flows.ingest [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from distilflow.ingest.report import IngestReport
from tasks.ingest import ingest_sources


def report_markdown(report: IngestReport) -> str:
    """A small table of kept and quarantined clips per language."""
    lines = ["| language | kept | quarantined |", "| --- | --- | --- |"]
    for lang, row in report.by_language.items():
        reasons = ", ".join(f"{r}: {n}" for r, n in row.quarantined.items()) or "0"
        lines.append(f"| {lang} | {row.kept} | {reasons} |")
    total = f"**{report.input} input = {report.kept} kept + {report.quarantined} quarantined**"
    return "\n".join([total, "", *lines])


@flow(name="ingest", log_prints=True)
def ingest_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Validate and store every configured source; the report, as a plain dict."""
    params = load_params(params_path)
    report = ingest_sources(params.ingest)
    create_markdown_artifact(report_markdown(report), key="ingest-report")
    return report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    report = IngestReport.from_dict(ingest_flow(args.params))
    print(
        json.dumps({"input": report.input, "kept": report.kept, "quarantined": report.quarantined})
    )


if __name__ == "__main__":
    main()
