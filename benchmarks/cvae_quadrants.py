"""Sohn et al. 2015, Sec. 5.1, on this machine: predict the missing quadrants of an MNIST digit from 1, 2 or 3 given
quadrants. For each, the negative conditional log-likelihood -log p(x_missing | x_given), nats per test image
(lower is better), of

* the CVAE: ``vaekit train --condition quadrants --quadrants N`` (q(z|x, c), p(x|z, c), p(z) = N(0, I)), its CLL
  by importance sampling from the recognition network with ``--k`` samples (``vaekit eval``), and
* a deterministic network of the same size as the CVAE's generation network (its mlp, without z's inputs) from the
  given part to the missing one, trained here with the same likelihood; its CLL is the likelihood of the missing
  pixels at its prediction (exact),

both trained for the same ``--steps`` (or ``--minutes`` of training time) each on dynamically binarized MNIST (the test set binarized once,
with the fixed seed), a Bernoulli likelihood over the missing pixels. Prints the table next to the published
figures and ``delta=`` last: the CVAE's CLL minus the baseline's at 1 quadrant (negative: the CVAE is better).

    python benchmarks/cvae_quadrants.py [--steps 1000 | --minutes 3] [--quadrants 1 2 3] [--k 100] [--test 2000] [--hidden 500,500]

A step budget is the same training for both networks whatever else the machine runs; a time budget is not, on a
shared machine (each model's steps and the load are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from vaekit import load_dataset, set_seed
from vaekit.architectures import ARCHITECTURES
from vaekit.commands import eval_run, train_run
from vaekit.conditioning import ScoredLikelihood
from vaekit.conditions import CONDITIONS
from vaekit.config import ModelConfig, TrainConfig
from vaekit.config import cpu_flags as vaekit_cpu_flags
from vaekit.data import binarize
from vaekit.likelihoods import make_likelihood
from vaekit.runfolder import RunFolder

from common import machine

#: Pyro's reproduction of Sohn et al.'s Table 1 (tutorial/source/cvae.ipynb: MLPs 500-500, z of 200, grey-level
#: targets with binary cross-entropy, 50 epochs with early stopping): negative CLL on the test set, nats per image.
#: Sohn et al. 2015's own Table 1 could not be read from this workplace (no copy of the paper's text); its row
#: is left for whoever adds it.
PYRO = {"NN": {1: 100.4, 2: 61.9, 3: 25.4}, "CVAE": {1: 71.8, 2: 51.0, 3: 24.2}}
PAPER: dict[str, dict[int, float]] = {}
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_flags() -> str:
    """The vector units of /proc/cpuinfo's flags that decide the CPU's speed here (avx2, avx512f, avx512_bf16, amx)."""
    flags = (vaekit_cpu_flags() or set())
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))


def model_config(args, quadrants: int) -> ModelConfig:
    return ModelConfig(arch="mlp", latent_dim=args.latent_dim, likelihood="bernoulli", posterior="diagonal", condition="quadrants",
                       options={"hidden": args.hidden, "activation": "relu", "quadrants": quadrants})


def train_config(args) -> TrainConfig:
    return TrainConfig(dataset="mnist", binarize="dynamic", batch_size=args.batch_size, lr=args.lr, lr_schedule="anneal",
                       calibrated=False, time_budget=None if args.steps else args.minutes, max_steps=args.steps, epochs=100_000,
                       device="cpu", seed=args.seed, precision=args.precision,
                       eval_samples=1, monitor_images=1000)


def cvae_row(args, quadrants: int, out: Path) -> dict:
    """Train the CVAE with vaekit train for --minutes, then its CLL by importance sampling (vaekit eval)."""
    t0 = time.perf_counter()
    train_run(model_config(args, quadrants), train_config(args), out, overwrite=True, progress=False)
    rows = RunFolder(out).metrics()
    r = eval_run(out, k=args.k, limit=args.test, n_samples=1, device="cpu", progress=False)
    return {"cll": -r["log_likelihood"], "se": r["log_likelihood_se"], "elbo": -r["elbo"], "steps": rows[-1]["steps"],
            "epochs": rows[-1]["epoch"], "train_seconds": rows[-1]["seconds"], "eval_seconds": r["seconds"],
            "wall_seconds": time.perf_counter() - t0, "kl": r["kl"], "active_units": r["active_units"]}


def baseline_net(args, condition):
    """The CVAE's generation network without z: the mlp from c [B, 784] to the logits of the image [B, 1, 28, 28]."""
    arch = ARCHITECTURES["mlp"](ARCHITECTURES.options("mlp", {"hidden": args.hidden, "activation": "relu"}))
    _, decoder = arch.build((1, 28, 28), condition.size, 2)
    return decoder


def baseline_row(args, quadrants: int, data, test: torch.Tensor) -> dict:
    """Train the deterministic network for --steps or --minutes (Adam, the same batch, lr, schedule and binarization),
    then its exact CLL."""
    set_seed(args.seed)
    condition = CONDITIONS["quadrants"](CONDITIONS.options("quadrants", {"quadrants": quadrants})).bind((1, 28, 28))
    net = baseline_net(args, condition)
    likelihood = ScoredLikelihood(make_likelihood("bernoulli"), condition.scored())  # log p(x_missing | logits)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    train = data.train_images  # [N, 1, 28, 28] in [0, 1]
    gen = torch.Generator().manual_seed(args.seed)
    budget, spent, steps = args.minutes * 60, 0.0, 0
    done = (lambda: steps >= args.steps) if args.steps else (lambda: spent >= budget)
    while not done():
        for idx in torch.randperm(len(train), generator=gen).split(args.batch_size):
            t = time.perf_counter()
            fraction = steps / args.steps if args.steps else spent / budget
            lr = args.lr * min(1.0, 5 * (1 - fraction))  # the CVAE's anneal: constant, then linear to 0 over the last 20%
            for group in opt.param_groups:
                group["lr"] = lr
            x = torch.bernoulli(train[idx])  # dynamic binarization
            loss = -likelihood.log_prob(x.flatten(1)[:, None], net(condition.vector(x, None)).flatten(1)[:, None], torch.zeros(())).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            spent += time.perf_counter() - t
            if done():
                break
    with torch.no_grad():
        nll = torch.cat([-likelihood.log_prob(x.flatten(1)[:, None], net(condition.vector(x, None)).flatten(1)[:, None], torch.zeros(()))[:, 0]
                         for x in test.split(1000)])  # [M]
    params = sum(p.numel() for p in net.parameters())
    return {"cll": nll.mean().item(), "se": nll.std().item() / math.sqrt(len(nll)), "steps": steps, "train_seconds": spent, "parameters": params}


def table(results: dict, quadrants: list[int]) -> str:
    head = f"{'negative CLL, nats per test image':<44}" + "".join(f"{f'{q} quadrant' + 's' * (q > 1):>16}" for q in quadrants)
    lines = [head]

    def row(name, values):
        lines.append(f"{name:<44}" + "".join(f"{values.get(q, '-') if isinstance(values.get(q), str) else _fmt(values.get(q)):>16}" for q in quadrants))

    row("Sohn et al. 2015, NN (baseline)", PAPER.get("NN", {}))
    row("Sohn et al. 2015, CVAE", PAPER.get("CVAE", {}))
    row("Pyro's reproduction, NN (baseline)", PYRO["NN"])
    row("Pyro's reproduction, CVAE", PYRO["CVAE"])
    row("this run, deterministic NN (same size)", {q: results[q]["nn"] for q in quadrants if q in results})
    row("this run, CVAE (IS from q(z|x, c))", {q: results[q]["cvae"] for q in quadrants if q in results})
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return f"{v['cll']:.2f} ± {v['se']:.2f}"
    return f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps of each model (default: 1000; 0: --minutes)")
    p.add_argument("--minutes", type=float, default=3.0, help="training time of each model, with --steps 0 (default: 3)")
    p.add_argument("--quadrants", type=int, nargs="+", default=[1, 2, 3], choices=(1, 2, 3))
    p.add_argument("--k", type=int, default=100, help="importance samples per test image (Sohn et al.: S = 100)")
    p.add_argument("--test", type=int, default=2000, help="the first N test images (default: 2000; 0: all 10,000)")
    p.add_argument("--hidden", default="500,500", help="the mlp's hidden layers (Pyro's reproduction: 500,500)")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="the CVAE's training arithmetic (default fp32, as the baseline's; auto picks bf16 on native-bf16 CPUs)")
    p.add_argument("--out", type=Path, default=Path("runs/cvae-quadrants"), help="folder for the CVAE runs")
    args = p.parse_args()
    print(f"machine: {machine()}; {cpu_flags()}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"setting: mlp {args.hidden} ReLU, K={args.latent_dim}, Bernoulli, dynamic binarization, batch {args.batch_size}, "
          f"Adam {args.lr} (anneal), {f'{args.steps} steps' if args.steps else f'{args.minutes:g} min of training'} per model; CLL on "
          f"{args.test or 'all 10,000'} test images, k={args.k}")
    data = load_dataset("mnist")
    args.test = args.test or None
    test = binarize(data.test_images)[: args.test]  # as vaekit eval sees them
    results = {}
    for q in args.quadrants:
        nn_row = baseline_row(args, q, data, test)
        print(f"{q} quadrant(s): deterministic NN {nn_row['cll']:.2f} ± {nn_row['se']:.2f} ({nn_row['steps']} steps in "
              f"{nn_row['train_seconds']:.0f} s, {nn_row['parameters']:,} parameters; load {os.getloadavg()[0]:.1f})", flush=True)
        cvae = cvae_row(args, q, args.out / f"q{q}")
        print(f"{q} quadrant(s): CVAE {cvae['cll']:.2f} ± {cvae['se']:.2f} (-ELBO {cvae['elbo']:.2f}, {cvae['steps']} steps in "
              f"{cvae['train_seconds']:.0f} s, KL {cvae['kl']:.2f}, {cvae['active_units']} active units; IS in {cvae['eval_seconds']:.0f} s; "
              f"load {os.getloadavg()[0]:.1f})", flush=True)
        results[q] = {"nn": nn_row, "cvae": cvae}
    print(table(results, args.quadrants))
    print(f"load average {os.getloadavg()[0]:.1f} at the end (1 min; {os.cpu_count()} CPUs)")
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "results": results, "pyro": PYRO, "paper": PAPER}
    (RESULTS / "cvae_quadrants.json").write_text(json.dumps(record, indent=2) + "\n")
    first = args.quadrants[0]
    print(f"delta={results[first]['cvae']['cll'] - results[first]['nn']['cll']:.2f}  (CVAE - NN at {first} quadrant(s), nats; "
          f"Pyro's reproduction: {PYRO['CVAE'][first] - PYRO['NN'][first]:.1f})")


if __name__ == "__main__":
    main()
