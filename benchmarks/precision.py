"""Quality of bf16 training against fp32: the quick preset, same steps, three seeds each.

Trains the quick preset (SimpleVAE K=2, batch 64, one sample of z, calibrated decoder, Adam
1.5e-3 with the anneal schedule over ``--steps`` steps) with ``--precision fp32`` and with
``--precision bf16`` (autocast around the networks; objective, optimizer and weights fp32),
for each seed, and measures every model the same way: the test ELBO on all 10k test images
with 10 samples of z, in fp32. Prints each run, the mean +- standard error (over seeds) of each
precision, and ``delta=`` (bf16 - fp32, nats; bf16 is accepted as auto's choice if >= -1) last.

On a CPU without native bf16 (AVX2) bf16 is emulated and several times slower than fp32:
the figure is still meaningful (the arithmetic is the same), only the seconds are not.

    python benchmarks/precision.py [--steps 600] [--seeds 0 1 2] [--device cpu] [--eval-samples 10]

On a busy 2-core machine pin it to one core (``taskset -c 0``): two OpenMP threads on
shared cores wait for each other at every operator.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

from vaekit import TrainConfig, fit, load_dataset, resolve_device, set_seed
from vaekit.config import ModelConfig, cpu_bf16_native, resolve_precision
from vaekit.evaluation import evaluate_elbo
from vaekit.model import build_model

from common import machine


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of every run (default 600)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-images", type=int, default=None, help="first N test images (default: all)")
    p.add_argument("--eval-samples", type=int, default=10, help="samples of z per test image (default 10)")
    args = p.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("mnist")
    test = data.test_images[: args.eval_images]
    print(f"machine: {machine()}")
    if device.type == "cpu":
        print(f"cpu bf16: {cpu_bf16_native()}; auto picks {resolve_precision('auto', device)}")
    print(f"recipe: quick preset, {args.steps} steps, seeds {args.seeds}, device {device}; test ELBO on {len(test)} images, {args.eval_samples} samples, fp32")
    results: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):  # the same seed: the same initialization, data order and noise
            cfg = dataclasses.replace(TrainConfig(), max_steps=args.steps, seed=seed, precision=precision, device=str(device))
            set_seed(seed)
            model = build_model(ModelConfig())
            t0 = time.perf_counter()
            fit(model, data.train_images, cfg, progress=False)
            train_s = time.perf_counter() - t0
            test_elbo = evaluate_elbo(model, test, n_samples=args.eval_samples, seed=0)
            results[precision].append(test_elbo["elbo"])
            print(f"seed {seed} {precision}: test ELBO {test_elbo['elbo']:8.2f} +- {test_elbo['elbo_se']:.2f} (images), "
                  f"train {train_s:.0f} s ({args.steps * cfg.batch_size / train_s:.0f} images/s)", flush=True)
    (m32, se32), (m16, se16) = mean_se(results["fp32"]), mean_se(results["bf16"])
    print(f"fp32: test ELBO {m32:.2f} +- {se32:.2f} (mean +- SE over {len(args.seeds)} seeds)")
    print(f"bf16: test ELBO {m16:.2f} +- {se16:.2f} (mean +- SE over {len(args.seeds)} seeds)")
    paired = [b - a for a, b in zip(results["fp32"], results["bf16"])]
    print(f"paired bf16 - fp32 per seed: {', '.join(f'{d:+.2f}' for d in paired)}; SE of the mean difference {mean_se(paired)[1]:.2f}")
    print(f"delta={m16 - m32:.2f}")


if __name__ == "__main__":
    main()
