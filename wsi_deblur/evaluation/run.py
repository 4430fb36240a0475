"""``evaluate``: the whole evaluation, written as JSON, Markdown and plots."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..methods import METHODS, Method, get_method
from ..training import data
from .report import _markdown, _plot_confusion, _plot_mixed, _plot_per_stain, _plot_vs_defocus, _plot_vs_motion
from .sets import (
    BLUR_SET_OPTICS,
    DEFAULT_CROPS_PER_SOURCE,
    DEFAULT_SIZE,
    MIN_SIZE,
    OPTICS_TITLES,
    SPLIT,
    _classification_tiles,
    _Counter,
    _measure_set,
    _plan,
)
from .summaries import _summaries


def _load_methods(names: Sequence[str]) -> dict[str, Method]:
    """The named methods, in order, without repeats; an unknown name is a ValueError naming it."""
    if isinstance(names, str):
        names = [names]
    unique = list(dict.fromkeys(names))
    if not unique:
        raise ValueError(f"evaluate: no method given; choose from {', '.join(sorted(METHODS))}")
    for name in unique:
        if name not in METHODS:
            raise ValueError(f"evaluate: unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return {name: get_method(name) for name in unique}


def available_methods() -> list[str]:
    """Names of the methods that can be built here (``dbmid`` needs its trained weights), registry order."""
    names = []
    for name in METHODS:
        try:
            get_method(name)
        except ValueError:
            continue
        names.append(name)
    return names


def _method_info(method: Method) -> dict[str, Any]:
    models = getattr(method, "models", {})
    info = {"version": str(method.version), "models": {str(k): str(v) for k, v in dict(models).items()}}
    precision = getattr(method, "precision", None)
    return {**info, "precision": precision} if precision else info



# ----------------------------------------------------------------------------------------------------
# Entry point



def evaluate(
    methods: Sequence[str],
    out_dir: str | Path,
    *,
    crops_per_source: int = DEFAULT_CROPS_PER_SOURCE,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    quick: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate deblurring ``methods`` (names, e.g. ``["classical", "dbmid"]``) on the held-out split.

    Writes into ``out_dir`` (created if needed): ``evaluation.json`` (settings, method and model versions,
    every measurement and the summaries), ``evaluation.md`` (Markdown tables) and PNG plots:
    ``confusion_<method>.png``, ``ssim_per_stain.png``, ``ssim_vs_defocus.png``, ``ssim_vs_motion.png`` and
    ``mixed_heatmap.png``. ``crops_per_source`` crops of ``size`` px are drawn from each held-out source per
    optics and set; ``quick`` is a small version for tests (see :data:`QUICK_SIZE` and the names after it).
    ``progress(stage, done, total)`` is called as the work goes on. Returns what ``evaluation.json`` holds.
    Raises ValueError for an unknown method name, a method that cannot be built (e.g. missing weights), or
    sizes the held-out sources cannot give.
    """
    loaded = _load_methods(methods)
    names = list(loaded)
    if crops_per_source < 1:
        raise ValueError(f"evaluate: crops_per_source must be at least 1, got {crops_per_source}")
    if size < MIN_SIZE:
        raise ValueError(f"evaluate: size must be at least {MIN_SIZE} px, got {size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; evaluate writes its results into a folder")
    out.mkdir(parents=True, exist_ok=True)

    plan = _plan(crops_per_source, size, quick)
    srcs = data.sources(SPLIT)
    defocus_srcs = srcs
    if plan.one_source_per_stain:
        defocus_srcs = list({s.stain: s for s in reversed(srcs)}.values())[::-1]
    blur_srcs = srcs if plan.blur_set_sources is None else srcs[: plan.blur_set_sources]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    skipped: list[dict[str, Any]] = []

    def timed(stage: str, run: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = run()
        timings[stage] = round(time.perf_counter() - t0, 1)
        return value

    classification = timed("classification", lambda: _classification_tiles(plan, seed, loaded, progress))
    records = {
        "defocus": timed(
            "defocus", lambda: _measure_set("defocus", plan, seed, loaded, defocus_srcs, progress, skipped)
        ),
        "motion": timed("motion", lambda: _measure_set("motion", plan, seed, loaded, blur_srcs, progress, skipped)),
        "mixed": timed("mixed", lambda: _measure_set("mixed", plan, seed, loaded, blur_srcs, progress, skipped)),
    }
    settings = {
        "split": SPLIT, "seed": seed, "quick": quick, **plan.settings(),
        "sources": [{"name": s.name, "stain": s.stain, "mpp": s.mpp} for s in srcs],
        "defocus_sources": [s.name for s in defocus_srcs],
        "motion_and_mixed_sources": [s.name for s in blur_srcs],
        "optics": {
            name: {"na": o.na, "mpp": o.mpp, "dof_um": round(o.dof_um, 3), "title": OPTICS_TITLES[name]}
            for name, o in data.EVAL_OPTICS
        },
        "motion_and_mixed_optics": BLUR_SET_OPTICS,
        "classification_mpp_range": classification["mpp_range"],
        "ssim": "skimage.metrics.structural_similarity, channel_axis=2, data_range=255, central size px",
        "route": "oracle: restoration steps of the true class; policy: classify, blurmap.decide, restore",
        "skipped": skipped,
    }
    result: dict[str, Any] = {
        "settings": settings,
        "software": {"wsi_deblur": __version__, "numpy": np.__version__, "python": platform.python_version()},
        "methods": {name: _method_info(m) for name, m in loaded.items()},
        **_summaries(records, classification, names),
        "records": records,
        "classification_set_predictions": classification,
    }

    plots = [f"confusion_{name}.png" for name in names]
    plots += ["ssim_per_stain.png", "ssim_vs_defocus.png", "ssim_vs_motion.png", "mixed_heatmap.png"]
    result["files"] = {"json": "evaluation.json", "markdown": "evaluation.md", "plots": plots}
    counter = _Counter(progress, "plots", len(plots))
    t0 = time.perf_counter()
    for name in names:
        _plot_confusion(result, name, out / f"confusion_{name}.png")
        counter.step()
    for plot, path in ((_plot_per_stain, "ssim_per_stain.png"), (_plot_vs_defocus, "ssim_vs_defocus.png"),
                       (_plot_vs_motion, "ssim_vs_motion.png"), (_plot_mixed, "mixed_heatmap.png")):
        plot(result, out / path)
        counter.step()
    timings["plots"] = round(time.perf_counter() - t0, 1)
    result["runtime_s"] = {**timings, "total": round(time.perf_counter() - started, 1)}

    (out / "evaluation.md").write_text(_markdown(result), encoding="utf-8")
    (out / "evaluation.json").write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    return result
