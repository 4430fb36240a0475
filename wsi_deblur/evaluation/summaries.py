"""Summaries of the evaluation's measurements: confusion matrices and SSIM tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._types import LABELS
from ..training import data
from .sets import BASELINE, DIRECTIONS


def _confusion(true: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted, LABELS order) and the accuracy figures."""
    k = len(LABELS)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.intp), np.asarray(predicted, dtype=np.intp)), 1)
    rows = matrix.sum(axis=1)
    per_class = {
        LABELS[i]: (round(float(matrix[i, i] / rows[i]), 4) if rows[i] else None) for i in range(k)
    }
    n = int(matrix.sum())
    in_focus = int(rows[0])
    return {
        "labels": list(LABELS),
        "matrix": matrix.tolist(),
        "n": n,
        "accuracy": round(float(np.trace(matrix) / n), 4) if n else None,
        "per_class_accuracy": per_class,
        "in_focus_false_alarm": round(float(1.0 - matrix[0, 0] / in_focus), 4) if in_focus else None,
    }


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return round(float(np.mean(v)), 4) if v else float("nan")


def _group(
    records: Sequence[dict[str, Any]], keys: Sequence[str], series: Sequence[str], field: str = "ssim"
) -> list[dict[str, Any]]:
    """Mean of ``record[field][s]`` for each series, per distinct value of ``keys`` (in first-seen order)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for value, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, value, strict=True))
        row["n"] = len(members)
        row[field] = {s: _mean(m[field][s] for m in members) for s in series if s in members[0][field]}
        out.append(row)
    return out


def _with_gain(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    for row in rows:
        row["gain"] = {m: round(row["ssim"][m] - row["ssim"][BASELINE], 4) for m in methods}
    return rows


def _with_policy(
    records: Sequence[dict[str, Any]], keys: Sequence[str], series: Sequence[str], names: Sequence[str]
) -> list[dict[str, Any]]:
    """:func:`_group` of the oracle-route SSIM, each row with the policy's SSIM beside it."""
    rows = _group(records, keys, series)
    for row, prow in zip(rows, _group(records, keys, names, "policy_ssim"), strict=True):
        row["policy_ssim"] = prow["policy_ssim"]
    return rows


def _policy(records: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """Method ``name``'s end-to-end policy on ``records`` (one blur class): mean SSIM of the blurred input, the
    oracle route and the policy, and how often the classifier named the true class."""
    return {
        "n": len(records),
        "ssim_blurred": _mean(r["ssim"][BASELINE] for r in records),
        "ssim_oracle": _mean(r["ssim"][name] for r in records),
        "ssim_policy": _mean(r["policy_ssim"][name] for r in records),
        "called_true_class": _mean(float(r["predicted"][name] == r["label"]) for r in records),
    }


def _summaries(
    records: dict[str, list[dict[str, Any]]], classification: dict[str, Any], names: Sequence[str]
) -> dict[str, Any]:
    series = [BASELINE, *names]
    defocus = [r for r in records["defocus"] if r["label"] == "defocus"]
    in_focus = [r for r in records["defocus"] if r["label"] == "in_focus"]
    per_stain = _group(defocus, ["optics", "stain"], series)
    per_stain += [dict(row, stain="all") for row in _group(defocus, ["optics"], series)]
    per_stain += _group([dict(r, optics="all") for r in defocus], ["optics", "stain"], series)
    per_stain += _group([dict(r, optics="all", stain="all") for r in defocus], ["optics", "stain"], series)
    order = [name for name, _ in data.EVAL_OPTICS]
    by_optics_z = sorted(records["defocus"], key=lambda r: (order.index(r["optics"]), r["z_dof"]))
    by_z = _with_policy(by_optics_z, ["optics", "z_dof"], series, names)
    for row in by_z:
        row["z_um"] = round(row["z_dof"] * dict(data.EVAL_OPTICS)[row["optics"]].dof_um, 3)
    motion = []
    for direction, angles in DIRECTIONS.items():
        members = [dict(r, direction=direction) for r in records["motion"] if r["motion_angle"] in angles]
        motion += _with_policy(members, ["direction", "motion_px"], series, names)
    mixed = [dict(r, z_abs=abs(r["z_dof"])) for r in records["mixed"]]
    policy = {
        "defocus": {name: _policy(defocus, name) for name in names},
        "motion": {name: _policy(records["motion"], name) for name in names},
        "mixed": {name: _policy(records["mixed"], name) for name in names},
    }
    unchanged = {}
    for name in names:
        unchanged[name] = {
            "n": len(in_focus),
            "unchanged_fraction": _mean(float(r["unchanged"][name]) for r in in_focus),
            "ssim_input": _mean(r["ssim"][BASELINE] for r in in_focus),
            "ssim_after_policy": _mean(r["policy_ssim"][name] for r in in_focus),
        }
    grid = [r for rs in records.values() for r in rs]
    return {
        "classification": {
            name: {
                "classification_set": _confusion(classification["true"], classification["predicted"][name]),
                "evaluation_grid": _confusion(
                    [LABELS.index(r["label"]) for r in grid],
                    [LABELS.index(r["predicted"][name]) for r in grid],
                ),
            }
            for name in names
        },
        "defocus_per_stain": _with_gain([row for row in per_stain if row["n"]], names),
        "defocus_vs_z": by_z,
        "motion_vs_length": motion,
        "mixed": _with_gain(_with_policy(mixed, ["z_abs", "motion_px"], series, names), names),
        "policy": policy,
        "in_focus": unchanged,
    }


