"""Sample quality per sampler: the prior against the GMM (and every other registered sampler that runs on the
model), N generated images each, measured against MNIST's 10,000 test images in the features of the classifier
that vaekit trains on MNIST (``vaekit eval --generate N``'s figures: FD-classifier, KID, PRDC, label entropy).

Models:
- the quick start's: ``--run RUN_DIR`` (e.g. runs/quickstart), else trained here with the quick preset
  (``vaekit train``, 4 epochs: what ./scripts/quickstart.sh trains);
- the literature table's (Burda et al. 2016, one stochastic layer: the MLP 784-200-200-50, Bernoulli decoder,
  dynamically binarized MNIST; VAE, IWAE k=5, k=50). benchmarks/literature.py does not save its models, so
  stand-ins are trained here with its settings for ``--minutes`` each (far shorter than its hour: their
  NLLs are not the table's), or given as ``--literature ROW=RUN_DIR``.

For the figures' scale, two reference rows first: N real training images (a seeded random pick) and N
images of uniform noise, measured the same way. Each sampler's measurement is recorded in its run
folder's sample_quality.json too (the report shows it). The run folders are kept in ``--work`` (reused
when they hold a model: ``--retrain`` trains them again). Prints one table, saves
benchmarks/results/sample_quality.json and prints last ``delta=`` FD(prior) - FD(gmm) for the quick
start's model (FD-classifier, squared feature units; positive: the GMM's samples are closer).

    python benchmarks/sample_quality.py [--run RUN_DIR] [--literature vae=RUN_DIR] [--rows vae,iwae5,iwae50]
                                        [--minutes 5] [--n 10000] [--seed 0] [--work DIR] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from vaekit.cli import main as vaekit
from vaekit.commands.quality import QualityMeter, record
from vaekit.samplers import SAMPLERS

from common import machine

RESULTS = Path(__file__).resolve().parent / "results"
LITERATURE = {  # benchmarks/literature.py's settings (ROWS, and its defaults for the rest)
    "vae": ["--objective", "elbo", "--samples", "1"],
    "iwae5": ["--objective", "iwae", "--iw-samples", "5"],
    "iwae50": ["--objective", "iwae", "--iw-samples", "50"],
}
LITERATURE_MODEL = ["--arch", "mlp", "--latent-dim", "50", "--likelihood", "bernoulli", "--posterior", "diagonal",
                    "--binarize", "dynamic", "--batch-size", "100", "--lr", "1e-3", "--lr-schedule", "anneal",
                    "--kl-warmup", "5000", "--no-calibrated"]


def cpu_flags() -> str:
    """Which of avx2, avx512f, avx512_bf16, amx_* /proc/cpuinfo lists."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = ["avx2", "avx512f", "avx512_bf16"] + sorted(x for x in flags if x.startswith("amx"))
    return ", ".join(f"{x} {'yes' if x in flags else 'no'}" for x in wanted) + ("" if any(x.startswith("amx") for x in flags) else ", amx no")


def train(out: Path, args: list[str], retrain: bool) -> Path:
    """``vaekit train ARGS --out OUT`` unless OUT already holds a trained model (and not ``retrain``)."""
    if (out / "model.safetensors").exists() and not retrain:
        print(f"reusing {out}", flush=True)
        return out
    print(f"vaekit train {' '.join(args)} --out {out}", flush=True)
    t0 = time.perf_counter()
    if vaekit(["train", *args, "--out", str(out), "--overwrite", "--no-progress", "--device", "cpu"]) != 0:
        raise SystemExit(f"training {out} failed")
    print(f"trained {out} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return out


def models(args) -> list[tuple[str, Path]]:
    """(label, run folder) of the quick start's model and the literature stand-ins."""
    given = dict(item.split("=", 1) for item in args.literature)
    unknown = sorted(set(given) - set(LITERATURE)) + [r for r in args.rows if r not in LITERATURE]
    if unknown:
        raise SystemExit(f"--rows / --literature must name rows among {', '.join(LITERATURE)}, got {', '.join(unknown)}")
    out = [("quick start", Path(args.run) if args.run else train(args.work / "quickstart", [], args.retrain))]
    for row in args.rows:
        if row in given:
            out.append((f"literature {row}", Path(given[row])))
        else:
            budget = ["--time-budget", str(args.minutes), "--seed", "0"]
            out.append((f"literature {row} ({args.minutes:g} min)", train(args.work / f"lit-{row}", LITERATURE_MODEL + LITERATURE[row] + budget, args.retrain)))
    return out


def references(meter: QualityMeter, n: int, seed: int) -> list[dict]:
    """The figures' scale: n real training images (a seeded random pick) and n images of uniform noise, measured
    against the test set as the samplers' images are."""
    g = torch.Generator().manual_seed(seed)
    train = meter.data.train_uint8
    pick = torch.randperm(len(train), generator=g)[:n].sort().values  # [n]
    noise = torch.randint(0, 256, (n, *train.shape[1:]), dtype=torch.uint8, generator=g)  # [n, C, H, W]
    rows = []
    for label, images in (("training images", train[pick]), ("uniform noise", noise)):
        rows.append({"model": "reference", "sampler": label, "n": len(images), "seed": seed, **meter.figures(images)})
        print(f"  reference: {label} measured", flush=True)
    return rows


def measure(label: str, run: Path, args, shared: dict) -> list[dict]:
    """Every registered sampler on ``run``: one row each (or a row saying why it did not run)."""
    if args.threads:
        torch.set_num_threads(args.threads)  # again: vaekit train sets its own
    meter = QualityMeter(run, **shared, progress=True)
    if not shared:
        rows = references(meter, args.n, args.seed)
    else:
        rows = []
    shared.update(data=meter.data, extractor=meter.extractor, real=meter.real)  # the same MNIST for every model
    for name in sorted(SAMPLERS.names(), key=lambda s: (s != "prior", s)):  # the prior first, the reference
        t0 = time.perf_counter()
        try:
            entry = meter.measure(name, {}, args.n, args.seed)
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as e:
            print(f"  {label}: sampler {name} does not run on this model: {e}", flush=True)
            rows.append({"model": label, "run": str(run), "sampler": name, "skipped": str(e)})
            continue
        record(meter.run, entry)
        rows.append({"model": label, "run": str(run), **entry})
        print(f"  {label}: {name} measured in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> None:
    head = (f"{'model':<26} {'sampler':<15} {'N':>6} {'FD-classifier':>13} {'KID ± SE':>17} {'prec':>6} {'recall':>6} "
            f"{'density':>7} {'cover':>6} {'entropy/sample':>14} {'marginal':>8} {'latent gain':>11}")
    print("\n" + head)
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:<26} {r['sampler']:<15} skipped: {r['skipped']}")
            continue
        fit = r.get("fit") or {}
        gain = f"{fit['test_loglik_gmm'] - fit['test_loglik_prior']:+.3f}" if "test_loglik_gmm" in fit else "-"
        print(f"{r['model']:<26} {r['sampler']:<15} {r['n']:>6} {r['fd']:>13.3f} {r['kid']:>9.4f} ± {r['kid_se']:.4f} "
              f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['density']:>7.3f} {r['coverage']:>6.3f} "
              f"{r['mean_entropy']:>14.3f} {r['marginal_entropy']:>8.3f} {gain:>11}")
    done = [r for r in rows if "extractor" in r]
    if done:
        print(f"features: {'; '.join(sorted({r['extractor'] for r in done}))}; n_real = {done[0]['n_real']:,} test images; "
              f"KID: mean ± standard error over {done[0]['kid_subsets']} subsets of {done[0]['kid_subset_size']:,}; latent gain: "
              "held-out log-density of the test posterior means under the GMM minus under N(0, I), nats per point")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="the quick start's run folder (default: train one in --work)")
    ap.add_argument("--literature", action="append", default=[], metavar="ROW=RUN_DIR", help="a literature row's run folder")
    ap.add_argument("--rows", default="vae,iwae5,iwae50", help="literature rows (default vae,iwae5,iwae50; '' for none)")
    ap.add_argument("--minutes", type=float, default=5.0, help="training minutes per literature stand-in (default 5)")
    ap.add_argument("--n", type=int, default=10_000, help="images generated per sampler (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/sample-quality"), help="where the trained run folders go")
    ap.add_argument("--retrain", action="store_true", help="train the models in --work again even if they exist")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while measuring (default: torch's)")
    args = ap.parse_args()
    args.rows = [r for r in args.rows.split(",") if r]
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    print(f"machine: {machine()}; {cpu_flags()}; load average {load0:.2f}; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    t0 = time.perf_counter()
    rows: list[dict] = []
    shared: dict = {}
    for label, run in models(args):
        rows += measure(label, run, args, shared)
    table(rows)
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
               "load_average": [load0, os.getloadavg()[0]], "minutes": (time.perf_counter() - t0) / 60,
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rows": rows}
    (RESULTS / "sample_quality.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; {summary['minutes']:.1f} min in all")
    quick = {r["sampler"]: r for r in rows if r["model"] == "quick start" and "fd" in r}
    print(f"delta={quick['prior']['fd'] - quick['gmm']['fd']:.3f}")


if __name__ == "__main__":
    main()
