"""The results explorer: one self-contained HTML page (no server) with every scored clip: its
audio, its reference and each model's transcript side by side, word errors marked as the WER
counts them, sortable and filterable by set, language, loops, WER and text.

``word_ops`` and ``explorer_rows`` are pure; ``explorer_html`` renders the page (the data as
JSON, the table built by the page's script with text nodes only: a transcript can never inject
markup). The filters live in the address's fragment (``#lang=fr&loops=1&sort=student``), so a
view can be shared as a link. Audio is embedded as data URIs up to a budget
(``evaluate.explorer_audio_mb``), linked by relative path beyond it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilflow.evaluate.metrics import PairResult
from distilflow.evaluate.sets import EvalSet
from distilflow.languages import NO_SPACE_LANGUAGES
from distilflow.text import clip_alignment

EXPLORER = "explorer.html"
MIME = {".flac": "audio/flac", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


def word_ops(language: str, reference: str, hypothesis: str) -> list[list[str]]:
    """The hypothesis against the reference as the WER aligns them (``clip_alignment``):
    ``[op, text]`` with op ``ok``, ``sub`` (text ``ref → hyp``), ``del`` (a reference word
    missing) or ``ins`` (a word added); characters for languages without spaces. Pure."""
    _, hyp, out = clip_alignment(language, reference, hypothesis)
    if out is None:  # nothing to align against: every word is added
        return [["ins", w] for w in (list(hyp) if language in NO_SPACE_LANGUAGES else hyp.split())]
    r_words, h_words = list(out.references[0]), list(out.hypotheses[0])
    ops: list[list[str]] = []
    for chunk in out.alignments[0]:
        r = r_words[chunk.ref_start_idx : chunk.ref_end_idx]
        h = h_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            ops += [["ok", w] for w in h]
        elif chunk.type == "substitute":
            ops += [["sub", f"{a} → {b}"] for a, b in zip(r, h, strict=True)]
        elif chunk.type == "delete":
            ops += [["del", w] for w in r]
        else:
            ops += [["ins", w] for w in h]
    return ops


def ops_wer(ops: Sequence[Sequence[str]]) -> float | None:
    """The clip's WER from its ops (``clip_error_counts``' figure), None without reference
    words. Pure."""
    words = sum(op in ("ok", "sub", "del") for op, _ in ops)
    errors = sum(op != "ok" for op, _ in ops)
    return round(errors / words, 4) if words else None


def audio_source(path: Path, out_dir: Path, embed: bool) -> str:
    """A data URI of the file (``embed``), else its path relative to the page."""
    if embed:
        mime = MIME.get(path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return Path(os.path.relpath(path, out_dir)).as_posix()


def explorer_rows(
    sets: Sequence[EvalSet], results: Sequence[PairResult], out_dir: Path, audio_mb: float
) -> list[dict[str, Any]]:
    """One row per scored clip: set, id, language, duration, reference, audio, and per model
    its transcript, WER, error ops and whether it looped. Audio is embedded while the total
    stays within ``audio_mb`` (clips in set order), linked after."""
    by_clip = {(s.name, c.id): c for s in sets for c in s.clips}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    budget = audio_mb * 2**20
    for result in results:
        for clip in result.clips:
            key = (result.eval_set, clip.id)
            row = rows.get(key)
            if row is None:
                audio = by_clip.get(key)
                src = ""
                if audio is not None and Path(audio.path).is_file():
                    size = Path(audio.path).stat().st_size
                    embed = size <= budget
                    budget -= size if embed else 0
                    src = audio_source(Path(audio.path), out_dir, embed)
                row = rows[key] = {
                    "set": result.eval_set,
                    "id": clip.id,
                    "language": clip.language,
                    "seconds": round(clip.audio_s, 2),
                    "reference": clip.reference,
                    "audio": src,
                    "models": {},
                }
            ops = word_ops(clip.language, clip.reference, clip.hypothesis)
            row["models"][result.model] = {
                "text": clip.hypothesis,
                "wer": ops_wer(ops),
                "ops": ops,
                "looped": clip.looped,
            }
    return list(rows.values())


def explorer_html(rows: Sequence[dict[str, Any]], models: Sequence[str], title: str) -> str:
    """The page: ``rows`` (``explorer_rows``) of ``models``, in that column order."""
    data = json.dumps({"models": list(models), "rows": list(rows)}, ensure_ascii=False)
    data = data.replace("</", "<\\/")  # no "</script>" inside the script
    return (
        PAGE.replace("__TITLE__", title.replace("&", "&amp;").replace("<", "&lt;"))
        .replace("__DATA__", data)
        .replace("__SCRIPT__", SCRIPT)
    )


def write_explorer(
    out_dir: Path,
    sets: Sequence[EvalSet],
    results: Sequence[PairResult],
    audio_mb: float,
    title: str = "distilflow evaluation",
) -> Path:
    """``out_dir/explorer.html`` (atomic)."""
    from distilflow.atomic import atomic_write_bytes

    rows = explorer_rows(sets, results, out_dir, audio_mb)
    models = list(dict.fromkeys(r.model for r in results))
    path = out_dir / EXPLORER
    atomic_write_bytes(path, explorer_html(rows, models, title).encode("utf-8"))
    return path


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem; color: #222; }
#filters { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; margin: .5rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .4rem; vertical-align: top; }
th { position: sticky; top: 0; background: #f6f6f6; text-align: left; }
th.sortable { cursor: pointer; text-decoration: underline dotted; }
td.ref { color: #333; max-width: 22rem; }
.w { font-variant-numeric: tabular-nums; color: #555; font-size: 12px; }
.sub { background: #fde2a8; } .del { background: #f8c4c4; text-decoration: line-through; }
.ins { background: #c9e8ff; } .loop { color: #b00; font-weight: bold; }
.raw { color: #777; font-size: 12px; }
audio { width: 11rem; height: 2rem; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p>Each clip with its reference and every model's transcript, words as the WER aligns them
(Whisper's normaliser, accents stripped): <span class="sub">substituted ref → hyp</span>,
<span class="del">missing</span>, <span class="ins">added</span>; in grey under them, the
transcript as the model wrote it; <span class="loop">loop</span>:
the repetition guard cut the transcript or it ran into the token budget. Click a model's
heading to sort by its WER. The filters are kept in the address, to share a view.</p>
<div id="filters">
<label>set <select id="set"></select></label>
<label>language <select id="lang"></select></label>
<label>model <select id="model"></select></label>
<label>WER of that model at least <input id="minwer" type="number" min="0" step="0.1"
 value="0" style="width:4rem"></label>
<label><input id="loops" type="checkbox"> loops only</label>
<label>text <input id="q" type="search" placeholder="in reference or transcripts"></label>
<span id="count"></span>
</div>
<table><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
<script type="application/json" id="data">__DATA__</script>
<script>__SCRIPT__</script>
</body></html>
"""

SCRIPT = """
const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
function options(select, values) {
  for (const v of ["all", ...values]) select.appendChild(el("option", "", v));
}
options($("set"), [...new Set(DATA.rows.map((r) => r.set))].sort());
options($("lang"), [...new Set(DATA.rows.map((r) => r.language))].sort());
for (const m of DATA.models) $("model").appendChild(el("option", "", m));
let sortBy = null;
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("set")) $("set").value = h.get("set");
  if (h.has("lang")) $("lang").value = h.get("lang");
  if (h.has("model")) $("model").value = h.get("model");
  if (h.has("minwer")) $("minwer").value = h.get("minwer");
  $("loops").checked = h.get("loops") === "1";
  if (h.has("q")) $("q").value = h.get("q");
  sortBy = h.get("sort");
}
function writeHash() {
  const h = new URLSearchParams();
  for (const k of ["set", "lang"]) if ($(k).value !== "all") h.set(k, $(k).value);
  h.set("model", $("model").value);
  if (Number($("minwer").value) > 0) h.set("minwer", $("minwer").value);
  if ($("loops").checked) h.set("loops", "1");
  if ($("q").value) h.set("q", $("q").value);
  if (sortBy) h.set("sort", sortBy);
  history.replaceState(null, "", "#" + h.toString());
}
function head() {
  const tr = $("head");
  tr.replaceChildren();
  for (const t of ["set", "clip", "lang", "reference"]) tr.appendChild(el("th", "", t));
  for (const m of DATA.models) {
    const th = el("th", "sortable", m + (sortBy === m ? " ▼" : ""));
    th.dataset.model = m;
    th.onclick = () => { sortBy = sortBy === m ? null : m; render(); };
    tr.appendChild(th);
  }
}
function transcript(m) {
  const td = el("td");
  if (!m) { td.textContent = "–"; return td; }
  const words = el("div");
  for (const [op, w] of m.ops) {
    words.appendChild(op === "ok" ? document.createTextNode(w) : el("span", op, w));
    words.appendChild(document.createTextNode(" "));
  }
  td.appendChild(words);
  td.appendChild(el("div", "raw", m.text));
  const wer = m.wer === null ? "WER –" : "WER " + (100 * m.wer).toFixed(0) + " %";
  const meta = el("div", "w", wer);
  if (m.looped) meta.appendChild(el("span", "loop", " loop"));
  td.appendChild(meta);
  return td;
}
function keep(r) {
  const set = $("set").value, lang = $("lang").value, model = $("model").value;
  const q = $("q").value.toLowerCase(), minwer = Number($("minwer").value) / 100;
  if (set !== "all" && r.set !== set) return false;
  if (lang !== "all" && r.language !== lang) return false;
  const m = r.models[model];
  if ($("loops").checked && !(m && m.looped)) return false;
  if (minwer > 0 && !(m && m.wer !== null && m.wer >= minwer)) return false;
  if (q) {
    const texts = [r.reference, ...Object.values(r.models).map((x) => x.text)];
    if (!texts.some((t) => t.toLowerCase().includes(q))) return false;
  }
  return true;
}
function render() {
  writeHash();
  head();
  let rows = DATA.rows.filter(keep);
  if (sortBy) {
    const w = (r) => {
      const m = r.models[sortBy];
      return m && m.wer !== null ? m.wer : -1;
    };
    rows = rows.slice().sort((a, b) => w(b) - w(a));
  }
  const body = $("rows");
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr");
    tr.dataset.set = r.set;
    tr.dataset.lang = r.language;
    tr.appendChild(el("td", "", r.set));
    const clip = el("td", "", r.id + " (" + r.seconds + " s)");
    if (r.audio) {
      const a = el("audio");
      a.controls = true;
      a.preload = "none";
      a.src = r.audio;
      clip.appendChild(el("br"));
      clip.appendChild(a);
    }
    tr.appendChild(clip);
    tr.appendChild(el("td", "", r.language));
    tr.appendChild(el("td", "ref", r.reference));
    for (const m of DATA.models) tr.appendChild(transcript(r.models[m]));
    body.appendChild(tr);
  }
  $("count").textContent = rows.length + " of " + DATA.rows.length + " clips";
}
readHash();
for (const id of ["set", "lang", "model", "minwer", "loops", "q"]) $(id).oninput = render;
window.addEventListener("hashchange", () => { readHash(); render(); });
render();
"""
