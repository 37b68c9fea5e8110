"""Decodes/s of the importance-sampled log-likelihood at two pass sizes, same process and images.

``vaekit.log_likelihood`` decodes at most ``max_decodes`` images per forward pass, whatever k
(on a CPU ``MAX_DECODES_CPU`` = 2048 by default, ``MAX_DECODES`` = 8192 on a GPU). This times
both sizes on the same model, images, seed and k, alternating, for the paper's MLP
(784-200-200-50, Bernoulli) and the assignment's conv nets (K=16, Bernoulli), untrained (the
rate does not depend on the weights), and reports decodes/s, the minor page faults and the
system time of each (8192 made the OS hand out fresh pages every pass). The estimates differ
within their SE: the two sizes draw the noise in a different order.

    python benchmarks/eval_pass_size.py [--k 1000] [--conv-k 100] [--images 100] [--threads 1]

Prints one line per (model, size) and ``ratio=`` last: mlp decodes/s at 2048 / at 8192.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from vaekit import SimpleVAE, log_likelihood
from vaekit.config import ModelConfig
from vaekit.evaluation import MAX_DECODES, MAX_DECODES_CPU
from vaekit.model import build_model

from common import machine


def timed(model, x, k, max_decodes):
    """decodes/s, minor page faults and system seconds of one log_likelihood call."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    log_likelihood(model, x, k=k, max_decodes=max_decodes)
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return x.shape[0] * k / dt, r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=1000, help="importance samples per image, mlp (default 1000)")
    ap.add_argument("--conv-k", type=int, default=100, help="importance samples per image, conv nets (default 100)")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each size is kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: pin the process with taskset)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    torch.manual_seed(0)
    x = (torch.rand(args.images, 1, 28, 28) < 0.2).float()  # binary images [B, 1, 28, 28]
    models = {
        "mlp": (build_model(ModelConfig(arch="mlp", latent_dim=50, likelihood="bernoulli", posterior="diagonal"), (1, 28, 28)), args.k),
        "conv": (SimpleVAE(K=16, likelihood="bernoulli", posterior="diagonal").to(memory_format=torch.channels_last), args.conv_k),
    }
    best: dict[tuple[str, int], tuple[float, int, float]] = {}
    for name, (model, k) in models.items():
        log_likelihood(model, x[:10], k=20)  # warm-up
        for _ in range(args.rounds):
            for size in (MAX_DECODES, MAX_DECODES_CPU):
                got = timed(model, x, k, size)
                if got[0] > best.get((name, size), (0.0,))[0]:
                    best[(name, size)] = got
        for size in (MAX_DECODES, MAX_DECODES_CPU):
            rate, faults, sys_s = best[(name, size)]
            print(f"{name:<5} k={k:<5} {size:5d} decodes per pass: {rate:10,.0f} decodes/s, {faults:9,d} minor page faults, {sys_s:.2f} s system time")
    print(f"ratio={best[('mlp', MAX_DECODES_CPU)][0] / best[('mlp', MAX_DECODES)][0]:.2f}  (mlp decodes/s at {MAX_DECODES_CPU} / at {MAX_DECODES} per pass)")


if __name__ == "__main__":
    main()
