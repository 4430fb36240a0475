"""The batch's HTML index: one static page (no scripts, no network) with a row per slide.

Each row shows the slide's blur-map thumbnail (its report's ``blurmap.png``, linked relatively so the output
folder can be moved or served as it is), the blur burden per class, what was restored and the recommendation;
slides to rescan come first, failed slides name their reason.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from ._types import LABELS
from .report import REPORT_FILES

_ORDER = {"rescan": 0, "check file": 1, "ok": 2, "no tissue": 3}
_COLOURS = {"rescan": "#b00020", "check file": "#8a5a00", "ok": "#1b5e20", "no tissue": "#555"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4rem 0.6rem; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 220px; max-height: 160px; }
.tag { font-weight: 600; }
.error { color: #b00020; }
"""


def _pct(value: Any) -> str:
    return "" if value is None else f"{100 * float(value):.1f}%"


def _link(target: str, outdir: Path) -> str:
    """``target`` relative to the page (falls back to the path as given when it is elsewhere)."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), outdir.resolve())).as_posix()
    except ValueError:
        return Path(target).as_posix()


def _row(row: dict[str, Any], outdir: Path) -> str:
    e = html.escape
    report = _link(row["report"], outdir)
    thumb_path = Path(row["report"]) / REPORT_FILES["png"]
    thumb = (f'<a href="{e(report)}/{REPORT_FILES["png"]}"><img alt="blur map of {e(row["slide"])}" '
             f'src="{e(report)}/{REPORT_FILES["png"]}"></a>' if thumb_path.exists() else "")
    rec = row["recommendation"]
    classes = "".join(f'<td class="num">{_pct(row.get(f"{c}_fraction"))}</td>' for c in LABELS)
    outputs = " ".join(f'<a href="{e(_link(o, outdir))}">{e(Path(o).name)}</a>' for o in row["outputs"]
                       if Path(o).exists())
    detail = f'<div class="error">{e(row["error"])}</div>' if row.get("error") else ""
    return (
        f'<tr data-slide="{e(row["slide"])}" data-status="{e(row["status"])}">'
        f"<td>{e(row['slide'])}{detail}</td><td>{thumb}</td>"
        f'<td class="tag" style="color:{_COLOURS.get(rec, "#222")}">{e(rec)}</td>'
        f'<td class="num">{_pct(row.get("blurred_fraction"))}</td>{classes}'
        f'<td class="num">{_pct(row.get("restored_fraction"))}</td>'
        f"<td>{e(row['status'])}</td><td>{outputs}</td></tr>"
    )


def render_index(document: dict[str, Any], outdir: Path) -> str:
    """The index page for a batch summary document (as written to ``batch_summary.json``)."""
    e = html.escape
    rows = sorted(document["results"], key=lambda r: (_ORDER.get(r["recommendation"], 9), r["slide"]))
    head = "".join(f"<th>{e(h)}</th>" for h in (
        "slide", "blur map", "recommendation", "blurred", *LABELS,
        "to restore" if document.get("qc_only") else "restored", "status", "outputs"))
    body = "\n".join(_row(r, outdir) for r in rows)
    summary = (
        f"{document['slides']} slides: {document['done']} processed now, {document['skipped']} complete from "
        f"earlier runs, {document['failed']} failed; <strong>{document['rescan']} to rescan</strong> (blurred "
        f"share of the tissue above {100 * document['rescan_above']:.0f}%)."
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>wsi-deblur batch: {document['slides']} slides</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>Blur QC of {document['slides']} slides</h1>\n<p id=\"summary\">{summary}</p>\n"
        f"<table id=\"slides\"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n"
        f"<p><small>{e(document['software'])}, {e(document['written'])}. Per-slide details: each report folder's "
        "summary.json and tiles.csv; all slides: batch_summary.json and batch_summary.csv.</small></p>\n"
        "</body></html>\n"
    )
