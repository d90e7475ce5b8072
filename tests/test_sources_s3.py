"""S3Source against a moto S3 server started inside the test (fake credentials, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    PATH_ESCAPES_ROOT,
    SourceError,
)
from distilflow.sources.s3 import S3Source, escapes_prefix, parse_s3_uri

from .helpers import by_id, tone_bytes
from .stack import moto_s3

BUCKET = "corpus"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A moto S3 server on a free local port; yields its endpoint URL."""
    with moto_s3([]) as endpoint:
        yield endpoint


@pytest.fixture
def endpoint(server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    """Fake credentials from the environment only (no shared files, no profile)."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return server


@pytest.fixture
def bucket(endpoint: str) -> Iterator[Any]:
    """An empty bucket, removed again after the test (moto keeps state per server)."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def put(s3: Any, key: str, body: bytes) -> None:
    """Upload one object."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def jsonl(rows: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> bytes:
    """A metadata.jsonl body."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows] + list(extra_lines)
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture
def audiofolder(bucket: Any) -> dict[str, bytes]:
    """``s3://corpus/data/v1``: three clips, metadata with a missing clip, an escape, bad lines."""
    clips = {
        "a.flac": tone_bytes(440),
        "sub/b.wav": tone_bytes(550, "WAV"),
        "unlisted.flac": tone_bytes(660),
    }
    for name, body in clips.items():
        put(bucket, f"data/v1/{name}", body)
    put(bucket, "data/v1/notes.txt", b"not audio")
    put(bucket, "data/v1x/other.flac", tone_bytes(100))  # shares the prefix string, not the folder
    put(bucket, "elsewhere/secret.flac", tone_bytes(200))
    rows = [
        {"file_name": "a.flac", "text": " Bonjour. ", "language": "fr", "speaker": "s1"},
        {"file_name": "sub/b.wav", "transcription": "Hallo.", "language": "de"},
        {"file_name": "gone.flac", "text": "Missing.", "language": "fr"},
        {"file_name": "../../elsewhere/secret.flac", "text": "Escape.", "language": "fr"},
        {"file_name": "/data/v1/a.flac", "text": "Absolute.", "language": "fr"},
        {"text": "No file name."},
    ]
    put(bucket, "data/v1/metadata.jsonl", jsonl(rows, ("{not json",)))
    return clips


def test_items_texts_languages_and_reads(endpoint: str, audiofolder: dict[str, bytes]) -> None:
    source = S3Source("s3://corpus/data/v1/", endpoint_url=endpoint)
    items = by_id(list(source.items()))
    a, b = items["a.flac"], items["sub/b.wav"]
    assert (a.text, a.language, a.speaker, a.problem) == ("Bonjour.", "fr", "s1", None)
    assert (b.text, b.language, b.speaker, b.problem) == ("Hallo.", "de", None, None)
    assert a.source == "s3://corpus/data/v1"
    assert a.read() == audiofolder["a.flac"]
    assert b.read() == audiofolder["sub/b.wav"]


def test_unlisted_audio_is_kept_unlabelled(endpoint: str, audiofolder: dict[str, bytes]) -> None:
    items = by_id(list(S3Source("s3://corpus/data/v1", endpoint, language="en").items()))
    unlisted = items["unlisted.flac"]
    assert (unlisted.text, unlisted.language, unlisted.problem) == (None, "en", None)
    assert unlisted.read() == audiofolder["unlisted.flac"]
    assert "notes.txt" not in items and "metadata.jsonl" not in items
    assert not any("other.flac" in sid for sid in items)  # data/v1x is another prefix


def test_missing_escaping_and_malformed_rows(endpoint: str, audiofolder: dict[str, bytes]) -> None:
    items = list(S3Source("s3://corpus/data/v1", endpoint).items())
    assert len(items) == 8  # 6 metadata rows + 1 line that is not JSON + 1 unlisted clip
    problems = {i.source_id: i.problem for i in items if i.problem}
    assert problems == {
        "gone.flac": MISSING_FILE,
        "../../elsewhere/secret.flac": PATH_ESCAPES_ROOT,
        "/data/v1/a.flac": PATH_ESCAPES_ROOT,
        "metadata:6": BAD_METADATA,
        "metadata:7": BAD_METADATA,
    }
    found = by_id(items)
    assert found["metadata:6"].detail.startswith("metadata line 6 has no file_name")
    assert found["metadata:7"].detail.startswith("metadata line 7 is not valid JSON")
    with pytest.raises(SourceError, match="does not exist"):
        found["gone.flac"].read()
    with pytest.raises(SourceError, match="secret"):
        found["../../elsewhere/secret.flac"].read()


def test_csv_metadata_and_bucket_root(endpoint: str, bucket: Any) -> None:
    put(bucket, "x.ogg", tone_bytes(300, "OGG"))
    put(bucket, "metadata.csv", b"file_name,text,language\nx.ogg,Hej.,sv\n")
    items = list(S3Source("s3://corpus", endpoint).items())
    assert [(i.source_id, i.text, i.language) for i in items] == [("x.ogg", "Hej.", "sv")]
    assert items[0].read()[:4] == b"OggS"


def test_no_metadata_lists_every_audio_object(endpoint: str, bucket: Any) -> None:
    for n in range(3):
        put(bucket, f"raw/{n}.wav", tone_bytes(200 + n, "WAV"))
    items = list(S3Source("s3://corpus/raw", endpoint).items())
    assert [i.source_id for i in items] == ["0.wav", "1.wav", "2.wav"]
    assert all(i.text is None and i.problem is None for i in items)


def test_object_deleted_after_listing_is_a_read_error(endpoint: str, bucket: Any) -> None:
    put(bucket, "late/x.flac", tone_bytes())
    (item,) = list(S3Source("s3://corpus/late", endpoint).items())
    bucket.delete_object(Bucket=BUCKET, Key="late/x.flac")
    with pytest.raises(SourceError, match=r"s3://corpus/late/x\.flac: object does not exist"):
        item.read()


def test_missing_bucket_raises(endpoint: str) -> None:
    with pytest.raises(SourceError, match="cannot list objects"):
        list(S3Source("s3://no-such-bucket/x", endpoint).items())


def test_uri_helpers() -> None:
    assert parse_s3_uri("s3://b/some/prefix/") == ("b", "some/prefix")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(SourceError):
        parse_s3_uri("https://b/x")
    assert escapes_prefix("../x.wav") and escapes_prefix("a/../../x.wav")
    assert escapes_prefix("/abs.wav") and escapes_prefix("..\\x.wav")
    assert not escapes_prefix("a/b..c.wav")


def test_s3_source_through_ingestion_config(endpoint: str, tmp_path: Any) -> None:
    """params.yaml-style config: an S3 prefix is ingested like a local folder."""
    import json

    import boto3

    from distilflow.config import IngestConfig, SourceConfig
    from distilflow.ingest.stage import ingest
    from distilflow.sources import iter_items

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="ingest-e2e")
    s3.put_object(Bucket="ingest-e2e", Key="corpus/a.flac", Body=tone_bytes(440.0, seconds=0.5))
    s3.put_object(Bucket="ingest-e2e", Key="corpus/b.flac", Body=b"broken")
    meta = [
        {"file_name": "a.flac", "text": "hola", "language": "es"},
        {"file_name": "b.flac", "text": "x", "language": "es"},
    ]
    body = "".join(json.dumps(m) + "\n" for m in meta).encode()
    s3.put_object(Bucket="ingest-e2e", Key="corpus/metadata.jsonl", Body=body)
    cfg = IngestConfig(
        sources=[SourceConfig(kind="s3", uri="s3://ingest-e2e/corpus", endpoint_url=endpoint)],
        out_dir=str(tmp_path / "out"),
        max_duration_s=30.0,
        min_duration_s=0.05,
        silence_peak=0.0,
        languages=[],
        progress=False,
    )
    report = ingest(iter_items(cfg.sources), cfg).report
    assert (report.input, report.kept, report.by_reason) == (2, 1, {"unreadable": 1})
