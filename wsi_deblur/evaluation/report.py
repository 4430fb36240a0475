"""The evaluation's Markdown tables and PNG plots."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._types import LABELS
from ..training import data
from .sets import _DPI, BASELINE, BLUR_SET_OPTICS, DIRECTIONS, OPTICS_TITLES


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def _f(value: float | None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _signed(value: float, fmt: str) -> str:
    return "0" if value == 0 else format(value, "+" + fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    names = list(result["methods"])
    src = ", ".join(f"{x['name']} ({x['stain']}, {x['mpp']} µm/px)" for x in s["sources"])
    versions = "; ".join(
        f"{n} {result['methods'][n]['version']}"
        + (f" ({result['methods'][n]['precision']})" if result["methods"][n].get("precision") else "")
        for n in names
    )
    out = [
        "# Blur classification and restoration on held-out tissue",
        "",
        f"Held-out split `{s['split']}` (source images never used in training): {src}. "
        f"{s['crops_per_source']} crop(s) per source, {s['size']} px compared, seed {s['seed']}"
        + (", quick mode" if s["quick"] else "")
        + ". Blur from the pupil model with camera noise and JPEG quality "
        + "/".join(map(str, s["jpeg_quality"]))
        + f". SSIM over RGB against the sharp crop. Methods: {versions}. "
        f"wsi-deblur {result['software']['wsi_deblur']}.",
        "",
        "Restoration follows the true class (oracle route) unless marked *policy* (classify, then route).",
    ]
    if s["skipped"]:
        left_out = "; ".join(f"{x['source']} at {x['optics']} ({x['reason']})" for x in s["skipped"])
        out += ["", f"Left out: {left_out}."]

    out += ["", "## Blur classification (paper Table 2)", ""]
    for name in names:
        for part, title in (
            ("classification_set", "held-out tiles at random optics (balanced)"),
            ("evaluation_grid", "all crops below, at the three named optics"),
        ):
            c = result["classification"][name][part]
            out += [f"**{name}**, {title}: accuracy {_pct(c['accuracy'])} of {c['n']}, in-focus false alarms "
                    f"{_pct(c['in_focus_false_alarm'])}.", ""]
            rows = [
                [f"**{label}**", *c["matrix"][i], _pct(c["per_class_accuracy"][label])]
                for i, label in enumerate(c["labels"])
            ]
            out += [_table(["true \\ predicted", *c["labels"], "accuracy"], rows), ""]

    out += ["## Defocus: SSIM before and after restoration, per stain and pixel size (paper Table 3)", ""]
    header = ["optics", "stain", "images", BASELINE]
    for name in names:
        header += [name, f"{name} gain"]
    rows = []
    for row in result["defocus_per_stain"]:
        cells: list[Any] = [OPTICS_TITLES.get(row["optics"], row["optics"]), row["stain"], row["n"],
                            _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["gain"][name], sign=True)]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += ["## SSIM against defocus distance (paper Fig. 4a)", ""]
    header = ["optics", "z (DOF)", "z (µm)", "images", BASELINE]
    for name in names:
        header += [name, f"{name} (policy)"]
    rows = []
    for row in result["defocus_vs_z"]:
        cells = [OPTICS_TITLES.get(row["optics"], row["optics"]), _signed(row["z_dof"], "g"),
                 _signed(row["z_um"], ".1f"), row["n"], _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["policy_ssim"][name])]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += [f"## SSIM against motion length ({OPTICS_TITLES[BLUR_SET_OPTICS]})", ""]
    rows = [
        [row["direction"], f"{row['motion_px']:g}", row["n"], _f(row["ssim"][BASELINE]),
         *(_f(row[field][name]) for name in names for field in ("ssim", "policy_ssim"))]
        for row in result["motion_vs_length"]
    ]
    header = ["direction", "length (px)", "images", BASELINE]
    for name in names:
        header += [name, f"{name} (policy)"]
    out += [_table(header, rows), ""]

    out += [f"## Mixed blur: SSIM over defocus x motion (paper Fig. 6; {OPTICS_TITLES[BLUR_SET_OPTICS]})", ""]
    header = ["defocus (± DOF)", "motion (px)", "images", BASELINE]
    for name in names:
        header += [name, f"{name} gain", f"{name} (policy)"]
    rows = []
    for row in result["mixed"]:
        cells = [f"{row['z_abs']:g}", f"{row['motion_px']:g}", row["n"], _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["gain"][name], sign=True), _f(row["policy_ssim"][name])]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += ["## End-to-end policy (classify, decide, restore) on each blurred set", "",
            "Defocus: all optics, |z| >= 1 DOF. Motion and mixed: the sets above. The oracle route restores by the "
            "true class (mixed: DL_motion, then DL_defocus); the policy by the classifier's call "
            "(`wsi_deblur.blurmap.decide`).", ""]
    rows = [
        [blur, name, p["n"], _f(p["ssim_blurred"]), _f(p["ssim_oracle"]), _f(p["ssim_policy"]),
         _f(p["ssim_policy"] - p["ssim_blurred"], sign=True), _pct(p["called_true_class"])]
        for blur, per_method in result["policy"].items() for name, p in per_method.items()
    ]
    out += [_table(["blur", "method", "images", BASELINE, "oracle route", "policy", "policy gain",
                    "called the true class"], rows), ""]

    out += ["## In-focus input (z = 0, all optics) through `restore_image`", ""]
    rows = [
        [name, p["n"], _pct(p["unchanged_fraction"]), _f(p["ssim_input"]), _f(p["ssim_after_policy"])]
        for name, p in result["in_focus"].items()
    ]
    out += [_table(["method", "images", "left bit-identical", "SSIM input", "SSIM after policy"], rows), ""]
    out += ["Plots: " + ", ".join(f"`{p}`" for p in result["files"]["plots"]), ""]
    return "\n".join(out)



# ----------------------------------------------------------------------------------------------------
# Plots



def _colour(series: str, names: Sequence[str]) -> str:
    return "0.45" if series == BASELINE else f"C{names.index(series)}"


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")


def _plot_confusion(result: dict[str, Any], name: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    image = None
    for ax, (part, title) in zip(axes, (
        ("classification_set", "held-out tiles, random optics"),
        ("evaluation_grid", "evaluation grid, named optics"),
    ), strict=True):
        c = result["classification"][name][part]
        matrix = np.asarray(c["matrix"], dtype=float)
        fraction = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                colour = "white" if fraction[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(matrix[i, j])}\n{100 * fraction[i, j]:.0f}%", ha="center", va="center",
                        color=colour, fontsize=9)
        ax.set_xticks(range(len(LABELS)), LABELS)
        ax.set_yticks(range(len(LABELS)), LABELS)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{title}\naccuracy {_pct(c['accuracy'])} (n = {c['n']}), "
                     f"in-focus false alarms {_pct(c['in_focus_false_alarm'])}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    fig.suptitle(f"Blur classification, {name} (held-out sources)")
    _save(fig, path)


def _plot_per_stain(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    series = [BASELINE, *names]
    rows = [r for r in result["defocus_per_stain"] if r["optics"] != "all" and r["stain"] != "all"]
    fig = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(rows))
    for k, s in enumerate(series):
        values = [r["ssim"][s] for r in rows]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=s, color=_colour(s, names))
    ax.set_xticks(x, [f"{r['stain']}\n{OPTICS_TITLES.get(r['optics'], r['optics']).replace(', ', chr(10))}"
                      for r in rows], fontsize=8)
    ax.set_ylabel("SSIM against the sharp crop (mean)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    z = ", ".join(f"{v:g}" for v in result["settings"]["defocus_z_dof"] if v > 0)
    ax.set_title(f"Defocus (z = ±{z} DOF): SSIM before and after restoration, per stain and optics")
    _save(fig, path)


def _plot_vs_defocus(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    optics_names = [n for n, _ in data.EVAL_OPTICS if any(r["optics"] == n for r in result["defocus_vs_z"])]
    fig = Figure(figsize=(5.0 * len(optics_names), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(optics_names), sharey=True))
    for ax, optics_name in zip(axes, optics_names, strict=True):
        rows = [r for r in result["defocus_vs_z"] if r["optics"] == optics_name]
        z = np.array([r["z_dof"] for r in rows])
        blurred = z != 0
        ax.plot(z, [r["ssim"][BASELINE] for r in rows], "o--", color=_colour(BASELINE, names), label=BASELINE)
        for name in names:
            colour = _colour(name, names)
            ax.plot(z[blurred], [r["ssim"][name] for r, b in zip(rows, blurred, strict=True) if b], "o-",
                    color=colour, label=f"{name} (oracle route)")
            ax.plot(z, [r["policy_ssim"][name] for r in rows], "s:", color=colour, alpha=0.8,
                    label=f"{name} (policy)")
        dof = dict(data.EVAL_OPTICS)[optics_name].dof_um
        ax.set_title(f"{OPTICS_TITLES.get(optics_name, optics_name)}\n1 DOF = {dof:.1f} µm", fontsize=10)
        ax.set_xlabel("focus offset z (DOF units)")
        top = ax.secondary_xaxis("top", functions=(lambda v, d=dof: v * d, lambda v, d=dof: v / d))
        top.set_xlabel("z (µm)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM against the sharp crop (mean)")
    axes[0].legend(fontsize=8, loc="lower center")
    fig.suptitle("SSIM against defocus distance (held-out sources)")
    _save(fig, path)


def _plot_vs_motion(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    directions = [d for d in DIRECTIONS if any(r["direction"] == d for r in result["motion_vs_length"])]
    fig = Figure(figsize=(4.6 * len(directions), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(directions), sharey=True))
    for ax, direction in zip(axes, directions, strict=True):
        rows = [r for r in result["motion_vs_length"] if r["direction"] == direction]
        length = [r["motion_px"] for r in rows]
        ax.plot(length, [r["ssim"][BASELINE] for r in rows], "o--", color=_colour(BASELINE, names), label=BASELINE)
        for name in names:
            colour = _colour(name, names)
            ax.plot(length, [r["ssim"][name] for r in rows], "o-", color=colour, label=f"{name} (oracle route)")
            ax.plot(length, [r["policy_ssim"][name] for r in rows], "s:", color=colour, alpha=0.8,
                    label=f"{name} (policy)")
        angles = ", ".join(f"{a:g}°" for a in DIRECTIONS[direction])
        ax.set_title(f"{direction} motion ({angles})", fontsize=10)
        ax.set_xlabel("motion length (px at 0.5 µm/px)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM against the sharp crop (mean)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SSIM against motion length, in focus ({OPTICS_TITLES[BLUR_SET_OPTICS]})")
    _save(fig, path)


def _plot_mixed(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    rows = result["mixed"]
    zs = sorted({r["z_abs"] for r in rows})
    ms = sorted({r["motion_px"] for r in rows})
    cell = {(r["z_abs"], r["motion_px"]): r for r in rows}

    def grid(field: str, series: str) -> np.ndarray:
        return np.array([[cell[(z, m)][field][series] if (z, m) in cell else np.nan for m in ms] for z in zs])

    series = [BASELINE, *names]
    fig = Figure(figsize=(3.6 * len(series) + 1.0, 6.8), layout="constrained")
    axes = fig.subplots(2, len(series), squeeze=False)
    gains = [grid("gain", n) for n in names]
    limit = max([0.05, *(float(np.nanmax(np.abs(g))) for g in gains)])
    ssim_image = gain_image = None
    for k, s in enumerate(series):
        panels = [(axes[0, k], grid("ssim", s), "viridis", (0.0, 1.0), f"SSIM, {s}")]
        if s != BASELINE:
            panels.append((axes[1, k], gains[k - 1], "RdBu", (-limit, limit), f"SSIM gain, {s}"))
        else:
            axes[1, k].axis("off")
            axes[1, k].text(0.5, 0.5, "gain: SSIM after restoration\nminus SSIM of the blurred input\n\n"
                            "z sign and motion angle vary\nfrom crop to crop", ha="center", va="center",
                            transform=axes[1, k].transAxes, fontsize=9)
        for ax, values, cmap, (lo, hi), title in panels:
            image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
            if cmap == "viridis":
                ssim_image = image
            else:
                gain_image = image
            for i in range(len(zs)):
                for j in range(len(ms)):
                    if np.isfinite(values[i, j]):
                        text = f"{values[i, j]:+.2f}" if cmap == "RdBu" else f"{values[i, j]:.2f}"
                        dark = values[i, j] < 0.5 if cmap == "viridis" else abs(values[i, j]) > 0.6 * limit
                        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
            ax.set_xticks(range(len(ms)), [f"{m:g}" for m in ms])
            ax.set_yticks(range(len(zs)), [f"{z:g}" for z in zs])
            ax.set_xlabel("motion length (px)")
            ax.set_ylabel("defocus |z| (DOF)")
            ax.set_title(title, fontsize=10)
    if ssim_image is not None:
        fig.colorbar(ssim_image, ax=list(axes[0]), shrink=0.85, label="SSIM (mean)")
    if gain_image is not None:
        fig.colorbar(gain_image, ax=list(axes[1]), shrink=0.85, label="SSIM after - before")
    fig.suptitle(f"Mixed blur, motion then defocus restoration ({OPTICS_TITLES[BLUR_SET_OPTICS]})")
    _save(fig, path)


