"""Test NLL on dynamically binarized MNIST, next to the literature's 86.76 nats.

Trains a SimpleVAE with a Bernoulli decoder on dynamically binarized MNIST for a budget
of training time (or evaluates an existing run folder with --run), then estimates the
test negative log-likelihood by importance sampling with k samples per image (5000, as
Burda et al. 2016), on the first --images test images (the fixed-seed binarization of
``vaekit.data.BINARIZE_SEED``). The reference figure is the 1-layer VAE of Burda et al.
2016, Table 1: 86.76 nats (k=5000, 50 latent units, two deterministic hidden layers of 200).

    python benchmarks/nll_binarized_mnist.py [--minutes 15] [--latent-dim 16] [--lr 1e-3] [--kl-warmup 0] [--lr-warmup 0] [--k 5000] [--images 10000]
    python benchmarks/nll_binarized_mnist.py --run RUN_DIR [--k 5000] [--images 500]

Prints the settings, the test ELBO and NLL with their standard errors, and
``delta=`` (vaekit's NLL minus 86.76, nats; lower is better) last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vaekit.commands import eval_run, train_run
from vaekit.config import ModelConfig, TrainConfig

from common import machine

LITERATURE_NLL = 86.76  # Burda et al. 2016, VAE with 1 stochastic layer, k=5000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="evaluate this trained run instead of training one")
    ap.add_argument("--out", type=Path, default=Path("runs/nll-binarized"), help="run folder to train into")
    ap.add_argument("--minutes", type=float, default=15.0, help="training time budget (default 15)")
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-warmup", type=int, default=0, help="steps of linear KL warm-up (default 0: none)")
    ap.add_argument("--lr-warmup", type=int, default=0, help="steps of linear learning-rate warm-up (default 0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=5000, help="importance samples per image (default 5000)")
    ap.add_argument("--images", type=int, default=10000, help="first N test images (default all 10000)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    print(machine())

    run = args.run
    if run is None:
        model_cfg = ModelConfig(latent_dim=args.latent_dim, likelihood="bernoulli", posterior="diagonal")
        train_cfg = TrainConfig(
            binarize="dynamic", lr=args.lr, kl_warmup=args.kl_warmup, lr_warmup=args.lr_warmup, seed=args.seed, time_budget=args.minutes,
            epochs=1000, device=args.device,
        )
        t0 = time.perf_counter()
        run = train_run(model_cfg, train_cfg, args.out, overwrite=True, progress=False)
        print(f"trained in {time.perf_counter() - t0:.0f} s wall (incl. per-epoch test ELBO)")
    cfg = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"model {cfg['model']}, train {cfg['train']}")
    print(f"{rows[-1]['epoch']} epochs, {rows[-1]['steps']} steps, {rows[-1]['seconds']:.0f} s of training")
    r = eval_run(run, k=args.k, limit=args.images, device=args.device, progress=False)
    nll, se = -r["log_likelihood"], r["log_likelihood_se"]
    print(f"test images: {r['n_images']}, k={r['k']}, {r['seconds']:.0f} s on {r['device']}")
    print(f"test ELBO {r['elbo']:.2f} +- {r['elbo_se']:.2f} nats; active units {r['active_units']} of {len(r['kl_per_dim'])}")
    print(f"test NLL {nll:.2f} +- {se:.2f} nats (literature: {LITERATURE_NLL})")
    print(f"delta={nll - LITERATURE_NLL:.2f}")


if __name__ == "__main__":
    main()
