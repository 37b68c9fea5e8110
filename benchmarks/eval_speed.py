"""The importance-sampled log-likelihood's speed, eager against fused (``vaekit.fusion``), same process and images.

For Burda et al.'s one-layer MLP (784-200-200-50) and two-layer network (``--arch hvae``: stochastic layers of 100
and 50), Bernoulli, untrained (the rate does not depend on the weights), this times ``vaekit.log_likelihood`` on
the same binary images, seed and k with ``fuse=False`` (eager) and with a ``FusedLogPx`` (compiled once: that
first call is not timed), alternating, the best of ``--rounds`` each. For each it reports decodes/s, the
decoder's GFLOP/s against this CPU's fp32 matmul rate measured in the same run, and the minutes the full test
set (10,000 images at k = 5000) would take at that rate. The estimates of the two modes agree to float32
rounding (checked: printed as the largest difference, in nats).

    python benchmarks/eval_speed.py [--k 1000] [--images 100] [--threads 2] [--rounds 3]

Prints one line per (model, mode) and ``ratio=`` last: the one-layer MLP's decoder GFLOP/s, fused, over the
matmul rate (the issue's goal: 0.5).
"""

from __future__ import annotations

import argparse
import time

import torch

from vaekit import log_likelihood
from vaekit.architectures import flops_per_image
from vaekit.config import ModelConfig
from vaekit.evaluation import matmul_peak_gflops
from vaekit.fusion import FusedLogPx
from vaekit.model import build_model

from common import machine

MODELS = {  # the literature rows' networks (benchmarks/literature.py)
    "mlp": ModelConfig(arch="mlp", latent_dim=50, likelihood="bernoulli", posterior="diagonal", hidden="200,200"),
    "hvae": ModelConfig(arch="hvae", latent_dim=50, likelihood="bernoulli", posterior="diagonal", lower_layers="100",
                        hidden="200,200;100,100"),
}
FULL_DECODES = 10_000 * 5000  # the full test set at k = 5000


def timed(model, x, k, fuse):
    """decodes/s and the estimates [B] of one log_likelihood call."""
    t0 = time.perf_counter()
    ll = log_likelihood(model, x, k=k, fuse=fuse)
    return x.shape[0] * k / (time.perf_counter() - t0), ll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    ap.add_argument("--images", type=int, default=100, help="binary images (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each mode is kept")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole 2-core CPU, as vaekit eval)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    peak = matmul_peak_gflops(seconds=2.0)
    print(f"fp32 matmul rate: {peak:.1f} GFLOP/s ({args.threads} threads)")
    torch.manual_seed(0)
    x = (torch.rand(args.images, 1, 28, 28) < 0.2).float()  # binary images [B, 1, 28, 28]
    shares = {}
    for name, cfg in MODELS.items():
        torch.manual_seed(0)
        model = build_model(cfg, (1, 28, 28)).eval()
        flops = flops_per_image(model.decoder, torch.zeros(1, model.latent_dim))
        fused = FusedLogPx(model)
        t0 = time.perf_counter()
        log_likelihood(model, x, k=args.k, fuse=fused)  # compiles for the timed calls' shapes, and checks against eager mode
        compile_s = time.perf_counter() - t0
        if fused.failed:
            raise SystemExit(f"{name}: {fused.failed}")
        log_likelihood(model, x, k=args.k, fuse=False)  # warm-up
        best = {"eager": (0.0, None), "fused": (0.0, None)}
        for _ in range(args.rounds):
            for mode, fuse in (("eager", False), ("fused", fused)):
                rate, ll = timed(model, x, args.k, fuse)
                if rate > best[mode][0]:
                    best[mode] = (rate, ll)
        diff = (best["eager"][1] - best["fused"][1]).abs().max().item()
        for mode in ("eager", "fused"):
            rate = best[mode][0]
            gflops = rate * flops / 1e9
            shares[(name, mode)] = gflops / peak
            print(f"{name:<5} {mode}: {rate:10,.0f} decodes/s, decoder {gflops:5.1f} GFLOP/s ({gflops / peak:4.0%} of the matmul rate), "
                  f"full test set at k=5000: {FULL_DECODES / rate / 60:4.1f} min"
                  + (f"  (first call, compiling: {compile_s:.0f} s; estimates differ by <= {diff:.2g} nats)" if mode == "fused" else ""))
        print(f"{name:<5} fused/eager: {best['fused'][0] / best['eager'][0]:.2f}")
    print(f"ratio={shares[('mlp', 'fused')]:.2f}  (mlp decoder GFLOP/s, fused, / the fp32 matmul rate; eager: {shares[('mlp', 'eager')]:.2f})")


if __name__ == "__main__":
    main()
