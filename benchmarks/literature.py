"""Burda et al. 2016, Table 1 (one stochastic layer), reproduced on this machine: test NLL of the VAE and
the IWAE (k = 5, 50) on dynamically binarized MNIST, each trained for at most --minutes of training time.

The setting is the paper's: a Bernoulli decoder, the paper's network (``--arch mlp``, 784-200-200-50,
tanh, a diagonal posterior), dynamic binarization of the training images, and the test NLL from the
importance-sampled estimate with k = 5000 on **all 10,000 test images**, binarized once with the fixed
seed (``vaekit.data.BINARIZE_SEED``), with its standard error. The optimizer settings, batch size,
schedule and KL warm-up are ours (``--batch-size``, ``--lr``, ``--lr-schedule``, ``--kl-warmup``).

While a row trains, every ``--curve-every`` minutes of training time (the time spent evaluating is not
counted) it records the test ELBO (all 10,000 images, one sample) and the test NLL at k = 5000 on a fixed
subset of ``--subset`` images: the NLL-against-minutes curves, saved as JSON and PNG in
benchmarks/results/. Prints a table beside the paper's and ``delta=`` last: the VAE row's NLL minus 86.76.

    python benchmarks/literature.py [--rows vae,iwae5,iwae50] [--minutes 60] [--k 5000] [--jobs 2] [--table]

``--jobs 2`` trains two rows at once, each in its own process pinned to one core (``--core``), so one
torch thread: these small MLPs train as fast on one core as on two (measured: 9,213 vs 8,926 images/s for the VAE, 897 vs 872 for IWAE
k=50, batch 100), so on a 2-core CPU each row still gets this CPU's full speed for its hour.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from vaekit import evaluate_elbo, latent_stats, load_dataset, log_likelihood, set_seed
from vaekit.config import ModelConfig, TrainConfig
from vaekit.data import binarize
from vaekit.model import build_model
from vaekit.train import fit

from common import machine

PAPER = {"vae": 86.76, "iwae5": 85.54, "iwae50": 84.78}  # Burda et al. 2016, Table 1, 1 stochastic layer
ROWS = {
    "vae": {"objective": "elbo", "samples": 1},
    "iwae5": {"objective": "iwae", "iw_samples": 5},
    "iwae50": {"objective": "iwae", "iw_samples": 50},
}
RESULTS = Path(__file__).resolve().parent / "results"


def nll(model, images, k, seed=0):
    """Test NLL per image (nats) with its standard error, by importance sampling with k samples."""
    ll = torch.cat([log_likelihood(model, images[i : i + 100], k=k, seed=seed * 100_003 + i) for i in range(0, len(images), 100)])
    return -ll.mean().item(), ll.std().item() / math.sqrt(len(ll))


def run_row(name, args, data, test):
    set_seed(args.seed)
    model = build_model(ModelConfig(arch="mlp", latent_dim=50, likelihood="bernoulli", posterior="diagonal"), (1, 28, 28))
    cfg = TrainConfig(
        **ROWS[name], binarize="dynamic", batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
        kl_warmup=args.kl_warmup, calibrated=False, time_budget=args.minutes, epochs=100_000, device="cpu", seed=args.seed,
    )
    subset = test[: args.subset]
    curve, next_mark = [], args.curve_every

    def on_epoch_end(epoch, stats):
        nonlocal next_mark
        minutes = stats["seconds"] / 60
        if minutes < next_mark and minutes < args.minutes:
            return
        next_mark = minutes + args.curve_every
        elbo = evaluate_elbo(model, test, n_samples=1, seed=0)
        point = {"minutes": minutes, "epoch": epoch + 1, "steps": stats["steps"], "test_elbo": elbo["elbo"],
                 "nll_subset": nll(model, subset, args.k)[0]}
        curve.append(point)
        print(f"  {name}: {minutes:5.1f} min, epoch {epoch + 1}: test ELBO {point['test_elbo']:.2f}, "
              f"NLL ({len(subset)} images) {point['nll_subset']:.2f}", flush=True)

    t0 = time.perf_counter()
    result = fit(model, data.train_images, cfg, progress=False, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t0
    elbo = evaluate_elbo(model, test, n_samples=10, seed=0)
    t1 = time.perf_counter()
    value, se = nll(model, test, args.k)
    stats = latent_stats(model, test)
    return {
        "row": name, "paper": PAPER[name], "nll": value, "nll_se": se, "test_elbo": elbo["elbo"], "test_elbo_se": elbo["elbo_se"],
        "active_units": stats["active_units"], "train_minutes": result.seconds / 60, "wall_minutes": wall / 60,
        "eval_minutes": (time.perf_counter() - t1) / 60, "steps": result.steps, "epochs": result.epochs_done,
        "settings": {k: v for k, v in vars(cfg).items() if k in ("objective", "samples", "iw_samples", "batch_size", "lr", "lr_schedule", "kl_warmup")},
        "threads": torch.get_num_threads(), "images": len(test), "k": args.k,
        "curve": curve,
    }


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    for ax, key, title in ((fig.add_subplot(1, 2, 1), "nll_subset", "test NLL (k=5000, subset)"), (fig.add_subplot(1, 2, 2), "test_elbo", "test ELBO")):
        for r in rows:
            ax.plot([p["minutes"] for p in r["curve"]], [(-1 if key == "test_elbo" else 1) * p[key] for p in r["curve"]], marker="o", label=r["row"])
            if key == "nll_subset":
                ax.axhline(r["paper"], ls=":", lw=1, color=ax.lines[-1].get_color())
        ax.set_xlabel("training minutes")
        ax.set_ylabel("nats (lower is better)" if key == "nll_subset" else "-ELBO, nats (lower is better)")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def save(path, args, rows):
    path.write_text(json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=2) + "\n")


def load_row(tag, name):
    """The row saved by ``save(RESULTS / f"{tag}-{name}.json", ...)``."""
    return json.loads((RESULTS / f"{tag}-{name}.json").read_text())["rows"][0]


def run_in_processes(args, names):
    """Each row in its own process pinned to one core, ``args.jobs`` at a time; their rows."""
    argv, cores = sys.argv[1:], sorted(os.sched_getaffinity(0))
    pending, running, rows = list(names), [], {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            core = next(c for c in cores if c not in {c for _, _, c in running})
            cmd = [sys.executable, __file__, *argv, "--rows", name, "--jobs", "1", "--core", str(core), "--child"]
            running.append((name, subprocess.Popen(cmd), core))
        time.sleep(5)
        for name, proc, core in list(running):
            if proc.poll() is not None:
                running.remove((name, proc, core))
                if proc.returncode != 0:
                    raise SystemExit(f"row {name} failed with exit code {proc.returncode}")
                rows[name] = load_row(args.tag, name)  # written by the child
    return [rows[name] for name in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="vae,iwae5,iwae50")
    ap.add_argument("--minutes", type=float, default=60.0, help="training time per row (default 60)")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--images", type=int, default=10000, help="test images for the final NLL (default all)")
    ap.add_argument("--subset", type=int, default=1000, help="test images for the curves' NLL (default 1000)")
    ap.add_argument("--curve-every", type=float, default=10.0, help="minutes of training between curve points")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", default="anneal")
    ap.add_argument("--kl-warmup", type=int, default=5000, help="steps of linear KL warm-up (default 5000, from the sweep)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--core", type=int, default=None, help="run on this CPU core only (one torch thread)")
    ap.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                    help="rows trained at once, each in its own process on one core (default 2, or 1 on one core)")
    ap.add_argument("--tag", default="literature", help="name of the JSON and PNG in benchmarks/results/")
    ap.add_argument("--table", action="store_true", help="train nothing: the table, JSON and PNG from the rows' saved results/TAG-ROW.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one row of --jobs: only its TAG-ROW.json
    args = ap.parse_args()  # repeated options: the last wins (run_in_processes appends its own)
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"--rows must name rows among {', '.join(ROWS)}, got {', '.join(unknown)}")
    if args.jobs > len(os.sched_getaffinity(0)):
        raise SystemExit(f"--jobs {args.jobs}: more rows at once than the {len(os.sched_getaffinity(0))} cores this process may use")
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})  # vaekit gives torch one thread per core it may use
        torch.set_num_threads(1)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}; {torch.get_num_threads()} threads", flush=True)
    RESULTS.mkdir(exist_ok=True)
    if args.table:
        rows = [load_row(args.tag, name) for name in names]
    elif args.jobs > 1 and len(names) > 1:
        rows = run_in_processes(args, names)
    else:
        data = load_dataset("mnist")
        test = binarize(data.test_images)[: args.images]  # the fixed-seed binarization every evaluation uses
        rows = []
        for name in names:
            rows.append(run_row(name, args, data, test))
            save(RESULTS / f"{args.tag}-{name}.json", args, rows[-1:])
    if not args.child:
        save(RESULTS / f"{args.tag}.json", args, rows)
        plot(rows, RESULTS / f"{args.tag}.png")
    print(f"\n{'row':<8} {'paper':>7} {'vaekit NLL':>16} {'test ELBO':>16} {'active':>6} {'train min':>9} {'wall min':>8}")
    for r in rows:
        print(f"{r['row']:<8} {r['paper']:7.2f} {r['nll']:9.2f} +- {r['nll_se']:.2f} {r['test_elbo']:9.2f} +- {r['test_elbo_se']:.2f} "
              f"{r['active_units']:6d} {r['train_minutes']:9.1f} {r['wall_minutes'] + r['eval_minutes']:8.1f}")
    vae = next((r for r in rows if r["row"] == "vae"), rows[0])
    print(f"delta={vae['nll'] - vae['paper']:.2f}")


if __name__ == "__main__":
    main()
