"""Write MODEL_CARD.md into every shipped model folder from its config and an evaluation run.

    wsi-deblur evaluate -o benchmarks/results/evaluation
    python benchmarks/write_model_cards.py benchmarks/results/evaluation/evaluation.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur.models.registry import PRETRAINED, registry  # noqa: E402
from wsi_deblur.training.cards import load_evaluation, write_model_card  # noqa: E402

TARGET = {"blur_classifier": "classifier", "dl_defocus": "defocus", "dl_motion": "motion"}


def _history_folder(init: dict) -> str:
    """The ``--init`` argument for a model trained on from an earlier version: a folder holding that version
    (taken from the repository's history), not the registered name, which now loads the shipped version."""
    return f"{init.get('model')}/"


def main() -> None:
    evaluation = load_evaluation(sys.argv[1]) if len(sys.argv) > 1 else None
    for name, entry in registry().items():
        folder = PRETRAINED / entry["folder"]
        from wsi_deblur.models.config import ModelConfig

        config = ModelConfig.load(folder / "config.json")
        t = config.training
        init = t.get("initialised_from") or {}
        # weights reused unchanged from an earlier version: the command reproduces those weights
        reused = str(t.get("weights_from", {}).get("model", "")).rpartition("-")[2]
        command = (f"wsi-deblur train {TARGET.get(name, name)} --out wsi_deblur/models/pretrained/{name} "
                   f"--steps {t.get('steps')} --batch {t.get('batch')} --samples {t.get('data', {}).get('samples')}"
                   + (f" --patch {t['data']['patch']}" if name != "blur_classifier" else "")
                   + f" --learning-rate {t.get('optimizer', '').split('lr ')[-1].split(' ')[0]}"
                   + (f" --seed {t['data']['seed']}" if t.get("data", {}).get("seed") else "")
                   + (f" --init {init.get('folder', _history_folder(init))}" if init else "")
                   + (f" --prestep {config.prestep}" if config.prestep and not reused else "")
                   + (" --blurred-inputs" if t.get("data", {}).get("inputs") == "blurred" and not reused else "")
                   + f" --model-version {reused or config.version} --register")
        note = (f"`{_history_folder(init)}`: a folder holding {init.get('model')}, from the repository's history"
                if init and "folder" not in init else "")
        if init.get("command"):
            # started from an intermediate model that was not kept: its own command comes first
            command = f"{init['command']}` (on the blur physics of that stage, described above), then `{command}"
        print(write_model_card(folder, evaluation, command, note))


if __name__ == "__main__":
    main()
