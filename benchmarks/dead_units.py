"""Why the assignment's conv nets lose every active unit at lr >= 1e-3, and what keeps them.

Trains SimpleVAE (K=16, Bernoulli decoder, diagonal posterior) on dynamically binarized MNIST
for ``--steps`` steps at ``--lr`` (Adam, batch 64, constant schedule), once without and once
with ``--lr-warmup`` steps of linear learning-rate warm-up, same seed. For each run it prints
the active units and the KL on 2,000 binarized test images, and for each ReLU of the encoder
the fraction of its channels that are off on every one of 500 test images (a dead encoder
gives q(z|x) that does not depend on x, whatever the KL weight: ``--kl-warmup`` larger than
``--steps`` keeps beta near 0 for the whole run).

    python benchmarks/dead_units.py [--lr 1e-3] [--steps 600] [--lr-warmup 300] [--kl-warmup 0] [--seed 0]

Prints ``delta=`` last: active units with the lr warm-up minus without (of 16).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from vaekit import SimpleVAE, TrainConfig, binarize, fit, latent_stats, load_dataset, set_seed

from common import machine


def dead_channels(encoder: nn.Module, x: torch.Tensor) -> list[float]:
    """For each ReLU of ``encoder``: the fraction of its channels (units) that are 0 on every image of x."""
    out, h = [], x
    with torch.no_grad():
        for layer in encoder:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                on = (h > 0).flatten(2).any(dim=2) if h.ndim == 4 else h > 0  # [B, channels]
                out.append((~on.any(dim=0)).float().mean().item())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr-warmup", type=int, default=300)
    ap.add_argument("--kl-warmup", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(machine())
    data = load_dataset("mnist")
    test = binarize(data.test_images[:2000])
    units = {}
    for warmup in (0, args.lr_warmup):
        set_seed(args.seed)
        model = SimpleVAE(K=16, likelihood="bernoulli", posterior="diagonal")
        cfg = TrainConfig(batch_size=64, lr=args.lr, lr_schedule="constant", lr_warmup=warmup, kl_warmup=args.kl_warmup,
                          binarize="dynamic", max_steps=args.steps, epochs=100, seed=args.seed, device="cpu", calibrated=False)
        result = fit(model, data.train_images, cfg, progress=False)
        stats = latent_stats(model, test)
        dead = ", ".join(f"{d:.2f}" for d in dead_channels(model.encoder, test[:500]))
        units[warmup] = stats["active_units"]
        print(f"lr {args.lr:g}, lr warm-up {warmup:4d}, KL warm-up {args.kl_warmup}, {args.steps} steps, seed {args.seed}: "
              f"{stats['active_units']} of 16 active units, KL {sum(stats['kl_per_dim']):.2f} nats, last batch ELBO "
              f"{result.batch_elbos[-1]:.1f}; encoder ReLU channels dead on 500 test images: [{dead}]")
    print(f"delta={units[args.lr_warmup] - units[0]}  (active units with {args.lr_warmup} steps of lr warm-up minus without)")


if __name__ == "__main__":
    main()
