"""The policy's decision per tile (``blurmap.decide``) and the blur map that records it."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_deblur._types import LABELS, STEPS, BlurPrediction
from wsi_deblur.blurmap import ACTION_STEPS, ACTIONS, DEFOCUS_ALONE_PROBABILITY, PLAUSIBLE_PROBABILITY, BlurMap, decide

P = PLAUSIBLE_PROBABILITY
D = DEFOCUS_ALONE_PROBABILITY
CASES = [
    ([0.85, 0.05, 0.05, 0.05], "in_focus", "none"),
    ([0.10, 0.80, 0.05, 0.05], "defocus", "defocus"),
    ([0.05, 0.10, 0.83, 0.02], "motion", "motion"),
    # motion on which mixed blur is plausible: DL_motion, then DL_defocus
    ([0.00, 0.02, 0.50, 0.48], "motion", "motion+defocus"),
    ([0.05, 0.15 - P, 0.80, P], "motion", "motion+defocus"),
    # mixed whose motion shows: DL_motion, then DL_defocus
    ([0.05, 0.10, 0.15, 0.70], "mixed", "motion+defocus"),
    ([0.00, 0.45, P, 0.55 - P], "mixed", "motion+defocus"),
    # mixed whose motion does not show and that defocus alone could explain (strong defocus): DL_defocus alone
    ([0.00, 0.40, 0.01, 0.59], "mixed", "defocus"),
    ([0.00, D, 0.00, 1 - D], "mixed", "defocus"),
    # pure defocus plausible but below the bar for DL_defocus alone (strong defocus under a long motion)
    ([0.00, D - 0.05, 0.00, 1.05 - D], "mixed", "motion+defocus"),
    # pure defocus likely, but so is pure motion: both networks
    ([0.00, 0.30, 0.06, 0.64], "mixed", "motion+defocus"),
    # mixed beyond doubt (long motion under defocus), though pure motion is no likelier than pure defocus
    ([0.00, 0.02, 0.00, 0.98], "mixed", "motion+defocus"),
    # labelled in focus: left as it is, even with the blurred classes together above one half
    ([0.45, 0.05, 0.10, 0.40], "in_focus", "none"),
    ([0.55, 0.05, 0.00, 0.40], "in_focus", "none"),
]


@pytest.mark.parametrize(("probabilities", "label", "action"), CASES)
def test_decide_one_tile(probabilities: list[float], label: str, action: str) -> None:
    labels, actions = decide(np.array([probabilities], dtype=np.float32))
    assert LABELS[int(labels[0])] == label
    assert ACTIONS[int(actions[0])] == action
    # the route differs from the label's only where the classifier finds another class plausible
    if ACTION_STEPS[int(actions[0])] != STEPS[label]:
        assert sorted(probabilities)[-2] >= P


def test_decide_a_grid_cell_by_cell() -> None:
    # every case in one (2, 7, 4) grid, in an order that differs from the list: each cell gets its own decision
    assert len(CASES) == 14
    order = np.random.default_rng(0).permutation(len(CASES))
    grid = np.array([CASES[i][0] for i in order], dtype=np.float32).reshape(2, 7, len(LABELS))
    labels, actions = decide(grid)
    assert labels.shape == actions.shape == (2, 7)
    assert labels.dtype == actions.dtype == np.int8
    for cell, i in zip(np.ndindex(2, 7), order, strict=True):
        assert LABELS[int(labels[cell])] == CASES[i][1]
        assert ACTIONS[int(actions[cell])] == CASES[i][2]


@pytest.mark.parametrize("probabilities", [
    [0.30, 0.20, 0.00, 0.50],  # mixed without visible motion
    [0.30, 0.00, 0.40, 0.30],  # motion that may be mixed
    [0.30, 0.60, 0.05, 0.05],
])
def test_unsure_tiles_are_left_alone_whatever_the_route(probabilities: list[float]) -> None:
    p = np.array([probabilities], dtype=np.float32)
    assert int(decide(p)[1][0]) != 0
    _, actions = decide(p, min_blur_probability=0.9)
    assert ACTIONS[int(actions[0])] == "none"


def test_blurmap_records_the_route_beside_the_label() -> None:
    tissue = np.array([[True, True, True], [True, False, True]])
    bm = BlurMap.empty(1400, 1000, 512, tissue)
    cells = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)]
    bm.set_probabilities(cells, np.array([
        [0.00, 0.02, 0.50, 0.48],  # motion, may be mixed
        [0.00, 0.40, 0.01, 0.59],  # mixed without visible motion
        [0.05, 0.10, 0.15, 0.70],  # mixed
        [0.85, 0.05, 0.05, 0.05],  # in focus
        [0.10, 0.80, 0.05, 0.05],  # defocus
    ]))
    assert [LABELS[int(bm.labels[c])] for c in cells] == ["motion", "mixed", "mixed", "in_focus", "defocus"]
    assert [ACTIONS[int(bm.actions[c])] for c in cells] == [
        "motion+defocus", "defocus", "motion+defocus", "none", "defocus"]
    assert bm.labels[1, 1] == bm.actions[1, 1] == -1  # background: not classified


def test_prediction_steps() -> None:
    probabilities = dict(zip(LABELS, [0.00, 0.40, 0.01, 0.59], strict=True))
    assert BlurPrediction("mixed", probabilities).steps == ("motion", "defocus")  # route not decided: the label's
    assert BlurPrediction("mixed", probabilities, route=("defocus",)).steps == ("defocus",)
    assert BlurPrediction("in_focus").steps == ()
