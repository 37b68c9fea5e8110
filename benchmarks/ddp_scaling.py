"""Data-parallel scaling: training images/s of vaekit.fit under torchrun, per process count.

For each process count P this launches ``python -m torch.distributed.run --standalone
--nproc-per-node=P`` on this script's worker, which trains the quick preset's recipe
(SimpleVAE K=2, batch 64 per process, 1 sample of z, calibrated decoder) on MNIST with
DistributedDataParallel (gloo on the CPU, NCCL on GPUs): some untimed warm-up steps,
then ``--steps`` timed ones. The batch per process is fixed, so the global batch grows
with P (weak scaling, as ``vaekit train --distributed`` does). One process is plain
``vaekit.fit`` without a process group, the baseline. images/s counts global
images per second of training time (fit's own clock: no start-up, no evaluation).

Prints one line per process count, then ``ratio=`` (images/s with the largest P over
images/s with one process, measured in this same run) last. On a CPU it also measures one
process pinned to one core, to tell the effect of processes from that of threads.

    python benchmarks/ddp_scaling.py [--procs 1,2] [--steps 40] [--warmup 5] [--batch-size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import torch

from common import machine


def worker(args: argparse.Namespace) -> None:
    """One rank: warm up, then time ``args.steps`` steps; rank 0 prints a RESULT line."""
    from vaekit import SimpleVAE, TrainConfig, fit, load_dataset, set_seed
    from vaekit.distributed import current, session

    if args.one_core:  # fit gives a thread per usable core: one
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with session(args.device):
        info = current()
        world = 1 if info is None else info.world_size
        data = load_dataset("mnist")
        cfg = TrainConfig(batch_size=args.batch_size, samples=args.samples, device=args.device, seed=0, epochs=1000)
        set_seed(0)
        model = SimpleVAE()
        fit(model, data.train_images, dataclasses.replace(cfg, max_steps=args.warmup), progress=False)
        result = fit(model, data.train_images, dataclasses.replace(cfg, max_steps=args.steps), progress=False)
        if info is None or info.is_main:
            ips = args.steps * args.batch_size * world / result.seconds
            print("RESULT " + json.dumps({
                "procs": world, "images_per_s": ips, "s_per_step": result.seconds / args.steps,
                "threads": torch.get_num_threads(), "global_batch": args.batch_size * world,
                "backend": info.backend if info else "none",
            }), flush=True)


def launch(nproc: int, args: argparse.Namespace, one_core: bool = False) -> dict:
    # one process: plain vaekit.fit, no process group (the baseline DDP is measured against)
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, *launcher, os.path.abspath(__file__), "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batch-size", str(args.batch_size),
           "--samples", str(args.samples), "--device", args.device, *(["--one-core"] if one_core else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", default=None, help="comma-separated process counts (default: 1,2 on the CPU; 1,2,4,.. up to the GPUs)")
    p.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="images per process per step (default 64, the quick preset)")
    p.add_argument("--samples", type=int, default=1, help="samples of z (default 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.procs:
        procs = [int(v) for v in args.procs.split(",")]
    elif args.device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        procs = [1 << k for k in range(n.bit_length()) if 1 << k <= n]
    else:
        procs = [1, 2]
    print(f"machine: {machine()}")
    print(f"recipe: quick preset, batch {args.batch_size} per process, {args.samples} sample(s) of z, device {args.device}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per process count")
    results = []
    for n in procs:
        r = launch(n, args)
        results.append(r)
        print(f"{n} process(es): {r['images_per_s']:8.1f} images/s  ({r['s_per_step'] * 1e3:.1f} ms/step, global batch "
              f"{r['global_batch']}, {r['threads']} thread(s) each, backend {r['backend']})", flush=True)
    cpu = not (args.device in ("auto", "cuda") and torch.cuda.is_available())
    if cpu and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        r = launch(1, args, one_core=True)  # what one core does alone: separates threads from processes
        print(f"1 process on 1 core: {r['images_per_s']:8.1f} images/s  ({r['s_per_step'] * 1e3:.1f} ms/step, reference only)", flush=True)
    print(f"ratio={results[-1]['images_per_s'] / results[0]['images_per_s']:.2f}")


if __name__ == "__main__":
    main()
