"""The HTML run report: self-contained, escaped, robust to odd run folders, and rendering offline."""

import base64
import io
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vaekit.checkpoint import CheckpointError
from vaekit.report import build_report, write_report

from webdriver import chromium

INJECTED = "<script>alert(1)</script>"

# figure name -> the pure colour of the rectangle drawn in it (RGB in [0, 1])
COLOURS = {"samples.png": (1.0, 0.0, 0.0), "elbo_curve.png": (0.0, 0.0, 1.0), "samples_seed3.png": (0.0, 0.8, 0.0)}


def _png(colour, size=(3.0, 2.0), dpi=50) -> bytes:
    """A small PNG: a rectangle of one pure colour on white (150x100 pixels by default)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.add_patch(Rectangle((0.1, 0.1), 0.8, 0.8, color=colour))
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pngs():
    return {name: _png(colour) for name, colour in COLOURS.items()}


CONFIG = {
    "vaekit_version": "0.1.0",
    "model": {"latent_dim": 4, "num_filters": 32, "likelihood": "gaussian", "posterior": "diagonal"},
    "train": {
        "dataset": "mnist", "epochs": 2, "batch_size": 128, "samples": 1, "lr": 0.0015, "lr_schedule": "cosine",
        "calibrated": True, "binarize": False, "seed": 1234, "device": "auto",
    },
    "data": {"name": "mnist", "image_size": 28, "train_images": 60000, "test_images": 10000},
    "device": "cpu",
    "torch_version": "2.5.1",
    "python_version": "3.11.2",
    "created": "2026-11-25T13:00:00+0000",
}

ROWS = [
    {"epoch": 1, "steps": 469, "train_elbo": -142.25, "test_elbo": -118.04, "test_elbo_se": 0.37, "test_rec": -101.5,
     "test_kl": 16.54, "sigma_x": float("nan"), "skipped_nonfinite": 0, "seconds": 21.5},
    {"epoch": 2, "steps": 938, "train_elbo": -112.31, "test_elbo": -106.87, "test_elbo_se": 0.43, "test_rec": -89.2,
     "test_kl": 17.67, "sigma_x": 0.1234, "skipped_nonfinite": 3, "seconds": 187.0},
]

EVAL = {
    "split": "test", "n_images": 10000, "dims": 784, "k": 100, "n_samples": 1, "seed": 0,
    "elbo": -106.87, "elbo_se": 0.43, "rec": -89.2, "kl": 17.67,
    "log_likelihood": -101.234, "log_likelihood_se": 0.41, "bits_per_dim": 0.1863, "bits_per_dim_se": 0.0008,
    "kl_per_dim": [5.125, 4.5, 0.0021, float("inf")], "posterior_mean_var": [0.93, 0.88, 0.0004, 0.7],
    "active_units": 3, "active_threshold": 0.01, "recon_mse": 0.01234, "likelihood": "gaussian", "seconds": 42.0,
    "note": "log p(x) is estimated by importance sampling with k samples; it is a lower bound <tighter than the ELBO>.",
}


def make_run(folder: Path, pngs: dict[str, bytes], config=CONFIG, rows=ROWS, metrics_lines=None) -> Path:
    """A synthetic run folder: config.json, metrics.jsonl, eval_test.json and the given PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    lines = metrics_lines if metrics_lines is not None else [json.dumps(r) for r in rows]
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / "eval_test.json").write_text(json.dumps(EVAL))
    for name, data in pngs.items():
        (folder / name).write_bytes(data)
    return folder


class Page(HTMLParser):
    """What a browser would see: tags, attributes and the text, parsed with the stdlib."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.headings: dict[str, list[str]] = {}  # "title", "h1", "h2", "h3" -> their texts
        self._open: str | None = None
        self.feed(text)
        self.close()
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("title", "h1", "h2", "h3"):
            self._open = tag
            self.headings.setdefault(tag, []).append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.chunks.append(data)
        if self._open:
            self.headings[self._open][-1] += data

    def find(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]


def _data_uri_bytes(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:60]
    return base64.b64decode(uri[len(prefix):], validate=True)


def test_report_is_written_and_embeds_every_png(tmp_path, pngs):
    run = make_run(tmp_path / "run", pngs)
    path = write_report(run)
    assert path == run / "report.html" and path.is_file()
    page = Page(path.read_text(encoding="utf-8"))
    embedded = sorted(_data_uri_bytes(img["src"]) for img in page.find("img"))
    assert embedded == sorted(p.read_bytes() for p in run.glob("*.png"))
    assert "Other figures" in page.headings["h2"]  # samples_seed3.png is not one of the known figures
    assert "Reconstructions" not in page.headings["h3"]  # missing figures are simply left out


def test_report_references_nothing_outside_the_file(tmp_path, pngs):
    text = build_report(make_run(tmp_path / "run", pngs))
    page = Page(text)
    for needle in ("http://", "https://", "//cdn", 'src="//', "url(", "@import", "@font-face"):
        assert needle not in text
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:60])


def test_report_shows_config_metrics_and_eval(tmp_path, pngs):
    run = make_run(tmp_path / "my-run", pngs)
    page = Page(build_report(run))
    assert "my-run" in page.headings["title"][0] and "my-run" in page.headings["h1"][0]
    for expected in ("mnist", "cpu", "2026-11-25T13:00:00+0000", "cosine", "0.0015", "1234", "gaussian", "diagonal", "2.5.1"):
        assert expected in page.text, expected
    # metrics, formatted: ELBO to one decimal with its standard error, total time from the last row
    for expected in ("-118.0", "-106.9", "-142.2", "0.43", "0.1234", "3 min 07 s"):
        assert expected in page.text, expected
    assert "-106.9 ± 0.43" in page.text  # the final test ELBO in the summary
    # evaluation: log-likelihood with SE, KL per dimension, the note (escaped)
    assert "-101.2 ± 0.41" in page.text
    for expected in ("5.125", "0.002", "0.1863"):
        assert expected in page.text, expected
    assert EVAL["note"] in page.text
    # NaN sigma_x and the inf KL are shown as a dash, never as "nan"/"inf"
    assert not re.search(r"\b(nan|NaN|inf|Infinity)\b", page.text)
    assert "\u2014" in page.text


def test_text_from_files_is_escaped(tmp_path, pngs):
    config = json.loads(json.dumps(CONFIG))
    config["data"]["name"] = INJECTED
    config["train"]["dataset"] = INJECTED
    config["model"]['<img src=x onerror="alert(2)">'] = '"><b>bold</b>'
    text = build_report(make_run(tmp_path / "run", pngs, config=config))
    page = Page(text)
    assert INJECTED not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert INJECTED in page.text  # shown to the reader as text
    assert not page.find("script") and not page.find("b")
    assert all(img["src"].startswith("data:") for img in page.find("img"))


def test_malformed_metrics_lines_are_skipped_and_reported(tmp_path, pngs):
    lines = [json.dumps(ROWS[0]), '{"epoch": 2, "steps": 93', "[1, 2]", json.dumps(ROWS[1])]
    page = Page(build_report(make_run(tmp_path / "run", pngs, metrics_lines=lines)))
    assert "skipped 2 malformed lines (line 2, 3)" in page.text
    assert "-118.0" in page.text and "-106.9 ± 0.43" in page.text


def test_minimal_and_odd_run_folders(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "not a dict", "created": None}))
    page = Page(build_report(run))  # only config.json: no metrics, eval or figures
    assert "no per-epoch metrics" in page.text and not page.find("img")

    (run / "eval_test.json").write_text("{ broken")
    (run / "broken.png").write_bytes(b"not a png at all")
    page = Page(build_report(run))
    assert "eval_test.json is not a readable JSON object" in page.text
    assert "broken.png is not a PNG image" in page.text and not page.find("img")


@pytest.mark.parametrize("what", ["missing", "file", "no-config"])
def test_not_a_run_folder_raises_checkpoint_error_naming_it(tmp_path, what):
    path = tmp_path / "nope"
    if what == "file":
        path.write_text("x")
    elif what == "no-config":
        path.mkdir()
        (path / "metrics.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        write_report(path)
    if what == "no-config":
        assert not (path / "report.html").exists()


def test_write_is_atomic_and_replaces_an_existing_report(tmp_path, pngs):
    run = make_run(tmp_path / "run", pngs)
    before = sorted(p.name for p in run.iterdir())
    (run / "report.html").write_text("old report")
    path = write_report(run)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in run.iterdir()) == sorted(before + ["report.html"])  # no temp file left

    other = write_report(run, out=tmp_path / "elsewhere.html")
    assert other == tmp_path / "elsewhere.html" and other.read_bytes() == path.read_bytes()

    # a failing report (malformed config.json) leaves the previous report untouched
    (run / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="config.json"):
        write_report(run)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="headless Chromium is not installed (Debian: chromium)")
def test_report_renders_offline_in_headless_chromium(tmp_path, pngs):
    import numpy as np
    from matplotlib.image import imread

    run = make_run(tmp_path / "run", pngs)
    report = write_report(run)
    shot = tmp_path / "screenshot.png"
    home = tmp_path / "home"
    home.mkdir()
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update",
        "--force-device-scale-factor=1",
        "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network, even if asked
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000", f"--screenshot={shot}",
        report.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert shot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"

    image = imread(shot)[..., :3]  # float RGB in [0, 1]
    assert image.shape[:2] == (3000, 1200)
    rectangle = 120 * 80  # the coloured rectangle of each 150x100 figure
    for name in ("samples.png", "elbo_curve.png"):
        colour = np.asarray(COLOURS[name])
        near = np.all(np.abs(image - colour) < 0.1, axis=-1)
        assert near.sum() > 0.8 * rectangle, f"{name} is not visible in the screenshot ({near.sum()} pixels)"


def test_report_names_the_datas_source_split_and_skipped_files(tmp_path, pngs):
    config = json.loads(json.dumps(CONFIG))
    config["data"] = {
        "name": "/photos", "image_shape": [3, 32, 32], "train_images": 90, "test_images": 10,
        "info": {"source": "image-folder", "path": "/photos", "split": "seeded", "test_fraction": 0.1, "split_seed": 0,
                 "skipped": 2, "skipped_files": ["a/broken.png", "b/<notes>.png"]},
    }
    page = Page(build_report(make_run(tmp_path / "run", pngs, config=config)))
    for needle in ("/photos, 32×32 images, 3 channels (90 train, 10 test)", "image-folder (/photos)",
                   "seeded, test fraction 0.1, seed 0", "2: a/broken.png, b/<notes>.png"):
        assert needle in page.text, needle


def test_nested_config_values_read_as_tables_not_json(tmp_path, pngs):
    """The dataset's info (a JSON object) is a nested key/value table; lists are their items, long ones cut with the count."""
    config = json.loads(json.dumps(CONFIG))
    files = [f"bad/{i:02d}.png" for i in range(25)]
    config["data"]["info"] = {"source": "image-folder", "class_labels": {"cats": 0, "dogs": 1}, "image_size": [25, 25],
                              "skipped_files": files, "classes": None, "labelled": True, "note": INJECTED, "empty": {}, "none": []}
    config["precision"] = {"used": "fp32", "reason": "auto"}
    html = build_report(make_run(tmp_path / "run", pngs, config=config))
    assert INJECTED not in html and '{"' not in html and "&quot;source&quot;" not in html  # no raw JSON, escaped or not
    text = Page(html).text
    for needle in ("info source image-folder class_labels cats 0 dogs 1 image_size 25, 25 skipped_files "
                   + ", ".join(files[:20]) + " … (25 in all) classes — labelled true note " + INJECTED + " empty — none none",
                   "precision used fp32 reason auto"):
        assert needle in text, needle
    # the info cell holds a table of its own, a row per key, and class_labels one in it
    assert "<th>info</th><td><table><tbody><tr><th>source</th><td>image-folder</td></tr>" in html
    assert "<th>class_labels</th><td><table><tbody><tr><th>cats</th><td>0</td></tr>" in html


def test_notes_are_shown_with_the_figures_and_in_the_summary(tmp_path, pngs):
    config = dict(CONFIG, notes=["batch size 64 is larger than the 36 training images; training on all 36 as one batch"])
    run = make_run(tmp_path / "run", {}, config=config)  # no figures at all
    note = "interpolations.png skipped: an interpolation needs a pair of test images; the test set has 1 <img>"
    html = build_report(run, notes=[note])
    page = Page(html)
    assert "<img>" not in html and note in page.text
    assert page.headings["h2"].index("Figures") > page.headings["h2"].index("Summary")
    assert html.index(_html_escape(note)) > html.index('<h2 id="figures">')
    assert '<a href="#figures">' in html  # reachable from the contents
    assert "note batch size 64 is larger than the 36 training images; training on all 36 as one batch" in page.text
    assert "<h2 id=\"figures\">" not in build_report(run)  # no figures and no notes: no section


def _html_escape(text):
    import html

    return html.escape(text, quote=True)


# ---------------------------------------------------------------- sample quality (sample_quality.json, vaekit eval --generate)

QUALITY = {"format": "vaekit.sample_quality/1", "samplers": {
    "prior": {"sampler": "prior", "options": {}, "n": 10000, "n_fake": 10000, "n_real": 10000, "seed": 0, "fd_name": "FD-classifier",
              "extractor": "classifier trained on mnist, test accuracy 99.24%", "fd": 12.3456, "kid": 0.01234, "kid_se": 0.00051,
              "precision": 0.7123, "recall": 0.6, "density": 0.9, "coverage": 0.8049, "mean_entropy": 0.4512, "marginal_entropy": 2.2901},
    "gmm": {"sampler": "gmm", "options": {"components": 10}, "n": 2000, "n_fake": 2000, "n_real": 10000, "seed": 3,
            "fd_name": "FD-classifier", "extractor": "classifier trained on mnist, test accuracy 99.24%", "fd": 4.5, "kid": 0.004,
            "kid_se": 0.0002, "precision": 0.8, "recall": 0.7, "density": 1.01, "coverage": 0.9, "mean_entropy": None,
            "marginal_entropy": None},
}}


def test_sample_quality_is_a_row_per_sampler_under_the_features_name(tmp_path):
    run = make_run(tmp_path / "run", {})
    (run / "sample_quality.json").write_text(json.dumps(QUALITY))
    page = Page(build_report(run))
    assert "Sample quality" in page.headings["h2"] and '#sample-quality' in [a["href"] for a in page.find("a")]
    assert "Features: classifier trained on mnist, test accuracy 99.24%" in page.text
    assert ("sampler N generated N test seed FD-classifier KID ± SE precision recall density coverage "
            "label entropy (per sample / marginal, nats)") in page.text
    assert "prior 10,000 10,000 0 12.346 0.0123 ± 0.0005 0.712 0.600 0.900 0.805 0.451 / 2.290" in page.text
    assert "gmm (components=10) 2,000 10,000 3 4.500 0.0040 ± 0.0002 0.800 0.700 1.010 0.900 \u2014" in page.text
    assert "compare rows at equal N, on the same features, within vaekit only. This is not FID." in page.text


def test_sample_quality_absent_is_no_section_and_malformed_is_a_warning(tmp_path):
    run = make_run(tmp_path / "run", {})
    assert "Sample quality" not in Page(build_report(run)).headings["h2"]
    for text, warning in (("[1, 2]", "sample_quality.json is not a readable JSON object; the sample quality is left out."),
                          ('{"samplers": 3}', "sample_quality.json has no object of samplers; the sample quality is left out.")):
        (run / "sample_quality.json").write_text(text)
        page = Page(build_report(run))
        assert "Sample quality" in page.headings["h2"] and warning in page.text
        assert "-101.2 ± 0.41" in page.text  # the rest of the report is there


def test_sample_quality_in_different_features_is_flagged_and_escaped(tmp_path):
    run = make_run(tmp_path / "run", {})
    quality = json.loads(json.dumps(QUALITY))
    quality["samplers"]["gmm"]["extractor"] = INJECTED
    (run / "sample_quality.json").write_text(json.dumps(quality))
    text = build_report(run)
    assert INJECTED not in text and INJECTED in Page(text).text
    assert "The rows were measured in different features: compare only rows of the same features." in Page(text).text
