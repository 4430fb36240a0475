"""The ``wsi-deblur`` commands for the models themselves: ``train`` a network, ``evaluate`` the methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._types import UsageError
from .cli_errors import errors


@click.command()
@click.argument("target", type=click.Choice(["classifier", "defocus", "motion"]))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Model folder to write (config.json + weights); checkpoints go to OUT/checkpoint.")
@click.option("--arch", type=click.Choice(["blurnet", "vgg16", "rednet"]), default=None,
              help="Architecture [blurnet for the classifier, rednet for restorers]; vgg16 is the paper's "
                   "classifier (138 M parameters: for GPUs).")
@click.option("--steps", type=int, default=None, help="Optimizer steps, in whole epochs of 200 (rounded down).")
@click.option("--batch", type=int, default=None, help="Batch size.")
@click.option("--patch", type=int, default=None, help="Training patch side for restorers (pixels).")
@click.option("--samples", type=int, default=None, help="Synthetic training samples to generate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--learning-rate", type=float, default=None, help="Initial Adam learning rate (cosine decay).")
@click.option("--bf16/--no-bf16", default=None, help="bfloat16 mixed precision [where the CPU has it].")
@click.option("--threads", type=int, default=None, help="Compute threads [all].")
@click.option("--init", default=None, metavar="MODEL",
              help="Start from this trained model (registered name or model folder) instead of random weights.")
@click.option("--prestep", type=click.Choice(["wiener"]), default=None,
              help="Restorers: train the network to refine the classical blind Wiener step's output (it then "
                   "runs before the network).")
@click.option("--blurred-inputs", is_flag=True,
              help="With --prestep: train on the blurred inputs all the same (the paper's training); the step "
                   "runs before the network in use only.")
@click.option("--model-version", default="1.0.0", show_default=True, help="Version written into config.json.")
@click.option("--restart", is_flag=True, help="Discard checkpoints instead of resuming from them.")
@click.option("--register", is_flag=True, help="Record the folder and its sha256 in the shipped registry.")
@errors
def train(target: str, out_dir: Path, arch: str | None, steps: int | None, batch: int | None, patch: int | None,
          samples: int | None, seed: int, learning_rate: float | None, bf16: bool | None, threads: int | None,
          init: str | None, prestep: str | None, blurred_inputs: bool, model_version: str, restart: bool,
          register: bool) -> None:
    """Train a DBMID network (TARGET: classifier, defocus or motion) on synthetic blur of real tissue."""
    from dataclasses import replace

    from .training.train import MODEL_NAMES, TrainSettings
    from .training.train import train as train_model

    given: dict[str, Any] = {"steps": steps, "batch": batch, "patch": patch, "samples": samples,
                             "learning_rate": learning_rate, "bfloat16": bf16, "threads": threads, "init": init,
                             "prestep": prestep, "blurred_inputs": blurred_inputs or None}
    settings = replace(TrainSettings(seed=seed), **{k: v for k, v in given.items() if v is not None})

    def show(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        metrics = " ".join(f"{k} {v:.5f}" for k, v in logs.items())
        click.echo(f"epoch {epoch}/{epochs}  {metrics}")

    folder = train_model(target, out_dir, settings, arch=arch, version=model_version, restart=restart,
                         on_epoch=show)
    click.echo(f"model written to {folder}")
    if register:
        from .models.registry import PRETRAINED
        from .models.registry import register as register_model

        if folder.resolve().parent != PRETRAINED:
            raise UsageError(f"--register needs --out inside {PRETRAINED}")
        entry = register_model(MODEL_NAMES[target], folder)
        click.echo(f"registered {MODEL_NAMES[target]}: sha256 {entry['sha256']}")


@click.command()
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for evaluation.json, evaluation.md and the plots.")
@click.option("--method", "methods", multiple=True,
              help="Method to evaluate (repeat for several) [every method that can be built here].")
@click.option("--crops-per-source", type=int, default=None, help="Held-out crops per source image and setting.")
@click.option("--size", type=int, default=None, help="Side of the scored crops in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A small version (a minute or two) for smoke tests.")
@click.pass_context
@errors
def evaluate(ctx: click.Context, out_dir: Path, methods: tuple[str, ...], crops_per_source: int | None,
             size: int | None, seed: int, quick: bool) -> None:
    """The paper's evaluation on held-out tissue: confusion matrix, SSIM per stain, vs defocus and motion, mixed."""
    from .evaluation import DEFAULT_CROPS_PER_SOURCE, DEFAULT_SIZE, available_methods
    from .evaluation import evaluate as run_evaluation

    chosen = list(methods) or available_methods()
    quiet = ctx.obj["quiet"]

    def show(stage: str, done: int, total: int) -> None:
        if not quiet:
            click.echo(f"\r{stage}: {done}/{total}", nl=done >= total, err=True)

    run_evaluation(chosen, out_dir, crops_per_source=crops_per_source or DEFAULT_CROPS_PER_SOURCE,
                   size=size or DEFAULT_SIZE, seed=seed, quick=quick, progress=show)
    click.echo(f"evaluation of {', '.join(chosen)} written to {out_dir} (evaluation.md, evaluation.json, *.png)")
