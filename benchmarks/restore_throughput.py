"""Restoration network throughput (input megapixels per second) on whatever backend Keras runs on.

Runs the shipped DL_defocus architecture (its trained weights when present; the speed does not depend on them)
on square images, one image per call and in batches of tiles, in float32 and under the mixed_bfloat16 policy,
after a warm-up, and reports the median of several timed calls. Use it on a CPU (TensorFlow, the default) or on
a GPU machine with ``KERAS_BACKEND=jax`` or ``KERAS_BACKEND=torch``:

    python benchmarks/restore_throughput.py --out results.json
    KERAS_BACKEND=jax python benchmarks/restore_throughput.py --sizes 2048 --batches 1,8,32 --tile 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _timing import median_time  # noqa: E402  (beside this script)

PAPER_MPS = 1920 * 1920 / 1.5 / 1e6  # 1920x1920 in 1.5 s on a Tesla P40


def _network(policy: str):  # type: ignore[no-untyped-def]
    import keras

    from wsi_deblur.models.config import ModelConfig
    from wsi_deblur.models.networks import build
    from wsi_deblur.models.registry import PRETRAINED, registry

    keras.mixed_precision.set_dtype_policy(policy)
    entry = registry().get("dl_defocus")
    if entry:
        folder = PRETRAINED / entry["folder"]
        config = ModelConfig.load(folder / "config.json")
        net = build(config)
        net.load_weights(str(folder / config.weights))
        return net, "shipped weights"
    from wsi_deblur.training.train import default_config

    return build(default_config("defocus")), "untrained (same architecture)"


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    return median_time(fn, repeats, warmups=2)  # two warm-ups: compilation and allocation


def _device_resident(net, x: np.ndarray, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call with the input already on the accelerator and no copy back (JAX only): the network's
    own speed, without the host transfers that a pipeline can overlap with compute."""
    import jax

    trainable = [v.value for v in net.trainable_variables]
    non_trainable = [v.value for v in net.non_trainable_variables]
    call = jax.jit(lambda tv, ntv, x: net.stateless_call(tv, ntv, x)[0])
    xd = jax.device_put(x)
    return _time(lambda: call(trainable, non_trainable, xd).block_until_ready(), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2048", help="image sides, comma-separated")
    parser.add_argument("--tile", type=int, default=1024, help="tile side for batched runs")
    parser.add_argument("--batches", default="1,4", help="tile batch sizes, comma-separated")
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device-resident", action="store_true",
                        help="also time the network with its input already on the GPU (JAX backend)")
    args = parser.parse_args()

    import keras

    rows = []
    for policy in args.policies.split(","):
        net, weights = _network(policy)
        rng = np.random.default_rng(0)
        for side in (int(s) for s in args.sizes.split(",")):
            x = rng.random((1, side, side, 3), dtype=np.float32)
            seconds = _time(lambda x=x, net=net: np.asarray(net.predict_on_batch(x)), args.repeats)
            rows.append({"policy": policy, "input": f"1x{side}x{side}", "seconds": seconds,
                         "mp_per_s": side * side / seconds / 1e6})
        for batch in (int(b) for b in args.batches.split(",")):
            x = rng.random((batch, args.tile, args.tile, 3), dtype=np.float32)
            seconds = _time(lambda x=x, net=net: np.asarray(net.predict_on_batch(x)), args.repeats)
            rows.append({"policy": policy, "input": f"{batch}x{args.tile}x{args.tile}", "seconds": seconds,
                         "mp_per_s": batch * args.tile**2 / seconds / 1e6})
            if args.device_resident and keras.backend.backend() == "jax":
                seconds = _device_resident(net, x, args.repeats)
                rows.append({"policy": policy, "input": f"{batch}x{args.tile}x{args.tile} on device",
                             "seconds": seconds, "mp_per_s": batch * args.tile**2 / seconds / 1e6})
        for row in [r for r in rows if r["policy"] == policy]:
            print(f"{row['policy']:>15} {row['input']:>16}  {row['seconds'] * 1000:9.1f} ms  "
                  f"{row['mp_per_s']:8.2f} MP/s  ({row['mp_per_s'] / PAPER_MPS:.1f}x the paper's P40)", flush=True)
    result = {
        "backend": keras.backend.backend(),
        "machine": platform.processor() or platform.machine(),
        "weights": weights,
        "paper_mp_per_s": PAPER_MPS,
        "rows": rows,
    }
    try:
        import jax

        result["devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
