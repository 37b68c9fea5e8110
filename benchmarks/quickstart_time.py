"""Where the quick start's time goes: ``./scripts/quickstart.sh`` in a fresh ``git clone`` of this checkout,
timed stage by stage, against the issue's 5-minute target (set-up included).

The script prints ``[quickstart] STAGE took N s`` after each stage (set-up, vaekit train, vaekit eval, the math
figures and report) and ``vaekit train`` its own breakdown (``time: training ..., test ELBO each epoch ...,
samples and report after each epoch ..., figures ..., report ...``); this collects both, the first-epoch moment
samples.png and report.html appear, and the final test ELBO from metrics.jsonl.

    python benchmarks/quickstart_time.py [--repo .] [--keep DIR] [-- EXTRA vaekit train ARGS]

Run it on an idle machine: the set-up reuses pip's cache (torch==2.13.0 is a local CPU build here), as a
newcomer's second clone would. Prints ``delta=`` last: the total seconds minus 300 (negative: within 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET_S = 300.0
STAGE = re.compile(r"^\[quickstart\] (.+?) took (\d+) s")
TRAIN_TIME = re.compile(r"^time: (.*)$")


def cpu() -> str:
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    return f"{name}, {os.cpu_count()} CPUs; {shown}"


def watch_first_files(run: Path, t0: float, seen: dict[str, float], stop: threading.Event) -> None:
    """The moment (seconds after the start) samples.png and report.html first appear in the run folder."""
    while not stop.is_set():
        for name in ("samples.png", "report.html"):
            if name not in seen and (run / name).exists():
                seen[name] = time.perf_counter() - t0
        stop.wait(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent, help="the checkout to clone (default: this one)")
    p.add_argument("--keep", type=Path, default=None, help="clone into this folder and keep it (default: a temporary one, removed)")
    p.add_argument("train_args", nargs="*", help="extra arguments for vaekit train (after --)")
    args = p.parse_args()
    print(f"machine: {cpu()}; load average {os.getloadavg()[0]:.2f} at the start")
    work = args.keep or Path(tempfile.mkdtemp(prefix="vaekit-quickstart-"))
    clone = work / "vaekit"
    if clone.exists():
        sys.exit(f"{clone} exists; give --keep a folder without a vaekit/ in it (nothing is deleted)")
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    print(f"fresh clone of {args.repo} at {head[:90]}")
    stages: list[tuple[str, int]] = []
    train_line = ""
    seen: dict[str, float] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    watcher = threading.Thread(target=watch_first_files, args=(clone / "runs" / "quickstart", t0, seen, stop), daemon=True)
    watcher.start()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.Popen(["./scripts/quickstart.sh", *args.train_args], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if m := STAGE.match(line):
            stages.append((m.group(1), int(m.group(2))))
        if m := TRAIN_TIME.match(line):
            train_line = m.group(1)
    rc = proc.wait()
    total = time.perf_counter() - t0
    stop.set()
    if rc != 0:
        sys.exit(f"quickstart.sh failed with exit code {rc}")
    rows = [json.loads(line) for line in (clone / "runs" / "quickstart" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = rows[-1]
    print("\nstage                        seconds")
    for name, s in stages:
        print(f"  {name:<26} {s:>7}")
    print(f"  {'all (wall clock)':<26} {total:>7.0f}")
    print(f"vaekit train's own breakdown: {train_line}")
    print("first files: " + ", ".join(f"{n} after {s:.0f} s" for n, s in sorted(seen.items(), key=lambda kv: kv[1])))
    print(f"epochs {final.get('epoch')}, steps {final.get('steps')}; final test ELBO {final['test_elbo']:+.1f} "
          f"± {final.get('test_elbo_se', float('nan')):.1f} nats per image (target >= +110)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"delta={total - TARGET_S:.0f}  (seconds over the 5-minute target; negative: within it)")


if __name__ == "__main__":
    main()
