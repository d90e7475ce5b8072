"""The results explorer: the word alignment it marks, its rows, and the page itself loaded in a
real headless Chromium (Debian's package), filtered through its address."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from distilflow.evaluate.explorer import explorer_rows, word_ops, write_explorer
from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.models import END, LOOP_GUARD, ClipResult
from distilflow.evaluate.sets import AudioClip, EvalSet

from .helpers import tone_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NASTY = "</script><img src=x onerror=alert(1)> bonjour"


def test_word_ops_mark_what_the_wer_counts() -> None:
    assert word_ops("fr", "Un deux trois quatre.", "un deux troi quatre cinq") == [
        ["ok", "un"], ["ok", "deux"], ["sub", "trois → troi"], ["ok", "quatre"], ["ins", "cinq"],
    ]  # fmt: skip
    assert word_ops("es", "¿Número?", "numero") == [["ok", "numero"]]  # accents stripped
    assert word_ops("en", "hi there", "") == [["del", "hi"], ["del", "there"]]
    assert word_ops("en", "", "hello") == [["ins", "hello"]]
    assert word_ops("ja", "こんにちは", "こんばんは")[:2] == [["ok", "こ"], ["ok", "ん"]]


def test_the_wer_shown_is_the_one_the_evaluation_counts() -> None:
    from distilflow.evaluate.explorer import ops_wer
    from distilflow.text import clip_error_counts

    pairs = [
        ("fr", "Un deux trois quatre.", "un deux troi quatre cinq"),
        ("en", "hi there", ""),
        ("en", "", "hello"),
        ("ja", "こんにちは", "こんばんは"),
        ("es", "hola", "hola hola"),
    ]
    for lang, ref, hyp in pairs:
        errors, words = clip_error_counts(lang, ref, hyp)
        assert ops_wer(word_ops(lang, ref, hyp)) == (round(errors / words, 4) if words else None)


def scored(tmp_path: Path) -> tuple[list[EvalSet], list[PairResult]]:
    """Two sets, three languages, two models; one transcript loops, one carries markup."""
    audio = tmp_path / "audio"
    audio.mkdir()
    clips, by_model = [], {"teacher": [], "student": []}
    texts = [("fr", "un deux trois"), ("fr", "quatre cinq"), ("es", "hola mundo"), ("en", "yes")]
    for i, (lang, ref) in enumerate(texts):
        path = audio / f"c{i}.flac"
        path.write_bytes(tone_bytes(300.0 + 50 * i))
        clips.append(AudioClip(f"c{i}", str(path), lang, ref, f"h{i}"))
        by_model["teacher"].append(ClipResult(f"c{i}", lang, ref, ref, 0.2, 0.1, 3, END))
        hyp, stop = (NASTY, END) if i == 0 else ("hola hola hola", LOOP_GUARD) if i == 2 else (
            ref, END)  # fmt: skip
        by_model["student"].append(ClipResult(f"c{i}", lang, ref, hyp, 0.2, 0.05, 3, stop))
    sets = [EvalSet("dev", tuple(clips[:3])), EvalSet("test", tuple(clips[3:]))]
    results = [
        PairResult(m, s.name, m, m, 10, tuple(c for c in cs if any(x.id == c.id for x in s.clips)))
        for m, cs in by_model.items()
        for s in sets
    ]
    return sets, results


def test_rows_embed_audio_within_the_budget_and_link_beyond(tmp_path: Path) -> None:
    sets, results = scored(tmp_path)
    out = tmp_path / "evaluate"
    out.mkdir()
    rows = explorer_rows(sets, results, out, audio_mb=1.0)
    assert [(r["set"], r["id"]) for r in rows] == [("dev", "c0"), ("dev", "c1"), ("dev", "c2"),
                                                   ("test", "c3")]  # fmt: skip
    assert all(r["audio"].startswith("data:audio/flac;base64,") for r in rows)
    student = rows[2]["models"]["student"]
    assert student["looped"] and student["wer"] == 1.0  # 1 substitution + 1 insertion / 2
    assert rows[0]["models"]["teacher"] == {
        "text": "un deux trois", "wer": 0.0, "looped": False,
        "ops": [["ok", "un"], ["ok", "deux"], ["ok", "trois"]],
    }  # fmt: skip
    linked = explorer_rows(sets, results, out, audio_mb=0.0)
    assert [r["audio"] for r in linked][:2] == ["../audio/c0.flac", "../audio/c1.flac"]


def dom(page: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran, in headless Chromium."""
    assert CHROMIUM
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def body(html: str) -> str:
    return html.split('<tbody id="rows">', 1)[1].split("</tbody>", 1)[0]


def body_rows(html: str) -> list[str]:
    return re.findall(r"<tr [^>]*>", body(html))


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: apt-get install chromium (make install does)"
)
def test_the_page_loads_filters_and_never_runs_a_transcript_as_markup(tmp_path: Path) -> None:
    sets, results = scored(tmp_path)
    out = tmp_path / "evaluate"
    out.mkdir()
    page = write_explorer(out, sets, results, audio_mb=1.0)
    everything = dom(page)
    assert len(body_rows(everything)) == 4 and "4 of 4 clips" in everything
    assert everything.count("<audio") == 4
    assert "<img" not in body(everything)  # the transcript with markup is shown as text
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; bonjour" in body(everything)
    french = dom(page, "#lang=fr")
    assert len(body_rows(french)) == 2 and "2 of 4 clips" in french
    assert all('data-lang="fr"' in r for r in body_rows(french))
    loops = dom(page, "#model=student&loops=1")
    assert len(body_rows(loops)) == 1 and 'data-lang="es"' in body_rows(loops)[0]
    worst = body_rows(dom(page, "#model=student&sort=student"))
    assert 'data-lang="fr"' in worst[0] and 'data-lang="es"' in worst[1]  # WER 267 %, 100 %
    shot = tmp_path / "explorer.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,700",
         f"--screenshot={shot}", "--virtual-time-budget=5000", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG")
