"""Burda et al. 2016, Table 1, and beyond, reproduced on this machine: the test NLL of one- and two-stochastic-layer
VAEs and IWAEs (k = 1, 5, 50), the VampPrior (Tomczak & Welling 2018) and IWAE with DReG gradients (Tucker et al.
2019) on dynamically binarized MNIST, each row trained for at most --minutes of training time.

The setting is the paper's: a Bernoulli decoder, the paper's networks (one layer: ``--arch mlp``, 784-200-200-50;
two layers: ``--arch hvae``, 784-200-200-100-100-100-50 with their mirror images, tanh, diagonal Gaussians),
dynamic binarization of the training images, and the test NLL from the importance-sampled estimate with
k = 5000 on **all 10,000 test images**, binarized once with the fixed seed (``vaekit.data.BINARIZE_SEED``), with
its standard error. Each row's recipe (batch, learning rate and schedule, KL warm-up) is ours, chosen by the
measured probes in benchmarks/README.md; ``--batch-size``, ``--lr``, ``--lr-schedule``, ``--kl-warmup`` and
``--grad-normalize`` override it for every row run.

While a row trains, every ``--curve-every`` minutes of training time (the time spent evaluating is not
counted) it records the test ELBO (all 10,000 images, one sample), the same on as many training images (binarized
once: a gap that grows is overfitting), the test NLL at k = 5000 on a fixed subset of ``--subset`` images (the
NLL-against-minutes curves) and the active units of each stochastic layer (when a layer collapses). Each row is saved to
benchmarks/results/TAG-ROW.json as soon as it finishes (its NLL, ELBO, active units, per layer too, epochs, steps,
recipe and curve); TAG.json and TAG.png, the table and curves, are rebuilt after every run from *every* saved row
of the tag (also those of earlier sessions), so rows can be run a few at a time. ``--table`` trains nothing.

    python benchmarks/literature.py [--rows vae,iwae5,...] [--minutes 60] [--k 5000] [--jobs 2] [--table]

``--jobs 2`` trains two rows at once, each in its own process pinned to one core (``--core``), so one
torch thread: these small MLPs train as fast on one core as on two (measured: 9,213 vs 8,926 images/s for the VAE, 897 vs 872 for IWAE
k=50, batch 100), so on a 2-core CPU each row still gets this CPU's full speed for its hour.
Probes: ``--steps N`` trains N optimizer steps instead (a recipe compared at equal steps whatever the machine's load).
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
from vaekit.fusion import fused_for
from vaekit.model import build_model
from vaekit.train import fit

from common import machine

ONE = {"arch": "mlp", "options": {"hidden": "200,200"}}  # Burda et al.'s one-layer network: 784-200-200-50
TWO = {"arch": "hvae", "options": {"lower_layers": "100", "hidden": "200,200;100,100"}}  # their two-layer one: 100 and 50
#: 100 pseudo-inputs, not Tomczak & Welling's 500: per CPU minute 100 win (probes C and D, benchmarks/README.md: after about
#: 35 minutes on one core, NLL 93.38 with 500 in 10,600 steps against 89.31 with 100 in 19,300); --pseudo-inputs 500 for theirs.
#: The rows of 2026-11-29 morning that seemed to diverge after 20 minutes were evaluated with a stale prior (the
#: components' cache missed the trainer's fused Adam steps; fixed): their first curve point, 86.51, was right.
VAMP = {"prior": "vamp", "options": {"pseudo_inputs": 100}}
BURDA = {"batch_size": 100, "lr": 1e-3, "lr_schedule": "anneal", "kl_warmup": 5000, "grad_normalize": False}  # the one-layer rows' recipe (sweep B)
#: the two-layer rows at k=1 and k=5: a KL warm-up ten times longer keeps their top layer (rows of 2026-11-29, 17:53-19:10:
#: vae2 91.99 -> 86.55, iwae2-5 87.52 -> 85.36). Not iwae2-50 (17,334 steps in its hour) nor vamp2 (its top layer dies anyway).
WARM = {**BURDA, "kl_warmup": 50_000}

#: reference NLLs (nats) and where they come from; None: no published number for this exact row
PAPER = {
    "vae": 86.76, "iwae5": 85.54, "iwae50": 84.78,  # Burda et al. 2016, Table 1, one stochastic layer
    "vae2": 85.33, "iwae2-5": 83.89, "iwae2-50": 82.90,  # the same, two stochastic layers
    "vamp": 85.57,  # Tomczak & Welling 2018, Table 2: VAE + VampPrior, one layer, dynamic MNIST (their gated MLP)
    "vamp2": None, "dreg5": None, "dreg50": None,
}
SOURCE = {
    "vae": "Burda et al. 2016, Table 1", "iwae5": "Burda et al. 2016, Table 1", "iwae50": "Burda et al. 2016, Table 1",
    "vae2": "Burda et al. 2016, Table 1", "iwae2-5": "Burda et al. 2016, Table 1", "iwae2-50": "Burda et al. 2016, Table 1",
    "vamp": "Tomczak & Welling 2018, Table 2 (their gated 300-unit MLP, 40 latents)",
    "vamp2": "none: Tomczak & Welling's two-layer VampPrior (83.19) infers z_2 from x, a different model",
    "dreg5": "none: Tucker et al. 2019 show curves; public reimplementations put it ~0.3 below IWAE k=5",
    "dreg50": "none: Tucker et al. 2019 show curves; public reimplementations put it ~0.3 below IWAE k=50",
}
ROWS = {  # each row: its network, prior, objective and recipe
    "vae": {**ONE, "objective": "elbo", "samples": 1, "recipe": BURDA},
    "iwae5": {**ONE, "objective": "iwae", "iw_samples": 5, "recipe": BURDA},
    "iwae50": {**ONE, "objective": "iwae", "iw_samples": 50, "recipe": BURDA},
    "vae2": {**TWO, "objective": "elbo", "samples": 1, "recipe": WARM},
    "iwae2-5": {**TWO, "objective": "iwae", "iw_samples": 5, "recipe": WARM},
    "iwae2-50": {**TWO, "objective": "iwae", "iw_samples": 50, "recipe": BURDA},
    "vamp": {**ONE, **VAMP, "options": {**ONE["options"], **VAMP["options"]}, "objective": "iwae", "iw_samples": 5, "recipe": BURDA},
    "vamp2": {**TWO, **VAMP, "options": {**TWO["options"], **VAMP["options"]}, "objective": "iwae", "iw_samples": 5, "recipe": BURDA},
    "dreg5": {**ONE, "objective": "dreg", "iw_samples": 5, "recipe": BURDA},
    "dreg50": {**ONE, "objective": "dreg", "iw_samples": 50, "recipe": BURDA},
}
RECIPE_FLAGS = ("batch_size", "lr", "lr_schedule", "kl_warmup", "grad_normalize")
RESULTS = Path(__file__).resolve().parent / "results"


def nll(model, images, k, seed=0):
    """Test NLL per image (nats) with its standard error, by importance sampling with k samples; fused
    (``vaekit.fusion``: compiled once for all the images) where that is possible and pays."""
    fused = fused_for(model, len(images) * k) or False
    ll = torch.cat([log_likelihood(model, images[i : i + 100], k=k, seed=seed * 100_003 + i, fuse=fused) for i in range(0, len(images), 100)])
    return -ll.mean().item(), ll.std().item() / math.sqrt(len(ll))


def recipe_of(name, args):
    """The row's recipe, each flag given on the command line overriding it."""
    return {key: getattr(args, key) if getattr(args, key) is not None else ROWS[name]["recipe"][key] for key in RECIPE_FLAGS}


def build_row_model(name, args, data):
    spec = ROWS[name]
    cfg = ModelConfig(arch=spec["arch"], latent_dim=50, likelihood="bernoulli", posterior="diagonal",
                      prior=spec.get("prior", "standard-normal"), options=dict(spec["options"]))
    if spec.get("prior") == "vamp" and args.pseudo_inputs is not None:
        cfg.options["pseudo_inputs"] = args.pseudo_inputs
    model = build_model(cfg, (1, 28, 28))
    if spec.get("prior") == "vamp" and args.pseudo_init == "data":  # Tomczak & Welling's --use_training_data_init
        model.prior.init_from_images(binarize(data.train_images[: model.prior.pseudo.shape[0]]))
    return model, cfg


def objective_of(name, args):
    """The row's objective and its samples of z per image, or ``--objective`` with ``--train-samples`` (probes)."""
    spec = ROWS[name]
    if args.objective is None:
        return spec["objective"], {k: spec[k] for k in ("samples", "iw_samples") if k in spec}
    samples = args.train_samples or spec.get("samples", spec.get("iw_samples"))
    return args.objective, {"samples" if args.objective == "elbo" else "iw_samples": samples}


def train_config(name, args):
    recipe = recipe_of(name, args)
    objective, options = objective_of(name, args)
    return TrainConfig(
        objective=objective, options=options, binarize="dynamic", calibrated=False, device="cpu", seed=args.seed, precision=args.precision,
        time_budget=None if args.steps else args.minutes, max_steps=args.steps, epochs=100_000, **recipe,
    )


def run_row(name, args, data, test):
    set_seed(args.seed)
    model, model_cfg = build_row_model(name, args, data)
    cfg = train_config(name, args)
    subset = test[: args.subset]
    train_probe = binarize(data.train_images[: len(test)])  # the first training images, binarized once: over- or under-fitting
    curve, next_mark = [], args.curve_every

    def on_epoch_end(epoch, stats):
        nonlocal next_mark
        minutes = stats["seconds"] / 60
        if minutes < next_mark and not stats["final"]:
            return
        next_mark = minutes + args.curve_every
        elbo = evaluate_elbo(model, test, n_samples=1, seed=0)
        point = {"minutes": minutes, "epoch": epoch + 1, "steps": stats["steps"], "test_elbo": elbo["elbo"],
                 "train_elbo": evaluate_elbo(model, train_probe, n_samples=1, seed=0)["elbo"], "nll_subset": nll(model, subset, args.k)[0]}
        units = latent_stats(model, test)  # when a layer's units die: the top layer's collapse, step by step
        point["active_units_per_layer"] = units["active_units_per_layer"]
        curve.append(point)
        print(f"  {name}: {minutes:5.1f} min, epoch {epoch + 1}: test ELBO {point['test_elbo']:.2f} (train {point['train_elbo']:.2f}), "
              f"NLL ({len(subset)} images) {point['nll_subset']:.2f}, active units {'+'.join(map(str, point['active_units_per_layer']))}", flush=True)

    t0 = time.perf_counter()
    result = fit(model, data.train_images, cfg, progress=False, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t0
    elbo = evaluate_elbo(model, test, n_samples=10, seed=0)
    t1 = time.perf_counter()
    value, se = nll(model, test, args.k)
    stats = latent_stats(model, test)
    return {
        "row": name, "paper": PAPER[name], "source": SOURCE[name], "nll": value, "nll_se": se,
        "test_elbo": elbo["elbo"], "test_elbo_se": elbo["elbo_se"],
        "active_units": stats["active_units"], "active_units_per_layer": stats["active_units_per_layer"],
        "train_minutes": result.seconds / 60, "wall_minutes": wall / 60, "eval_minutes": (time.perf_counter() - t1) / 60,
        "steps": result.steps, "epochs": result.epochs_done,
        "model": {"arch": model_cfg.arch, "prior": model_cfg.prior, "options": model_cfg.options},
        "settings": {"objective": cfg.objective, **cfg.options, **recipe_of(name, args), "pseudo_init": args.pseudo_init},
        "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "images": len(test), "k": args.k,
        "curve": curve,
    }


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    for ax, key, title in ((fig.add_subplot(1, 2, 1), "nll_subset", "test NLL (k=5000, subset)"), (fig.add_subplot(1, 2, 2), "test_elbo", "test ELBO")):
        for r in rows:
            ax.plot([p["minutes"] for p in r["curve"]], [(-1 if key == "test_elbo" else 1) * p[key] for p in r["curve"]], marker="o", label=r["row"])
            if key == "nll_subset" and r.get("paper") is not None:
                ax.axhline(r["paper"], ls=":", lw=1, color=ax.lines[-1].get_color())
        ax.set_xlabel("training minutes")
        ax.set_ylabel("nats (lower is better)" if key == "nll_subset" else "-ELBO, nats (lower is better)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def save(path, args, rows):
    path.write_text(json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=2) + "\n")


def load_row(tag, name):
    """The row saved by ``save(RESULTS / f"{tag}-{name}.json", ...)``, or None if there is none."""
    path = RESULTS / f"{tag}-{name}.json"
    return json.loads(path.read_text())["rows"][0] if path.exists() else None


def saved_rows(tag):
    """Every row of ``tag`` saved so far, in ROWS' order."""
    return [r for r in (load_row(tag, name) for name in ROWS) if r is not None]


def run_in_processes(args, names):
    """Each row in its own process pinned to one core, ``args.jobs`` at a time (each saves its TAG-ROW.json)."""
    argv, cores = sys.argv[1:], sorted(os.sched_getaffinity(0))
    pending, running = list(names), []
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


def print_table(rows):
    print(f"\n{'row':<9} {'paper':>7} {'vaekit NLL':>16} {'test ELBO':>16} {'active':>9} {'epochs':>6} {'train min':>9} {'wall min':>8}")
    for r in rows:
        paper = f"{r['paper']:7.2f}" if r.get("paper") is not None else f"{'-':>7}"
        active = "+".join(map(str, r.get("active_units_per_layer", [r["active_units"]])))  # one-layer rows saved before 2026-11-29 evening lack it
        print(f"{r['row']:<9} {paper} {r['nll']:9.2f} +- {r['nll_se']:.2f} {r['test_elbo']:9.2f} +- {r['test_elbo_se']:.2f} "
              f"{active:>9} {r['epochs']:6d} {r['train_minutes']:9.1f} {r['wall_minutes'] + r['eval_minutes']:8.1f}")
    first = next((r for r in rows if r["row"] == "vae"), next((r for r in rows if r.get("paper") is not None), None))
    if first is not None:
        print(f"delta={first['nll'] - first['paper']:.2f}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="vae,iwae5,iwae50", help=f"comma-separated, among {', '.join(ROWS)}")
    ap.add_argument("--minutes", type=float, default=60.0, help="training time per row (default 60)")
    ap.add_argument("--steps", type=int, default=None, help="train this many optimizer steps instead of --minutes (probes)")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--images", type=int, default=10000, help="test images for the final NLL (default all)")
    ap.add_argument("--subset", type=int, default=1000, help="test images for the curves' NLL (default 1000)")
    ap.add_argument("--curve-every", type=float, default=10.0, help="minutes of training between curve points")
    ap.add_argument("--batch-size", type=int, default=None, help="override every row's recipe (default: the row's)")
    ap.add_argument("--lr", type=float, default=None, help="override every row's recipe (default: the row's)")
    ap.add_argument("--lr-schedule", default=None, choices=("constant", "cosine", "anneal"), help="override (default: the row's)")
    ap.add_argument("--kl-warmup", type=int, default=None, help="steps of linear KL warm-up; override (default: the row's)")
    ap.add_argument("--grad-normalize", default=None, action=argparse.BooleanOptionalAction,
                    help="each parameter tensor's gradient divided by its norm (Tomczak & Welling's AdamNormGrad); override (default: the row's)")
    ap.add_argument("--pseudo-init", default="noise", choices=("noise", "data"),
                    help="VampPrior rows: pseudo-inputs from N(0.05, 0.01) (noise) or the first training images (data)")
    ap.add_argument("--objective", default=None, choices=("elbo", "iwae", "dreg"), help="override the row's objective (probes)")
    ap.add_argument("--train-samples", type=int, default=None, help="with --objective: its samples of z per image (default: the row's)")
    ap.add_argument("--pseudo-inputs", type=int, default=None, help="VampPrior rows: the number of pseudo-inputs (default 100; Tomczak & Welling: 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                    help="the networks' arithmetic in training (default fp32, as the rows recorded on 2026-11-26; auto picks bf16 on native-bf16 CPUs)")
    ap.add_argument("--core", type=int, default=None, help="run on this CPU core only (one torch thread)")
    ap.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                    help="rows trained at once, each in its own process on one core (default 2, or 1 on one core)")
    ap.add_argument("--tag", default="literature", help="name of the JSON and PNG in benchmarks/results/")
    ap.add_argument("--table", action="store_true", help="train nothing: the table, JSON and PNG from the saved results/TAG-ROW.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one row of --jobs: only its TAG-ROW.json
    return ap.parse_args()  # repeated options: the last wins (run_in_processes appends its own)


def main() -> None:
    args = parse_args()
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
    if not args.table and args.jobs > 1 and len(names) > 1:
        run_in_processes(args, names)
    elif not args.table:
        data = load_dataset("mnist")
        test = binarize(data.test_images)[: args.images]  # the fixed-seed binarization every evaluation uses
        for name in names:
            save(RESULTS / f"{args.tag}-{name}.json", args, [run_row(name, args, data, test)])  # each row as it finishes
    if args.child:
        return
    rows = saved_rows(args.tag)  # every row of the tag, from this run and earlier ones
    missing = [n for n in names if load_row(args.tag, n) is None]
    if missing:
        print(f"no saved result yet for {', '.join(missing)} (results/{args.tag}-ROW.json)")
    if rows:
        save(RESULTS / f"{args.tag}.json", args, rows)
        plot(rows, RESULTS / f"{args.tag}.png")
        print_table(rows)


if __name__ == "__main__":
    main()
