"""SSIM against the ground truth in each blurred region of the bundled blurred sample slide.

``sample_slides/CMU-1-blurred.svs`` is the in-focus CMU-1 region with defocus, motion and mixed blur put into
three boxes (``CMU-1-blurred.regions.json``, which also names the ground truth). For each output slide given,
this prints the SSIM of every box against the ground truth, beside the blurred input's::

    wsi-deblur run sample_slides/CMU-1-blurred.svs -o /tmp/out.tif
    python benchmarks/sample_slide_ssim.py /tmp/out.tif

(a few seconds after the run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur.slide import open_slide  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"


def _level0(path: Path) -> np.ndarray:
    with open_slide(path) as slide:
        width, height = slide.dimensions
        return slide.read(0, 0, 0, width, height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", type=Path, help="restored copies of the blurred sample slide")
    args = parser.parse_args()
    regions = json.loads((SAMPLES / "CMU-1-blurred.regions.json").read_text())
    truth = _level0(SAMPLES / regions["ground_truth"]["file"])
    images = {"blurred": _level0(SAMPLES / regions["slide"])}
    images.update({str(p): _level0(p) for p in args.outputs})
    for name, image in images.items():
        if image.shape != truth.shape:
            raise SystemExit(f"{name}: {image.shape[1]}x{image.shape[0]} px, the ground truth is "
                             f"{truth.shape[1]}x{truth.shape[0]}")
    print("| region | " + " | ".join(images) + " |")
    print("|---|" + "---|" * len(images))
    for region in regions["regions"]:
        x, y, w, h = (int(region["box"][k]) for k in "xywh")
        scores = [structural_similarity(truth[y : y + h, x : x + w], image[y : y + h, x : x + w], channel_axis=2)
                  for image in images.values()]
        print(f"| {region['label']} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
