"""CommonVoiceSource on a small Common Voice release layout built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from distilflow.sources.base import (
    BAD_METADATA,
    MISSING_FILE,
    PATH_ESCAPES_ROOT,
    SourceError,
)
from distilflow.sources.commonvoice import CommonVoiceSource, looks_like_locale

from .helpers import by_id, tone_bytes

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"


def cv_row(client: str, path: str, sentence: str, locale: str = "fr") -> str:
    """One line of a Common Voice TSV with all ten columns."""
    return "\t".join([client, path, sentence, "2", "0", "twenties", "female", "", locale, ""])


def make_release(root: Path, lines: list[str], clips: dict[str, bytes], split: str) -> Path:
    """Write ``<root>/<split>.tsv`` and ``<root>/clips/*``."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    for name, data in clips.items():
        (root / "clips" / name).write_bytes(data)
    (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A French release: good rows, an escape, a missing clip and malformed rows."""
    clips = {"cv_fr_1.mp3": tone_bytes(440, "MP3"), "cv_fr_2.mp3": tone_bytes(660, "MP3")}
    (tmp_path / "secret.mp3").write_bytes(b"not yours")
    lines = [
        HEADER,
        cv_row("spk1", "cv_fr_1.mp3", 'Il a dit "bonjour" à tous.'),
        cv_row("spk2", "cv_fr_2.mp3", "  Deuxième phrase.  ", locale=""),
        cv_row("spk3", "../../secret.mp3", "Sortie."),
        cv_row("spk4", "/etc/passwd", "Absolu."),
        cv_row("spk5", "cv_fr_missing.mp3", "Absent."),
        cv_row("spk6", "cv_fr_1.mp3", "Trop") + "\textra",
        "spk7\tcv_fr_2.mp3\tTrop court",
        cv_row("spk8", "", "Sans chemin."),
        "",
    ]
    return make_release(tmp_path / "fr", lines, clips, "validated")


def test_good_rows_give_text_language_speaker_and_bytes(release: Path) -> None:
    items = by_id(list(CommonVoiceSource(release).items()))
    first, second = items["cv_fr_1.mp3"], items["cv_fr_2.mp3"]
    assert first.problem is None and second.problem is None
    assert first.text == 'Il a dit "bonjour" à tous.'  # QUOTE_NONE keeps the quotes
    assert second.text == "Deuxième phrase."
    assert (first.language, first.speaker) == ("fr", "spk1")
    assert second.language == "fr"  # empty locale: the release folder's name
    assert first.read() == (release / "clips" / "cv_fr_1.mp3").read_bytes()
    assert first.source == str(release)


def test_nothing_is_dropped_and_problems_are_named(release: Path) -> None:
    items = list(CommonVoiceSource(release).items())
    assert len(items) == 8  # every non-blank data row
    problems = {item.source_id: item.problem for item in items if item.problem}
    assert problems == {
        "../../secret.mp3": PATH_ESCAPES_ROOT,
        "/etc/passwd": PATH_ESCAPES_ROOT,
        "cv_fr_missing.mp3": MISSING_FILE,
        "validated.tsv:7": BAD_METADATA,
        "validated.tsv:8": BAD_METADATA,
        "validated.tsv:9": BAD_METADATA,
    }
    details = {item.source_id: item.detail for item in items}
    assert "11 fields" in details["validated.tsv:7"]
    assert "empty 'path'" in details["validated.tsv:9"]


def test_problem_items_refuse_to_read(release: Path) -> None:
    items = by_id(list(CommonVoiceSource(release).items()))
    with pytest.raises(SourceError, match="secret"):
        items["../../secret.mp3"].read()
    with pytest.raises(SourceError, match="cv_fr_missing"):
        items["cv_fr_missing.mp3"].read()
    with pytest.raises(SourceError, match=r"validated\.tsv:7"):
        items["validated.tsv:7"].read()


def test_minimal_columns_and_configured_language(tmp_path: Path) -> None:
    root = make_release(
        tmp_path / "cv-corpus-17",
        ["path\tsentence", "a.mp3\tHola.", "b.mp3\t"],
        {"a.mp3": tone_bytes(fmt="MP3"), "b.mp3": tone_bytes(330, "MP3")},
        "test",
    )
    plain = by_id(list(CommonVoiceSource(root, split="test").items()))
    assert plain["a.mp3"].language is None  # folder name is not a locale, nothing configured
    assert plain["a.mp3"].speaker is None
    assert plain["b.mp3"].text is None  # blank sentence: unlabelled, not dropped
    configured = by_id(list(CommonVoiceSource(root, split="test", language="es").items()))
    assert configured["a.mp3"].language == "es"
    assert configured["a.mp3"].text == "Hola."


def test_locale_column_wins_over_configured_language(release: Path) -> None:
    items = by_id(list(CommonVoiceSource(release, language="de").items()))
    assert items["cv_fr_1.mp3"].language == "fr"  # row locale
    assert items["cv_fr_2.mp3"].language == "de"  # empty locale: configured language


def test_invalid_utf8_row_is_bad_metadata(tmp_path: Path) -> None:
    root = tmp_path / "ca"
    make_release(
        root, ["path\tsentence", "a.mp3\tBon dia."], {"a.mp3": tone_bytes(fmt="MP3")}, "dev"
    )
    with (root / "dev.tsv").open("ab") as fh:
        fh.write(b"b.mp3\tbad \xff byte\n")
    items = list(CommonVoiceSource(root, split="dev").items())
    assert [i.problem for i in items] == [None, BAD_METADATA]
    assert "UTF-8" in items[1].detail
    assert items[0].language == "ca"


def test_missing_split_file_or_path_column_raises(tmp_path: Path) -> None:
    root = make_release(tmp_path / "en", ["sentence", "Hello."], {}, "train")
    with pytest.raises(SourceError, match=r"no validated\.tsv"):
        list(CommonVoiceSource(root).items())
    with pytest.raises(SourceError, match="'path' column"):
        list(CommonVoiceSource(root, split="train").items())
    with pytest.raises(SourceError, match="does not exist"):
        list(CommonVoiceSource(tmp_path / "nowhere").items())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fr", True),
        ("sv-SE", True),
        ("yue", True),
        ("rm-sursilv", True),
        ("data", False),
        ("cv-corpus-17", False),
    ],
)
def test_looks_like_locale(name: str, expected: bool) -> None:
    assert looks_like_locale(name) is expected
