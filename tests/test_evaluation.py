"""The held-out evaluation: one quick run with the classical method, its JSON, Markdown and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from wsi_deblur._types import LABELS, STEPS
from wsi_deblur.blurmap import ACTION_STEPS, ACTIONS
from wsi_deblur.evaluation import BASELINE, evaluate
from wsi_deblur.training import data

PLOTS = ("confusion_classical.png", "ssim_per_stain.png", "ssim_vs_defocus.png", "ssim_vs_motion.png",
         "mixed_heatmap.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[tuple[str, int, int]]]:
    """One quick evaluation (about 30 s on 2 cores), shared by the tests of this file."""
    out = tmp_path_factory.mktemp("evaluation") / "results"
    calls: list[tuple[str, int, int]] = []
    result = evaluate(["classical"], out, quick=True, progress=lambda s, d, n: calls.append((s, d, n)))
    return out, result, calls


def _ssims(result: dict[str, Any]) -> list[float]:
    values = []
    for records in result["records"].values():
        for r in records:
            values += list(r["ssim"].values()) + list(r.get("policy_ssim", {}).values())
    return values


def test_files_and_json_round_trip(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    out, result, _ = run
    for name in ("evaluation.json", "evaluation.md", *PLOTS):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(result))
    for section in ("settings", "methods", "classification", "defocus_per_stain", "defocus_vs_z",
                    "motion_vs_length", "mixed", "policy", "in_focus", "records", "runtime_s"):
        assert section in on_disk, section
    assert on_disk["methods"]["classical"]["version"]
    assert on_disk["settings"]["split"] == "test"
    assert {s["name"] for s in on_disk["settings"]["sources"]} == set(data.SPLITS["test"])


def test_confusion_matrices_count_every_classified_crop(
    run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]],
) -> None:
    _, result, _ = run
    c = result["classification"]["classical"]
    tiles = result["settings"]["classification_tiles"]
    matrix = np.array(c["classification_set"]["matrix"])
    assert matrix.shape == (len(LABELS), len(LABELS))
    assert matrix.sum() == tiles == c["classification_set"]["n"]
    # balanced: every class has the same number of tiles
    assert set(matrix.sum(axis=1)) == {tiles // len(LABELS)}
    grid = np.array(c["evaluation_grid"]["matrix"])
    assert grid.sum() == sum(len(r) for r in result["records"].values())
    for part in ("classification_set", "evaluation_grid"):
        m = np.array(c[part]["matrix"])
        assert c[part]["accuracy"] == pytest.approx(np.trace(m) / m.sum(), abs=1e-4)
        assert c[part]["in_focus_false_alarm"] == pytest.approx(1 - m[0, 0] / m[0].sum(), abs=1e-4)


def test_ssim_values_and_baseline(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    _, result, _ = run
    values = _ssims(result)
    assert values and all(-1.0 <= v <= 1.0 for v in values)
    for key in ("defocus_per_stain", "defocus_vs_z", "motion_vs_length", "mixed"):
        assert result[key]
    for row in [row for key in ("defocus_per_stain", "defocus_vs_z", "motion_vs_length", "mixed")
                for row in result[key]]:
        assert BASELINE in row["ssim"] and "classical" in row["ssim"]
    stains = {row["stain"] for row in result["defocus_per_stain"]}
    assert {"H&E", "IHC", "all"} <= stains
    # every crop is seen at z = 0 and at +-z for each z of the quick grid, at each of the three optics
    zs = result["settings"]["defocus_z_dof"]
    assert len(result["records"]["defocus"]) == 3 * len(result["settings"]["defocus_sources"]) * len(zs)
    # in focus, the blurred series is the least blurred: SSIM falls with |z| on average
    by_z = [r for r in result["defocus_vs_z"] if r["optics"] == "SCANNER_20X"]
    near = np.mean([r["ssim"][BASELINE] for r in by_z if r["z_dof"] == 0])
    far = np.mean([r["ssim"][BASELINE] for r in by_z if abs(r["z_dof"]) == max(zs)])
    assert near > far
    # the classical deconvolution, routed by the true class, sharpens defocused tissue on average
    overall = next(r for r in result["defocus_per_stain"] if r["optics"] == "all" and r["stain"] == "all")
    assert overall["gain"]["classical"] > 0


def test_in_focus_policy(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    _, result, _ = run
    in_focus = [r for r in result["records"]["defocus"] if r["label"] == "in_focus"]
    assert in_focus and all("unchanged" in r for r in in_focus)
    for r in in_focus:
        if r["unchanged"]["classical"]:
            assert r["policy_ssim"]["classical"] == r["ssim"][BASELINE]
    summary = result["in_focus"]["classical"]
    assert summary["n"] == len(in_focus)
    expected = np.mean([r["unchanged"]["classical"] for r in in_focus])
    assert summary["unchanged_fraction"] == pytest.approx(expected, abs=1e-4)


def test_policy_on_every_blurred_set(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    _, result, _ = run
    records = result["records"]
    members = {
        "defocus": [r for r in records["defocus"] if r["label"] == "defocus"],
        "motion": records["motion"],
        "mixed": records["mixed"],
    }
    assert set(result["policy"]) == set(members)
    for blur, rs in members.items():
        assert rs and all("policy_ssim" in r for r in rs), blur
        p = result["policy"][blur]["classical"]
        assert p["n"] == len(rs)
        assert p["ssim_policy"] == pytest.approx(np.mean([r["policy_ssim"]["classical"] for r in rs]), abs=1e-4)
        assert p["ssim_oracle"] == pytest.approx(np.mean([r["ssim"]["classical"] for r in rs]), abs=1e-4)
        right = np.mean([r["predicted"]["classical"] == r["label"] for r in rs])
        assert p["called_true_class"] == pytest.approx(right, abs=1e-4)
        # the policy's route is recorded; along the true class's route it gives the true-class SSIM, and a crop
        # it leaves alone keeps the blurred input's
        for r in rs:
            route = r["policy_route"]["classical"]
            assert route in ACTIONS
            if ACTION_STEPS[ACTIONS.index(route)] == STEPS[r["label"]]:
                assert r["policy_ssim"]["classical"] == r["ssim"]["classical"]
            elif route == "none":
                assert r["policy_ssim"]["classical"] == r["ssim"][BASELINE]
    # every row of the motion and mixed tables carries the policy beside the true-class route
    for row in result["motion_vs_length"] + result["mixed"]:
        assert set(row["policy_ssim"]) == {"classical"}


def test_markdown_tables(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    out, _, _ = run
    text = (out / "evaluation.md").read_text(encoding="utf-8")
    for heading in ("## Blur classification", "## Defocus: SSIM before and after", "## SSIM against defocus",
                    "## SSIM against motion length", "## Mixed blur", "## End-to-end policy",
                    "## In-focus input"):
        assert heading in text, heading
    assert "| true \\ predicted |" in text
    # every table is well formed: the same number of cells on each of its lines, a separator after the header
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    assert len(tables) >= 8
    for table in tables:
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, table[0]
        assert set(table[1].replace("|", "")) == {"-"}
        assert len(table) >= 3


def test_plots_open(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    out, result, _ = run
    assert sorted(result["files"]["plots"]) == sorted(PLOTS)
    for name in PLOTS:
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            width, height = im.size
            assert 400 <= width <= 4000 and 300 <= height <= 3000, (name, im.size)
            pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10, name  # not blank


def test_progress_reports_each_stage(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    _, _, calls = run
    stages = [s for s, _, _ in calls]
    assert list(dict.fromkeys(stages)) == ["classification", "defocus", "motion", "mixed", "plots"]
    for stage in set(stages):
        mine = [(d, n) for s, d, n in calls if s == stage]
        assert mine[0][0] == 0 and mine[-1][0] == mine[-1][1] > 0
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)


def test_runtime_recorded(run: tuple[Path, dict[str, Any], list[tuple[str, int, int]]]) -> None:
    _, result, _ = run
    runtime = result["runtime_s"]
    assert math.isclose(runtime["total"], sum(v for k, v in runtime.items() if k != "total"), abs_tol=2.0)


def test_unknown_method_is_named(tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="nonesuch"):
        evaluate(["classical", "nonesuch"], out, quick=True)
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 32}, "size"),
    ({"crops_per_source": 0}, "crops_per_source"),
])
def test_bad_settings(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(["classical"], tmp_path, **kwargs)
