"""``wsi-deblur batch``: every slide in a folder, one output and QC report per slide, one page for the lab.

A nightly job points this at the day's scans. Slides are found by their endings (:data:`SLIDE_PATTERNS`, or
``--include``/``--exclude`` globs); each one's outputs and report go to the same relative place under the output
folder (``OUTDIR/sub/NAME.ome.zarr``, ``OUTDIR/sub/NAME.report/``), so two slides never share an output and no
output can land outside ``OUTDIR``. A slide whose report is complete (its ``summary.json`` is written last), newer
than the slide and naming every output that exists is skipped before any cluster starts. The slides left run one
after the other on one cluster (the local one, or ``--scheduler``), so the models load once per worker. One bad
slide never stops the others: its reason is recorded and the batch exits 1 at the end. ``batch_summary.json``,
``batch_summary.csv`` and ``index.html`` cover every slide found (done now, done earlier, failed), with a rescan
recommendation where the blurred share of the tissue exceeds the threshold.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._types import LABELS, OutputError, UsageError
from ._version import __version__
from .pipeline import RunOptions, output_kind
from .report import REPORT_FILES, read_summary

logger = logging.getLogger(__name__)

#: Slide files found by default (OpenSlide's and tiffslide's formats; a DICOM series needs its folder, not listed).
SLIDE_PATTERNS: tuple[str, ...] = (
    "*.svs", "*.tif", "*.tiff", "*.ndpi", "*.vms", "*.vmu", "*.scn", "*.mrxs", "*.svslide", "*.bif",
)
#: Output formats by the ending they give the output file.
FORMATS: tuple[str, ...] = ("ome.zarr", "tif", "ome.tif")
#: Default blurred share of the tissue area above which a rescan is recommended.
DEFAULT_RESCAN_ABOVE = 0.10
SUMMARY_JSON = "batch_summary.json"
SUMMARY_CSV = "batch_summary.csv"
INDEX_HTML = "index.html"
#: Endings stripped from a slide's name to make its outputs' names (longest first).
_SLIDE_ENDINGS = (".ome.tiff", ".ome.tif")


@dataclass(frozen=True)
class BatchOptions:
    """What a batch does besides the per-slide run options."""

    recursive: bool = False
    include: tuple[str, ...] = SLIDE_PATTERNS
    exclude: tuple[str, ...] = ()
    formats: tuple[str, ...] = ("ome.zarr",)
    qc_only: bool = False
    rescan_above: float = DEFAULT_RESCAN_ABOVE
    run: RunOptions = field(default_factory=RunOptions)

    def check(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {', '.join(unknown)}")
        if not self.formats and not self.qc_only:
            raise UsageError("give at least one --format, or --qc-only")
        if not 0.0 <= self.rescan_above <= 1.0:
            raise UsageError(f"--rescan-above must be a fraction within 0..1, not {self.rescan_above}")
        if not self.include:
            raise UsageError("--include needs at least one pattern")
        self.run.check()


@dataclass(frozen=True)
class SlideJob:
    """One slide of a batch and where its results go."""

    slide: Path
    relative: Path  # the slide's path under the input folder
    outputs: tuple[Path, ...]
    report_dir: Path


@dataclass
class SlideOutcome:
    """What became of one slide: ``status`` is done, skipped (complete before) or failed."""

    job: SlideJob
    status: str
    error: str = ""
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchResult:
    outcomes: list[SlideOutcome]
    outdir: Path

    @property
    def failed(self) -> list[SlideOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def find_slides(folder: Path, options: BatchOptions, outdir: Path | None = None) -> list[Path]:
    """Slide files under ``folder`` matching the include patterns and none of the exclude ones, sorted. Hidden
    entries, and anything inside ``outdir`` when it lies within ``folder``, are left out."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder of slides")
    skip = outdir.resolve() if outdir is not None else None
    candidates = folder.rglob("*") if options.recursive else folder.iterdir()
    found = []
    for path in candidates:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        if any(part.endswith(".ome.zarr") or part.endswith(".partial") for part in rel.parts[:-1]):
            continue
        name = path.name.lower()
        rel_text = rel.as_posix()
        if not any(fnmatch.fnmatch(name, p.lower()) for p in options.include):
            continue
        if any(fnmatch.fnmatch(name, p.lower()) or fnmatch.fnmatch(rel_text, p) for p in options.exclude):
            continue
        found.append(path)
    return sorted(found)


def _stem(name: str) -> str:
    lower = name.lower()
    for ending in _SLIDE_ENDINGS:
        if lower.endswith(ending):
            return name[: -len(ending)]
    return name.rsplit(".", 1)[0] if "." in name else name


def plan(slide: Path, folder: Path, outdir: Path, options: BatchOptions) -> SlideJob:
    """Where ``slide``'s outputs and report go: its relative folder under ``outdir``, named after the slide."""
    relative = slide.relative_to(folder)
    base = outdir / relative.parent
    stem = _stem(slide.name)
    root = outdir.resolve()
    if not (base / stem).resolve().is_relative_to(root):
        raise OutputError(f"{slide}: its output would land outside {outdir}")
    outputs = () if options.qc_only else tuple(base / f"{stem}.{fmt}" for fmt in options.formats)
    for out in outputs:
        output_kind(out)
    return SlideJob(slide=slide, relative=relative, outputs=outputs, report_dir=base / f"{stem}.report")


def completed_summary(job: SlideJob) -> dict[str, Any] | None:
    """The report summary of a slide finished earlier with these outputs, or None when it must (re)run."""
    summary_path = job.report_dir / REPORT_FILES["summary"]
    try:
        summary = read_summary(job.report_dir)
        if summary_path.stat().st_mtime < job.slide.stat().st_mtime:
            return None  # the slide changed since
    except (OSError, ValueError):
        return None
    if summary.get("slide_path") != str(job.slide.resolve()):
        return None
    recorded = summary.get("outputs")
    listed = {str(p) for p in recorded} if isinstance(recorded, list) else set()
    if any(str(out) not in listed or not out.exists() for out in job.outputs):
        return None
    return dict(summary)


def blurred_fraction(summary: dict[str, Any]) -> float | None:
    """Share of the classified tissue area labelled anything but in focus (None without classified tissue)."""
    fractions = summary.get("class_fraction") or {}
    values = [fractions.get(name) for name in LABELS[1:]]
    if not summary.get("tiles") or any(v is None for v in values):
        return None
    return float(sum(float(v) for v in values if v is not None))


def recommendation(outcome: SlideOutcome, rescan_above: float) -> str:
    """``rescan``, ``ok``, ``no tissue`` or ``check file`` (the slide failed)."""
    if outcome.status == "failed":
        return "check file"
    share = blurred_fraction(outcome.summary)
    if share is None:
        return "no tissue"
    return "rescan" if share > rescan_above else "ok"


def run_batch(
    folder: str | Path,
    outdir: str | Path,
    options: BatchOptions | None = None,
    on_slide: Callable[[SlideOutcome, int, int], None] | None = None,
) -> BatchResult:
    """Process every slide under ``folder`` into ``outdir``; see the module docstring. Never raises for one
    slide's failure: it is recorded in the result (and the summaries) instead."""
    options = options or BatchOptions()
    options.check()
    folder, outdir = Path(folder), Path(outdir)
    slides = find_slides(folder, options, outdir)
    if not slides:
        patterns = ", ".join(options.include)
        hint = "" if options.recursive else "; --recursive looks in subfolders"
        raise UsageError(f"{folder}: no slides found (patterns {patterns}{hint})")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{outdir}: cannot create the output folder: {err.strerror or err}") from err
    jobs = [plan(s, folder, outdir, options) for s in slides]
    outcomes: list[SlideOutcome] = []
    todo: list[SlideJob] = []
    for job in jobs:
        done = completed_summary(job)
        if done is not None:
            outcomes.append(SlideOutcome(job, "skipped", summary=done))
        else:
            todo.append(job)
    for o in outcomes:
        logger.info("%s: complete from an earlier run, skipped", o.job.relative)
    if todo:
        outcomes += _run_jobs(todo, options, on_slide, len(jobs) - len(todo), len(jobs))
    order = {job.slide: i for i, job in enumerate(jobs)}
    outcomes.sort(key=lambda o: order[o.job.slide])
    result = BatchResult(outcomes=outcomes, outdir=outdir)
    write_batch_summary(result, options)
    return result


def _run_jobs(
    todo: Sequence[SlideJob], options: BatchOptions, on_slide: Callable[[SlideOutcome, int, int], None] | None,
    already: int, total: int,
) -> list[SlideOutcome]:
    from .cluster import scheduler_address
    from .pipeline import qc, run

    outcomes = []
    with scheduler_address(options.run.scheduler, options.run.workers, options.run.gpus) as address:
        for i, job in enumerate(todo, start=1):
            started = time.perf_counter()
            slide_options = replace(options.run, scheduler=address, gpus=0, report_dir=job.report_dir)
            try:
                job.report_dir.parent.mkdir(parents=True, exist_ok=True)
                if options.qc_only:
                    result = qc(job.slide, job.report_dir, slide_options)
                else:
                    result = run(job.slide, list(job.outputs), replace(slide_options, overwrite=True))
                outcome = SlideOutcome(job, "done", seconds=time.perf_counter() - started,
                                       summary=dict(result.summary))
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one slide's failure, whatever it is, must not stop the others
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                if isinstance(err, OSError) and err.filename and str(err.filename) not in reason:
                    reason = f"{err.filename}: {reason}"
                if str(job.slide) not in reason:
                    reason = f"{job.slide}: {reason}"  # every reason names its slide
                logger.info("failed: %s", reason)
                outcome = SlideOutcome(job, "failed", error=reason, seconds=time.perf_counter() - started)
            outcomes.append(outcome)
            if on_slide is not None:
                on_slide(outcome, already + i, total)
    return outcomes


# -- summaries -----------------------------------------------------------------------------------------------------

CSV_FIELDS = (
    "slide", "status", "recommendation", "blurred_fraction", *(f"{c}_fraction" for c in LABELS),
    "restored_fraction", "tissue_area_mm2", "tiles", "seconds", "outputs", "report", "error",
)


def _row(outcome: SlideOutcome, options: BatchOptions) -> dict[str, Any]:
    s = outcome.summary
    fractions = s.get("class_fraction") or {}
    return {
        "slide": outcome.job.relative.as_posix(),
        "status": outcome.status,
        "recommendation": recommendation(outcome, options.rescan_above),
        "blurred_fraction": blurred_fraction(s) if s else None,
        **{f"{c}_fraction": fractions.get(c) for c in LABELS},
        "restored_fraction": s.get("restored_fraction"),
        "tissue_area_mm2": s.get("tissue_area_mm2"),
        "tiles": s.get("tiles"),
        "seconds": round(outcome.seconds, 2) if outcome.status == "done" else s.get("seconds"),
        "outputs": [str(p) for p in outcome.job.outputs],
        "report": str(outcome.job.report_dir),
        "error": outcome.error,
    }


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value  # NaN -> null


def write_batch_summary(result: BatchResult, options: BatchOptions) -> dict[str, Path]:
    """Write ``batch_summary.json``, ``batch_summary.csv`` and ``index.html`` into the output folder."""
    from .batch_index import render_index

    rows = [{k: _clean(v) for k, v in _row(o, options).items()} for o in result.outcomes]
    counts = {status: sum(o.status == status for o in result.outcomes) for status in ("done", "skipped", "failed")}
    document = {
        "software": f"wsi-deblur {__version__}",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rescan_above": options.rescan_above,
        "qc_only": options.qc_only,
        "slides": len(rows),
        **counts,
        "rescan": sum(r["recommendation"] == "rescan" for r in rows),
        "results": rows,
    }
    paths = {k: result.outdir / name for k, name in
             (("json", SUMMARY_JSON), ("csv", SUMMARY_CSV), ("html", INDEX_HTML))}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "outputs": ";".join(row["outputs"])})
    _write_atomic(paths["csv"], buffer.getvalue())
    _write_atomic(paths["html"], render_index(document, result.outdir))
    _write_atomic(paths["json"], json.dumps(document, indent=2, allow_nan=False) + "\n")
    return paths


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
