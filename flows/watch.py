"""The inbox watcher: new audio (by content hash) triggers a retrain of the languages it brings.

python -m flows.watch [--project .] [--inline]

Deployed (``prefect.yaml``: ``watch-inbox``, on an interval) it starts a run of the ``retrain``
deployment and returns; ``--inline`` runs the retrain in this process instead (no server needed).
Clips handed to a retrain run that later failed or crashed are handed on again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from prefect import flow

from distilflow.config import inbox_source, load_params
from distilflow.ingest.inbox import load_state, record_handed_on
from flows.retrain import retrain_flow
from tasks.watch import failed_runs, scan_inbox, trigger_retrain

RETRAIN_DEPLOYMENT = "retrain/retrain"


@flow(name="watch-inbox", log_prints=True)
def watch_flow(
    project: str = ".", inline: bool = False, deployment: str = RETRAIN_DEPLOYMENT
) -> dict[str, Any]:
    """Look for new audio in the inbox; start a retrain for it."""
    root = Path(project).resolve()
    params = load_params(root / "params.yaml")
    state_path = root / params.retrain.state_file
    state = load_state(state_path)
    state = failed_runs(state)  # clips of failed runs count as new again
    source = inbox_source(params)
    if "://" not in source.uri and not Path(source.uri).is_absolute():
        source = dataclasses.replace(source, uri=str(root / source.uri))
    found = scan_inbox(source, list(state))
    for problem in found.unreadable:
        print(f"watch: unreadable (ingestion will quarantine it): {problem}")
    result: dict[str, Any] = {"new": len(found.new), "seen": found.seen, "run": None}
    if not found.new:
        print(f"watch: nothing new ({found.seen} clips seen before)")
        return result | {"languages": []}
    languages = None if found.needs_full_run else found.languages
    result["languages"] = languages
    print(f"watch: {len(found.new)} new clips, languages {languages or 'unknown: full run'}")
    if inline:  # recorded once the retrain succeeded: a failed one is retried next tick
        result["retrain"] = retrain_flow(str(root), languages)
        record_handed_on(state_path, state, found.new, "inline")
        return result
    run_id = trigger_retrain(deployment, str(root), languages, [c.sha256 for c in found.new])
    record_handed_on(state_path, state, found.new, run_id)
    result["run"] = run_id
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".")
    parser.add_argument("--inline", action="store_true", help="run the retrain here")
    parser.add_argument("--deployment", default=RETRAIN_DEPLOYMENT)
    args = parser.parse_args()
    result = watch_flow(args.project, args.inline, args.deployment)
    print(json.dumps({k: result.get(k) for k in ("new", "seen", "languages", "run")}))


if __name__ == "__main__":
    main()
