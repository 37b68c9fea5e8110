"""Training throughput of the model of parts: this checkout against an earlier vaekit, and per architecture.

(a) With ``--baseline DIR`` (another vaekit checkout, e.g. ``git worktree add /tmp/vaekit-old 6a0698a``):
    the assignment recipe (SimpleVAE, batch 256, 10 samples of z, learned sigma_x) and the quick
    preset (batch 64, 1 sample, calibrated), each trained by ``vaekit.fit`` of this checkout and of
    DIR in fresh subprocesses, alternating, ``--rounds`` times; the median images/s of each.
(b) images/s of ``--arch mlp`` (784-200-200-50, batch 100, Bernoulli on dynamically binarized MNIST)
    with the ELBO (k = 1) and with IWAE k = 50, and of ``--arch conv`` on 32x32x3 images (batch 64).
(c) the quick preset trained from MNIST's uint8 bytes against its float32 images.
Prints a table, then ``ratio=`` last: this checkout / the baseline on the assignment recipe
(1.00 without ``--baseline``).

    python benchmarks/parts_throughput.py [--baseline /tmp/vaekit-old] [--rounds 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# one measurement, run in a fresh process: warm-up steps, then timed steps of vaekit.fit
PROBE = r"""
import json, sys, time, dataclasses, torch
import vaekit
from vaekit import TrainConfig, fit, load_dataset, set_seed
spec = json.loads(sys.argv[1])
cfg = TrainConfig(**spec["train"])
if spec["data"] == "mnist":
    images = load_dataset("mnist").train_images
elif spec["data"] == "mnist-uint8":  # the bytes: made float one batch at a time
    images = load_dataset("mnist").train_uint8
else:  # random colour images: throughput does not depend on the content
    images = torch.rand(4096, *spec["data"], generator=torch.Generator().manual_seed(0))
def build():
    set_seed(0)
    if spec.get("model") is None:
        return vaekit.SimpleVAE()
    from vaekit.config import ModelConfig
    from vaekit.model import build_model
    return build_model(ModelConfig(**spec["model"]), tuple(images.shape[1:]))
model = build()
fit(model, images, dataclasses.replace(cfg, max_steps=spec["warmup"]), progress=False)
t0 = time.perf_counter()
fit(model, images, dataclasses.replace(cfg, max_steps=spec["steps"]), progress=False)
print(json.dumps({"images_per_s": spec["steps"] * cfg.batch_size / (time.perf_counter() - t0)}))
"""


def measure(src: Path, spec: dict) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(spec)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", type=Path, default=None, help="another vaekit checkout to compare with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    common = {"device": "cpu", "epochs": 1, "lr_schedule": "constant", "precision": "fp32"}  # fp32: the same arithmetic in both
    recipes = {
        "assignment recipe (b256, N=10)": {"train": {**common, "batch_size": 256, "samples": 10, "lr": 1e-3, "calibrated": False}},
        "quick preset (b64, N=1)": {"train": {**common, "batch_size": 64, "samples": 1}},
    }
    archs = {
        "mlp 784-200-200-50, ELBO k=1 (b100)": {
            "model": {"arch": "mlp", "latent_dim": 50, "likelihood": "bernoulli", "posterior": "diagonal"},
            "train": {**common, "batch_size": 100, "samples": 1, "binarize": "dynamic", "calibrated": False},
        },
        "mlp 784-200-200-50, IWAE k=50 (b100)": {
            "model": {"arch": "mlp", "latent_dim": 50, "likelihood": "bernoulli", "posterior": "diagonal"},
            "train": {**common, "batch_size": 100, "objective": "iwae", "iw_samples": 50, "binarize": "dynamic", "calibrated": False},
        },
        "conv 32x32x3, K=16 (b64, N=1)": {
            "model": {"arch": "conv", "latent_dim": 16}, "data": [3, 32, 32],
            "train": {**common, "batch_size": 64, "samples": 1},
        },
    }
    print(f"machine: {machine()}")
    rows = []
    ratio = 1.0
    for name, spec in recipes.items():
        spec = {"data": "mnist", "warmup": args.warmup, "steps": args.steps, **spec}
        new, old = [], []
        for _ in range(args.rounds):  # alternate, so that a change in the machine's load hits both
            new.append(measure(SRC, spec))
            if args.baseline is not None:
                old.append(measure(args.baseline / "src", spec))
        row = f"{name:<40} this checkout {statistics.median(new):7.1f} images/s"
        if old:
            r = statistics.median(new) / statistics.median(old)
            row += f"   baseline {statistics.median(old):7.1f} images/s   this/baseline {r:.3f}"
            ratio = r if "assignment" in name else ratio
        rows.append(row)
        print(row, flush=True)
    for name, spec in archs.items():
        spec = {"data": "mnist", "warmup": args.warmup, "steps": args.steps, **spec}
        ips = statistics.median(measure(SRC, spec) for _ in range(args.rounds))
        print(f"{name:<40} this checkout {ips:7.1f} images/s", flush=True)
    # the quick preset from uint8 bytes against float32 images, alternating
    spec = {"warmup": args.warmup, "steps": args.steps, **recipes["quick preset (b64, N=1)"]}
    u8, f32 = [], []
    for _ in range(args.rounds):
        u8.append(measure(SRC, {**spec, "data": "mnist-uint8"}))
        f32.append(measure(SRC, {**spec, "data": "mnist"}))
    print(f"{'quick preset from uint8 / from float32':<40} {statistics.median(u8):7.1f} / {statistics.median(f32):7.1f} images/s"
          f" = {statistics.median(u8) / statistics.median(f32):.3f}", flush=True)
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
