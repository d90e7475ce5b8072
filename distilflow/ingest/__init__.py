"""Ingestion: source items to a validated FLAC store, per-language manifests, quarantine."""
