"""How many test images and samples of z the per-epoch monitor needs: the test ELBO's standard error.

For a trained run, draws 10 independent single-sample ELBOs of every test image (fp32), then
for M images in {1000, 2000, 5000, 10000} (the monitor's fixed random subset, ``train.monitor.monitor_subset``) and S samples in {1, 2, 10} takes each
image's estimate as the mean of its first S draws and the standard error over the M images
(std / sqrt(M); the sample noise adds to the per-image variance). Prints the table, each cell's
cost in decoded images (M x S), and the cheapest cell with SE < ``--target`` last.

    python benchmarks/monitor_se.py RUN_DIR [--target 2]
"""

from __future__ import annotations

import argparse
import math

import torch

from vaekit.data import load_dataset
from vaekit.evaluation import seeded_rng
from vaekit.model import eval_mode
from vaekit.objectives import make_objective
from vaekit.runfolder import RunFolder, load_run, split_images
from vaekit.train.monitor import monitor_subset

from common import machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--target", type=float, default=2.0, help="largest acceptable SE, nats (default 2)")
    p.add_argument("--draws", type=int, default=10)
    args = p.parse_args()
    model, meta = load_run(args.run_dir)
    train_cfg = RunFolder(args.run_dir).train_config()
    images = split_images(load_dataset(train_cfg.dataset), train_cfg, "test")  # [M, C, H, W]
    print(f"machine: {machine()}")
    draws = []
    with torch.no_grad(), eval_mode(model), seeded_rng(0, torch.device("cpu")):
        for _ in range(args.draws):
            per_image = [make_objective("elbo")(model, images[i : i + 500].float()).elbo.double() for i in range(0, len(images), 500)]
            draws.append(torch.cat(per_image))
    d = torch.stack(draws)  # [draws, M] single-sample ELBOs
    print(f"test ELBO ({len(images)} images, {args.draws} samples): {d.mean().item():.2f}; "
          f"per-image std {d.mean(0).std().item():.1f}, within-image (one sample) std {d.std(0).mean().item():.1f}")
    print("| images | samples | decoded images | test ELBO | SE |")
    print("| --- | --- | --- | --- | --- |")
    best = None
    for m in (1000, 2000, 5000, 10000):
        for s in (1, 2, 10):
            if m > d.shape[1] or s > d.shape[0]:
                continue
            est = monitor_subset(d[:s].T, m).T.mean(0)  # [m] the monitor's images
            if m < d.shape[1]:
                first = d[:s, :m].mean(0).mean().item()
            se = est.std().item() / math.sqrt(m)
            note = f" (first {m}: {first:.2f})" if m < d.shape[1] else ""
            print(f"| {m} | {s} | {m * s} | {est.mean().item():.2f}{note} | {se:.2f} |")
            if se < args.target and (best is None or m * s < best[0]):
                best = (m * s, m, s, se)
    if best is None:
        print(f"cheapest with SE < {args.target}: none")
    else:
        print(f"cheapest with SE < {args.target}: images={best[1]} samples={best[2]} (SE {best[3]:.2f})")


if __name__ == "__main__":
    main()
