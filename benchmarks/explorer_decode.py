"""The latent explorer: the time to decode one image in headless Chromium, and the report's size, per decoder.

    python benchmarks/explorer_decode.py [--run RUN_DIR] [--repeats 40]

For each stand-in decoder (the assignment's SimpleVAE decoder with 32 filters, an MLP, strided
conv decoders; tests/explorer_models.py) it writes a report with 10,000 posterior means and
the explorer, opens it in headless Chromium (chromedriver, tests/webdriver.py), decodes 5
warm-up images and then ``--repeats`` images one at a time, and prints the median and the
minimum milliseconds per image with the size of the explorer's section and of the report.
``--run`` also measures a trained run's report (``vaekit report``). Needs chromium and
chromium-driver (Debian).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from vaekit.explorer import explorer_html  # noqa: E402
from vaekit.report import write_report  # noqa: E402

from explorer_models import stand_in  # noqa: E402
from webdriver import Browser  # noqa: E402

CASES = [  # name, kind, K, (C, H, W)
    ("assignment (SimpleVAE K=2, 32 filters), 1x28x28", "assignment", 2, (1, 28, 28)),
    ("MLP 200-200, K=2, 1x28x28", "mlp", 2, (1, 28, 28)),
    ("MLP 200-200, K=16, 3x32x32", "mlp", 16, (3, 32, 32)),
    ("conv 64-32-16 strided, K=16, 3x32x32", "conv", 16, (3, 32, 32)),
    ("conv 32-16 strided, K=2, 1x25x25", "conv", 2, (1, 25, 25)),
]
TIME = """
var api = window.vaekitExplorer, n = arguments[0], t = [];
for (var i = 0; i < 5; i++) api.decode(api.samplePrior());
for (var j = 0; j < n; j++) { var z = api.samplePrior(), t0 = performance.now(); api.decode(z); t.push(performance.now() - t0); }
return t;
"""
READY = "var done = arguments[0]; window.vaekitExplorer.ready.then(function () { done('ready'); }, function (e) { done('failed: ' + e.message); });"


def measure(browser: Browser, report: Path, repeats: int) -> dict:
    browser.open(report.resolve().as_uri())
    state = browser.async_script(READY)
    if state != "ready":
        raise RuntimeError(f"{report}: {state}")
    times = browser.script(TIME, repeats)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "report_bytes": report.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="also measure this run folder's report (vaekit report)")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "chromium").mkdir()
        with Browser(tmp / "chromium") as browser:
            for name, kind, k, (c, h, w) in CASES:
                model = stand_in(kind, K=k, C=c, H=h, W=w)
                g = torch.Generator().manual_seed(0)
                panel = explorer_html(model, torch.randn(10_000, k, generator=g), torch.randint(0, 10, (10_000,), generator=g))
                run = tmp / kind / str(k)
                run.mkdir(parents=True)
                (run / "config.json").write_text("{}")
                result = measure(browser, write_report(run, explorer_html=panel), args.repeats)
                floats = sum(p.numel() for p in model.decoder.parameters())
                rows.append({"decoder": name, "decoder_floats": floats, "explorer_bytes": len(panel.encode()), **result})
                print(json.dumps(rows[-1]), flush=True)
            if args.run is not None:
                from vaekit.commands import report_run

                report = report_run(args.run, tmp / "run-report.html")
                rows.append({"decoder": f"run {args.run}", **measure(browser, report, args.repeats)})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| decoder | decoder floats | explorer section | whole report | decode, median (min) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['decoder']} | {r.get('decoder_floats', '')} | {r.get('explorer_bytes', 0) / 1e6:.2f} MB | "
              f"{r['report_bytes'] / 1e6:.2f} MB | {r['median_ms']:.1f} ms ({r['min_ms']:.1f}) |")


if __name__ == "__main__":
    main()
