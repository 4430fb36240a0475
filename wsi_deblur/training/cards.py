"""Model cards: what a shipped model is, how it was trained and what it measured, next to its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.config import ModelConfig
from ..models.registry import sha256

PURPOSE = {
    "blur_classifier": "Labels a tile in_focus, defocus, motion or mixed (DBMID's classifier). It runs on every "
    "tissue tile of every slide, so it is small: the four 128 px crops of a tile that hold the most tissue (glass "
    "reads as blur), at the slide's native resolution, with the pixel size as a second input.",
    "dl_defocus": "Restores defocused tissue (DBMID's DL_defocus): RED-Net encoder-decoder with stride-2 steps, "
    "symmetric skip connections added by sum and a global residual; any input size that is a multiple of 8.",
    "dl_motion": "Restores motion-blurred tissue (DBMID's DL_motion), same architecture as DL_defocus; for mixed "
    "blur it runs first, then DL_defocus.",
}

LIMITATIONS = """\
* Trained on synthetic blur (the physical model in `wsi_deblur.physics`) of real in-focus brightfield tissue;
  no redistributable focal stack of real scans exists to train or test on. Real scanners' blur was covered by
  drawing optics widely (NA 0.25-0.95, sections 0-10 um thick spreading the blur around the focus offset,
  partial coherence, Zernike aberrations).
* The in-focus sources are about 0.5 um/px, so the training crops span the pixel sizes given by `mpp_range`
  in `config.json`; slides outside it (40x scans at 0.25 um/px) are resampled into it for the network and the
  correction is carried back at full resolution.
* Brightfield stains only (H&E and IHC in training); not for fluorescence.
"""


def _count_params(folder: Path) -> int:
    from ..models.registry import load_folder

    return int(load_folder(folder).network.count_params())


def _evaluation_lines(name: str, evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["No evaluation recorded yet: run `wsi-deblur evaluate`."]
    results = evaluation.get("results", evaluation)
    lines: list[str] = []
    if name == "blur_classifier":
        cls = results.get("classification", {}).get("dbmid", {})
        for key, title in (("classification_set", "held-out tiles, random optics"),
                           ("evaluation_grid", "held-out crops over the evaluation grid")):
            c = cls.get(key)
            if c:
                lines.append(f"* Accuracy ({title}): {100 * c['accuracy']:.2f}% over {c['n']} tiles; "
                             f"in-focus false alarms {100 * c['in_focus_false_alarm']:.2f}%.")
    elif name == "dl_defocus":
        for row in results.get("defocus_per_stain", []):
            ssim = row["ssim"]
            if row.get("optics") == "all" and row.get("stain") in ("all", "H&E", "IHC"):
                lines.append(f"* Defocus SSIM ({row['stain']}, all pixel sizes, n={row['n']}): "
                             f"{ssim['blurred']:.3f} -> {ssim['dbmid']:.3f} (classical {ssim['classical']:.3f}).")
        for row in results.get("defocus_per_stain", []):
            ssim = row["ssim"]
            if row.get("stain") == "all" and row.get("optics") != "all":
                lines.append(f"* Defocus SSIM at {row['optics']}: {ssim['blurred']:.3f} -> {ssim['dbmid']:.3f} "
                             f"(classical {ssim['classical']:.3f}).")
    elif name == "dl_motion":
        for row in results.get("motion_vs_length", []):
            ssim = row["ssim"]
            lines.append(f"* Motion {row['motion_px']:g} px {row['direction']}: SSIM {ssim['blurred']:.3f} -> "
                         f"{ssim['dbmid']:.3f} (classical {ssim['classical']:.3f}).")
        # mixed blur goes through this network first, then DL_defocus: mean over the motion lengths per defocus
        mixed = results.get("mixed", [])
        for z in sorted({row["z_abs"] for row in mixed}):
            rows = [row for row in mixed if row["z_abs"] == z]
            mean = {k: sum(row["ssim"][k] for row in rows) / len(rows) for k in ("blurred", "dbmid", "classical")}
            lengths = ", ".join(f"{row['motion_px']:g}" for row in rows)
            lines.append(f"* Mixed blur, {z:g} DOF with motion {lengths} px (then DL_defocus): SSIM "
                         f"{mean['blurred']:.3f} -> {mean['dbmid']:.3f} (classical {mean['classical']:.3f}).")
    lines.append("")
    lines.append("Full tables and plots: `wsi-deblur evaluate` (figures in the README).")
    return lines


def _prestep_line(config: ModelConfig) -> str:
    """What the network's input is when a prestep runs before it, and what its weights were trained on."""
    t = config.training
    line = ("* Input: the output of the classical method's blind Wiener step of the same kind (its PSF fitted to the "
            "region's spectrum), which the network refines; the step runs first when this network is the first of "
            "its route (not after DL_motion on mixed blur).")
    source = t.get("weights_from")
    if source:
        return (line + f" The weights are {source.get('model')}'s, unchanged (sha256 "
                f"`{str(source.get('sha256', ''))[:16]}...`): trained on blurred inputs as below, they refine the "
                "Wiener estimate better than a version trained on it did (see the CHANGELOG). This version is that "
                "model folder with `prestep` set to `wiener` in `config.json`.")
    if t.get("data", {}).get("inputs") == "blurred":
        return (line + " The network was trained on blurred inputs all the same (the paper's training, "
                "`--blurred-inputs`): so trained, it refines the Wiener estimate better than versions trained on "
                "that estimate did (see the CHANGELOG).")
    context = t.get("data", {}).get("prestep_context")
    return line + f" Training inputs went through the same step with {context} px of context on each side."


def write_model_card(
    folder: str | Path, evaluation: dict[str, Any] | None = None, command: str = "", note: str = ""
) -> Path:
    """Write ``MODEL_CARD.md`` in a model folder from its config and (optionally) the evaluation results, the
    command that reproduces it and a note on that command."""
    folder = Path(folder)
    config = ModelConfig.load(folder / "config.json")
    t = config.training
    arch = config.architecture
    digest = sha256(folder / config.weights)
    data = t.get("data", {})
    lines = [
        f"# {config.name} {config.version}",
        "",
        PURPOSE.get(config.name, ""),
        "",
        "## Model",
        "",
        f"* Architecture: `{arch.type}`, features {list(arch.features)}, {arch.convs} convolutions per level, "
        f"kernel {arch.kernel} (first {arch.first_kernel})"
        + (f", spectral branch of width {arch.spectrum} (power spectrum in rings and sectors)" if arch.spectrum
           else "")
        + f"; {_count_params(folder):,} parameters.",
        *([_prestep_line(config)] if config.prestep else []),
        f"* Pixel sizes covered by training: {config.mpp_range[0]}-{config.mpp_range[1]} um/px.",
        f"* Weights: `{config.weights}` (no optimizer state), sha256 `{digest}`.",
        "",
        "## Training",
        "",
        f"* Data: {data.get('samples')} synthetic samples of {data.get('patch')} px from the training split "
        f"(sources: {', '.join(data.get('sources', []))}), seed {data.get('seed')}; blur drawn from the physical "
        "model over random optics (see the data builder, `wsi_deblur.training.data`).",
        f"* {t.get('steps')} steps of batch {t.get('batch')}; {t.get('optimizer')}; loss {t.get('loss')}; "
        f"dtype policy {t.get('dtype_policy')}.",
        f"* Time: {t.get('seconds', 0) / 60:.0f} min on a 2-core x86-64 CPU (data synthesis "
        f"{t.get('data_seconds', 0):.0f} s). Final: "
        + ", ".join(f"{k} {v:.5f}" for k, v in t.get("final", {}).items()) + ".",
    ]
    init = t.get("initialised_from")
    if init:
        # an intermediate model that was not kept says how it was made instead
        provenance = init.get("provenance", "in the repository's history")
        lines.insert(lines.index("## Training") + 2,
                     f"* Started from {init.get('model')} (sha256 `{str(init.get('sha256', ''))[:16]}...`, "
                     f"{init.get('steps')} steps on {init.get('samples')} samples; {provenance}) "
                     "and trained on as below, on data from the current blur physics"
                     + (f"; new or reshaped layers ({', '.join(init['new_layers'])}) started fresh."
                        if init.get("new_layers") else "."))
    if command:
        lines.append(f"* Reproduce: `{command}`" + (f" ({note})." if note else ""))
    lines += ["", "## Evaluation (held-out source images)", "", *_evaluation_lines(config.name, evaluation)]
    lines += ["", "## Limitations", "", LIMITATIONS]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def load_evaluation(path: str | Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(Path(path).read_text())
    return result
