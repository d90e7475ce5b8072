"""Export flow: the student to CTranslate2 int8 (faster-whisper), verified against torch.

python -m flows.export [--params params.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distilflow.config import load_params
from distilflow.export.report import ExportVerification
from tasks.export import export_student, verify_student_export


def report_markdown(info: dict[str, Any], verification: ExportVerification) -> str:
    v = verification
    fw = {k: x for k, x in v.faster_whisper.to_dict().items() if k != "texts"}
    return "\n".join(
        [
            f"Export: {info['quantization']}, language {info['language']}, "
            f"source {info['source_fingerprint']}, ctranslate2 {info['ctranslate2_version']}",
            "",
            "| clips | identical tokens | identical text | token agreement | WER vs torch "
            "| WER vs torch, no loops | export-only loops |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {v.clips} | {v.identical_tokens_share:.3f} | {v.exact_text_share:.3f} "
            f"| {v.mean_token_agreement:.3f} | {v.wer_vs_torch:.4f} "
            f"| {v.wer_vs_torch_settled:.4f} | {v.export_loop_clips} |",
            "",
            f"faster-whisper: {json.dumps(fw)}",
        ]
    )


@flow(name="export", log_prints=True)
def export_flow(params_path: str = "params.yaml", language: str | None = None) -> dict[str, Any]:
    """Export the student; ``language`` (e.g. "fr") overrides ``export.language``."""
    params = load_params(params_path)
    if language is not None:
        params = dataclasses.replace(
            params, export=dataclasses.replace(params.export, language=language)
        )
    info = export_student(params)
    verification = verify_student_export(params)
    create_markdown_artifact(report_markdown(info, verification), key="export-report")
    return {"export": info, "verification": verification.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    result = export_flow(parser.parse_args().params)
    summary = {k: v for k, v in result["verification"].items() if k not in ("per_clip",)}
    summary["faster_whisper"] = {k: v for k, v in summary["faster_whisper"].items() if k != "texts"}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
