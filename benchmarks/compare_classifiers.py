"""Two blur classifiers side by side on the same held-out tiles at random optics and on the evaluation grid.

``wsi-deblur evaluate`` scores the shipped classifier on 400 held-out tiles drawn from the current optics family.
When the family changes, an older table is not comparable; this script draws the evaluation's tiles once (the
same call, seed and PSF count as the evaluation) and classifies them with each model given, printing accuracy,
in-focus false alarms and the confusion matrix. ``--grid N`` also classifies the blurred images of the
evaluation's defocus, motion and mixed sets at the three named optics (the same draws as ``wsi-deblur evaluate
--crops-per-source N``, without restoring them) and lists the grid cells each model gets wrong.

A model is a registered name or a model folder. An earlier version comes out of the repository's history, e.g.::

    mkdir old && git show fdba905~1:wsi_deblur/models/pretrained/blur_classifier/config.json > old/config.json
    git show fdba905~1:wsi_deblur/models/pretrained/blur_classifier/model.weights.h5 > old/model.weights.h5
    python benchmarks/compare_classifiers.py old blur_classifier

(about two minutes; ``--grid 4`` adds about two minutes per model).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur._types import LABELS  # noqa: E402
from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.evaluation.sets import CLASSIFY_PER_CLASS, CLASSIFY_TILES_PER_PSF, DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.methods.dbmid import DBMIDMethod  # noqa: E402
from wsi_deblur.training import data  # noqa: E402


def _report(model: str, version: str, labels: np.ndarray, predicted: np.ndarray, what: str) -> None:
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    accuracy = np.trace(confusion) / confusion.sum()
    false_alarms = 1.0 - confusion[0, 0] / confusion[0].sum()
    print(f"{model} ({version}), {what}: accuracy {accuracy:.1%} of {len(labels)}, "
          f"in-focus false alarms {false_alarms:.1%}")
    print("  rows true, columns predicted:", ", ".join(LABELS))
    for row in confusion:
        print("  " + " ".join(f"{v:4d}" for v in row))


def _grid(crops_per_source: int, seed: int) -> list[tuple[sets._Draw, np.ndarray]]:
    """The blurred images of the evaluation's three sets, as ``wsi-deblur evaluate`` draws them."""
    plan = sets._plan(crops_per_source, DEFAULT_SIZE, False)
    srcs = data.sources(SPLIT)
    return [(draw, draw.blurred()) for name in sets.DRAWS for draw in sets.DRAWS[name](plan, seed, srcs, [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="registered names or model folders")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's seed [0]")
    parser.add_argument("--grid", type=int, default=0, metavar="N",
                        help="also the evaluation grid at N crops per source (the README's figure: 4) [0: no]")
    args = parser.parse_args()
    if args.grid < 0:
        parser.error(f"--grid takes a number of crops per source, 0 or more, got {args.grid}")
    n = CLASSIFY_PER_CLASS * len(LABELS)
    tiles, labels, mpps, _ = data.classification_set(
        n, DEFAULT_SIZE, args.seed, split=SPLIT, n_psfs=n // CLASSIFY_TILES_PER_PSF
    )
    grid = _grid(args.grid, args.seed) if args.grid else []
    for model in args.models:
        method = DBMIDMethod(classifier=model)
        version = method.classifier.config.version
        predicted = np.array(
            [int(np.argmax(method.classify(t[None], float(m))[0])) for t, m in zip(tiles, mpps, strict=True)]
        )
        _report(model, version, labels, predicted, "held-out tiles at random optics")
        if not grid:
            continue
        truth = np.array([LABELS.index(draw.label) for draw, _ in grid])
        guessed = np.array([
            int(np.argmax(method.classify(image[None], draw.crop.optics.mpp)[0])) for draw, image in grid
        ])
        _report(model, version, truth, guessed, "evaluation grid at the named optics")
        wrong = Counter(
            (draw.crop.optics_name, draw.label, abs(draw.blur[0]), draw.blur[1], LABELS[g])
            for (draw, _), t, g in zip(grid, truth, guessed, strict=True) if t != g
        )
        cells = Counter((draw.crop.optics_name, draw.label, abs(draw.blur[0]), draw.blur[1]) for draw, _ in grid)
        print("  errors by cell (optics, true class, |z| DOF, motion px -> predicted):")
        for (optics, label, z, motion, guess), count in sorted(wrong.items()):
            print(f"    {optics} {label} {z:g} DOF {motion:g} px -> {guess}: {count} of "
                  f"{cells[(optics, label, z, motion)]}")


if __name__ == "__main__":
    main()
