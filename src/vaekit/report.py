"""One self-contained HTML report of a run folder: ``vaekit report RUN_DIR`` -> ``RUN_DIR/report.html``.

The report shows the run's configuration, dataset, device and time, the per-epoch metrics
table, the evaluation (``eval_test.json`` / ``eval_train.json`` from ``vaekit eval``), the sample quality
(``sample_quality.json`` from ``vaekit eval --generate N``: one row per sampler) and
every PNG figure in the folder. Images are embedded as ``data:image/png;base64`` URIs and
the styling is inline, so the file opens offline in any browser: it references no URL and
loads no font. It runs no script, except the latent explorer's when one is given
(``explorer_html``), which the Content-Security-Policy pins by its sha256; it forbids
anything else.

Every piece of text read from the run folder is HTML-escaped. Only ``config.json`` is
required; a missing optional file is left out and a malformed one is reported in the page
instead of stopping the report.

    from vaekit.report import write_report
    write_report("runs/mnist")  # -> Path("runs/mnist/report.html")
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .checkpoint import CheckpointError, atomic_write_text, read_json
from .explorer import script_hashes
from .runfolder import read_metrics

__all__ = ["build_report", "write_report", "read_metrics", "REPORT_NAME", "FIGURES"]

REPORT_NAME = "report.html"

#: The figures vaekit writes, in report order: (file name, heading, one-line caption).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("samples.png", "Samples from the prior",
     "Images decoded from latent codes z ~ N(0, I) drawn from the prior, with the final weights (a VQ-VAE: codes "
     "uniform at random, its training prior)."),
    ("class_grid.png", "Every class",
     "A conditional model's samples: every class across rows, the same z ~ N(0, I) down each column, so that a column "
     "keeps its style and a row its class (vaekit sample RUN --label NAME draws one class)."),
    ("completions.png", "Completions of the missing quadrants",
     "A conditional model given part of each test image: the given part, completions decoded from z ~ N(0, I) shared "
     "down each column, and the truth."),
    ("samples_gmm.png", "Samples from the aggregate posterior (GMM)",
     "Images decoded from z drawn from a Gaussian mixture fitted to the training set's posterior means "
     "(two-stage sampling, Ghosh et al. 2020; vaekit sample --sampler gmm)."),
    ("elbo_curve.png", "Training curve",
     "ELBO in nats per image (higher is better): the training ELBO per minibatch, and the train and "
     "test ELBO at the end of each epoch."),
    ("reconstructions.png", "Reconstructions",
     "16 test images (all of a smaller test set; odd rows) above their mean reconstructions, decoded from the "
     "posterior mean E[z|x]."),
    ("samples_vq_prior.png", "Samples from the code prior (VQ-VAE)",
     "Images decoded from grids of codes drawn from the prior fitted to the training set's codes (a gated PixelCNN or a "
     "transformer; vaekit sample --sampler vq-prior), beside the reconstructions from the test images' own codes."),
    ("latent_map.png", "Latent map",
     "Mean images decoded from a grid of latent points: for K=2 the prior's quantiles in each dimension "
     "(the 'digit manifold'), for K>2 the two principal directions of the test-set posterior means."),
    ("latent_scatter.png", "Latent scatter",
     "Posterior means E[z|x] of the test images coloured by label (their PCA projection for K>2)."),
    ("interpolations.png", "Interpolations",
     "Images decoded along straight lines in the latent space between the codes of pairs of test images."),
    ("kl_mc_vs_exact.png", "Monte-Carlo KL against the exact KL",
     "Absolute error of the Monte-Carlo KL(q || p) estimate against the closed form as the number "
     "of samples N grows; it falls like 1/sqrt(N)."),
    ("rsample_hist.png", "Reparameterised samples",
     "Histograms of z = mu + sigma * eps from rsample against the exact Gaussian density, per dimension."),
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DASH = "\u2014"  # shown for a missing, None or non-finite value

# the metrics.jsonl columns vaekit writes: key -> (heading, decimals or None for integers)
_METRIC_COLUMNS: dict[str, tuple[str, int | None]] = {
    "epoch": ("epoch", None),
    "steps": ("steps", None),
    "train_elbo": ("train ELBO", 1),
    "test_elbo": ("test ELBO", 1),
    "test_elbo_se": ("± SE", 2),
    "test_rec": ("test E[log p(x|z)]", 1),
    "test_kl": ("test KL", 2),
    "sigma_x": ("σ_x", 4),
    "skipped_nonfinite": ("skipped (non-finite)", None),
    "seconds": ("time", None),
}

_CSS = """
body { margin: 0; background: #f6f7f9; color: #1d2330;
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; word-break: break-all; }
h2 { font-size: 1.3em; margin-top: 2em; padding-bottom: 0.2em; border-bottom: 2px solid #dde1e8; }
h3 { font-size: 1.08em; margin: 1.4em 0 0.4em; }
p.sub { color: #5a6272; margin-top: 0; }
nav { font-size: 0.92em; margin: 0.8em 0 0; }
nav a { margin-right: 1em; color: #2451a6; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #c9ced8; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td table { margin: 0; font-size: 1em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; }
.tables { display: flex; flex-wrap: wrap; gap: 0 28px; }
figure { margin: 1em 0 2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #dde1e8; }
figcaption { color: #4a5262; font-size: 0.92em; margin-top: 0.4em; }
.note { background: #f3f6fb; border-left: 4px solid #7a9cd6; padding: 8px 12px; }
.warn { background: #fff6e5; border-left: 4px solid #e0a030; padding: 8px 12px; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; }
footer { margin-top: 3em; color: #7a8290; font-size: 0.85em; }
"""

# the page may show inline styles and data: images and nothing else: no network, and no script
# but the explorer's, each allowed by the sha256 of its exact text (see _csp)
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _csp(script_sources: Sequence[str] = ()) -> str:
    """The Content-Security-Policy: ``_CSP``, plus ``script-src`` with exactly the given hash sources."""
    return _CSP + (f"; script-src {' '.join(script_sources)}" if script_sources else "")


# ---------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _fmt_num(value: Any, decimals: int | None = 1) -> str:
    """A number with ``decimals`` decimals (None: as an integer); a dash for None, NaN or inf."""
    if value is None or (_is_number(value) and not math.isfinite(value)):
        return _DASH
    if not _is_number(value):
        return str(value)
    if decimals is None:
        return f"{value:.0f}" if isinstance(value, float) else str(value)
    return f"{value:.{decimals}f}"


def _fmt_pm(value: Any, se: Any, decimals: int = 1, se_decimals: int = 2) -> str:
    """``value ± se``, or just ``value`` when the standard error is missing."""
    text = _fmt_num(value, decimals)
    if text != _DASH and _finite(se):
        text += f" ± {se:.{se_decimals}f}"
    return text


def _fmt_value(value: Any) -> str:
    """A config value as text: floats in %g, booleans and lists as in JSON, None as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=True)
    return str(value)


def _fmt_seconds(seconds: Any) -> str:
    """A duration: ``42.0 s``, ``3 min 07 s`` or ``2 h 05 min``; a dash if unknown."""
    if not _finite(seconds):
        return _DASH
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        m, r = divmod(int(round(s)), 60)
        return f"{m} min {r:02d} s"
    h, r = divmod(int(round(s)), 3600)
    return f"{h} h {r // 60:02d} min"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- HTML pieces


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[tuple[str, str]]]) -> str:
    """A table of already-escaped cells; each cell is (html, kind): kind "num" (right-aligned), "th" or ""."""
    out = ["<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for content, kind in row:
            if kind == "th":
                cells.append(f"<th>{content}</th>")
            elif kind == "num":
                cells.append(f'<td class="num">{content}</td>')
            else:
                cells.append(f"<td>{content}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv_table(items: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table of plain text (escaped here)."""
    return _table(None, ([(_esc(k), "th"), (_esc(v), "")] for k, v in items))


_LIST_SHOWN = 20  # items of a long list shown in a configuration table


def _value_html(value: Any) -> str:
    """A config value as escaped HTML: a JSON object as a nested key/value table, a list as its items
    (one per line for sentences; the first ``_LIST_SHOWN`` of a long one, with the count), others as ``_fmt_value``."""
    if isinstance(value, dict):
        if not value:
            return _DASH
        return _table(None, ([(_esc(k), "th"), (_value_html(v), "")] for k, v in value.items()))
    if isinstance(value, list):
        if not value:
            return "none"
        items = [_value_html(v) for v in value[:_LIST_SHOWN]]
        more = f" … ({len(value)} in all)" if len(value) > _LIST_SHOWN else ""
        sentences = any(isinstance(v, str) and " " in v for v in value) or any(isinstance(v, (dict, list)) for v in value)
        return ("<br>" if sentences else ", ").join(items) + more
    return _esc(_fmt_value(value))


def _config_table(section: dict[str, Any]) -> str:
    """A two-column key/value table of a configuration section, nested values shown readably (``_value_html``)."""
    return _table(None, ([(_esc(k), "th"), (_value_html(v), "")] for k, v in section.items()))


def _warning(text: str) -> str:
    return f'<p class="warn">{_esc(text)}</p>'


# ---------------------------------------------------------------- reading the run folder


def _read_eval(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """An eval_*.json file, or (None, problem) when it is malformed; (None, None) when absent."""
    if not path.exists():
        return None, None
    try:
        return read_json(path), None
    except CheckpointError:
        return None, f"{path.name} is not a readable JSON object; its evaluation is left out."


def _png_files(run: Path) -> list[Path]:
    """The PNG files of the run folder: vaekit's figures in report order, then the others by name."""
    try:
        found = {p.name: p for p in run.iterdir() if p.suffix.lower() == ".png" and p.is_file() and not p.name.startswith(".")}
    except OSError:
        return []
    known = [found.pop(name) for name, _, _ in FIGURES if name in found]
    return known + [found[name] for name in sorted(found)]


# ---------------------------------------------------------------- sections


def _summary(run: Path, meta: dict[str, Any], rows: list[dict[str, Any]], evals: dict[str, dict[str, Any]]) -> str:
    data, train = _dict(meta.get("data")), _dict(meta.get("train"))
    dataset = data.get("name", train.get("dataset"))
    items: list[tuple[str, str]] = [("run folder", str(run))]
    if dataset is not None:
        shape = ""
        if isinstance(data.get("image_shape"), list) and len(data["image_shape"]) == 3:
            c, h, w = data["image_shape"]
            shape = f", {_fmt_value(h)}×{_fmt_value(w)} images, {_fmt_value(c)} channel{'s' if c != 1 else ''}"
        elif data.get("image_size") is not None:
            shape = f", {_fmt_value(data['image_size'])}×{_fmt_value(data['image_size'])} images"
        counts = ""
        if data.get("train_images") is not None or data.get("test_images") is not None:
            counts = f" ({_fmt_value(data.get('train_images'))} train, {_fmt_value(data.get('test_images'))} test)"
        items.append(("dataset", f"{_fmt_value(dataset)}{shape}{counts}"))
        info = _dict(data.get("info"))
        if info:  # where the images came from, how they were split, what was left out
            source = f"{_fmt_value(info.get('source'))}" + (f" ({_fmt_value(info['path'])})" if info.get("path") else "")
            split = _fmt_value(info.get("split"))
            if info.get("split") == "seeded":
                split += f", test fraction {_fmt_value(info.get('test_fraction'))}, seed {_fmt_value(info.get('split_seed'))}"
            items.append(("data source", source))
            items.append(("split", split))
            skipped = info.get("skipped", 0) or 0
            names = info.get("skipped_files") or []
            listed = f": {', '.join(map(str, names[:10]))}" + (" ..." if len(names) > 10 else "") if names else ""
            items.append(("skipped files", f"{_fmt_value(skipped)}{listed}"))
    notes = meta.get("notes")
    for note in notes if isinstance(notes, list) else []:  # what vaekit adapted, e.g. a batch larger than the data
        items.append(("note", _fmt_value(note)))
    items.append(("device", _fmt_value(meta.get("device", train.get("device")))))
    items.append(("created", _fmt_value(meta.get("created"))))
    versions = [f"{name} {_fmt_value(meta[key])}" for name, key in
                (("vaekit", "vaekit_version"), ("torch", "torch_version"), ("Python", "python_version")) if key in meta]
    if versions:
        items.append(("versions", ", ".join(versions)))
    if rows:
        last = rows[-1]
        epochs = _fmt_value(last.get("epoch"))
        if train.get("epochs") is not None:
            epochs += f" of {_fmt_value(train['epochs'])}"
        items.append(("epochs trained", epochs))
        items.append(("training time", _fmt_seconds(last.get("seconds"))))
        items.append(("final test ELBO", _fmt_pm(last.get("test_elbo"), last.get("test_elbo_se")) + " nats per image"))
    else:
        items.append(("training", "no per-epoch metrics (metrics.jsonl is missing or empty)"))
    gmm = _dict(meta.get("_gmm"))
    if _finite(gmm.get("test_loglik_gmm")) and _finite(gmm.get("test_loglik_prior")):
        items.append((
            "latent log-density of the test posterior means",
            f"{gmm['test_loglik_gmm']:.3f} nats per point under the GMM ({_fmt_value(gmm.get('components'))} components, "
            f"fit on the training set) vs {gmm['test_loglik_prior']:.3f} under N(0, I) "
            f"(gain {gmm['test_loglik_gmm'] - gmm['test_loglik_prior']:+.3f})",
        ))
    vq = _dict(meta.get("_vq_prior"))
    if _finite(vq.get("bits_per_dim_8bit")):
        items.append((
            "VQ-VAE with its code prior",
            f"{vq['bits_per_dim_8bit']:.4f} bits/dim on the {_fmt_value(vq.get('test_images'))} test images as 8-bit data "
            f"({_fmt_value(_dict(vq.get('settings')).get('prior_net'))} prior: {_fmt_num(vq.get('prior_nll'), 2)} nats per image "
            f"for the codes, uniform {_fmt_num(vq.get('uniform_nll'), 2)})",
        ))
    for split, ev in evals.items():
        loglik = _fmt_pm(ev.get("log_likelihood"), ev.get("log_likelihood_se")) + " nats per image"
        if _finite(ev.get("bits_per_dim")):
            loglik += f" ({_fmt_pm(ev['bits_per_dim'], ev.get('bits_per_dim_se'), 4, 4)} bits/dim)"
        items.append((f"{_quantity(ev)}, {split}", loglik))
    return '<h2 id="summary">Summary</h2>' + _kv_table(items)


def _chosen_parts(key: str, section: dict[str, Any]) -> dict[str, Any]:
    """A model or training section with only the chosen parts' options, each as a row of its own (runs of
    earlier versions recorded every architecture's options); the section as it is if it cannot be read so."""
    from .config import ModelConfig, TrainConfig, config_from_dict, config_to_dict

    try:
        normal = config_to_dict(config_from_dict({"model": ModelConfig, "train": TrainConfig}[key], section))
    except Exception:  # noqa: BLE001 - a part of a plugin not loaded here, a malformed file: shown as written
        return section
    options = normal.pop("options", {}) or {}
    return {**normal, **options}


def _config(meta: dict[str, Any]) -> str:
    parts = ['<h2 id="config">Configuration</h2><div class="tables">']
    for key, title in (("model", "Model"), ("train", "Training"), ("data", "Data")):
        section = _dict(meta.get(key))
        if section and key in ("model", "train"):
            section = _chosen_parts(key, section)
        if section:
            parts.append(f"<div><h3>{title}</h3>" + _config_table(section) + "</div>")
    known = {"model", "train", "data"}
    other = {k: v for k, v in meta.items() if k not in known and not k.startswith("_")}
    if other:
        parts.append("<div><h3>Run</h3>" + _config_table(other) + "</div>")
    parts.append("</div>")
    return "".join(parts)


def _metrics(rows: list[dict[str, Any]], problems: list[str]) -> str:
    parts = ['<h2 id="metrics">Metrics per epoch</h2>']
    parts.extend(_warning(p) for p in problems)
    if not rows:
        parts.append("<p>No per-epoch metrics.</p>")
        return "".join(parts)
    keys = [k for k in _METRIC_COLUMNS if any(k in r for r in rows)]
    for row in rows:  # columns vaekit does not know yet, in first-seen order
        for k in row:
            if k not in keys:
                keys.append(k)
    header = [_esc(_METRIC_COLUMNS.get(k, (k,))[0]) for k in keys]
    body = []
    for row in rows:
        cells = []
        for k in keys:
            value = row.get(k)
            if k == "seconds":
                text = _fmt_seconds(value)
            elif k in _METRIC_COLUMNS:
                text = _fmt_num(value, _METRIC_COLUMNS[k][1])
            else:
                text = _fmt_value(value)
            cells.append((_esc(text), "num"))
        body.append(cells)
    parts.append('<p class="sub">ELBO, reconstruction term and KL in nats per image on the test set '
                 "(± one standard error over images); time is cumulative training time.</p>")
    parts.append('<div class="scroll">' + _table(header, body) + "</div>")
    return "".join(parts)


def _quantity(ev: dict[str, Any]) -> str:
    """What an evaluation's log-likelihood is of: log p(x), or a conditional model's (e.g. log p(x_missing | x_given))."""
    quantity = _dict(ev.get("condition")).get("quantity")
    return quantity if isinstance(quantity, str) and quantity else "log p(x)"


def _eval_block(split: str, ev: dict[str, Any]) -> str:
    parts = [f"<h3>{_esc(split)} split</h3>"]
    k = ev.get("k")
    quantities = [
        ("ELBO", _fmt_pm(ev.get("elbo"), ev.get("elbo_se")), "nats per image"),
        ("reconstruction E[log p(x|z)]", _fmt_num(ev.get("rec"), 1), "nats per image"),
        ("KL(q(z|x) || p(z))", _fmt_num(ev.get("kl"), 2), "nats per image"),
        (_quantity(ev) + (f" (importance sampled, k = {_fmt_value(k)})" if k is not None else ""),
         _fmt_pm(ev.get("log_likelihood"), ev.get("log_likelihood_se")), "nats per image"),
        ("bits per dimension", _fmt_pm(ev.get("bits_per_dim"), ev.get("bits_per_dim_se"), 4, 4), "bits"),
        ("active units", _fmt_value(ev.get("active_units")) + (f" of {len(ev['kl_per_dim'])}" if isinstance(ev.get("kl_per_dim"), list) else ""),
         f"Var[E q(z|x)] > {_fmt_value(ev.get('active_threshold'))}" if ev.get("active_threshold") is not None else ""),
        ("reconstruction MSE", _fmt_num(ev.get("recon_mse"), 5), "per pixel"),
        *_vq_quantities(ev),
    ]
    rows = [[(_esc(name), "th"), (_esc(value), "num"), (_esc(unit), "")] for name, value, unit in quantities
            if value != _DASH or name.startswith(("ELBO", "log p("))]
    parts.append(_table(["quantity", "value", "unit"], rows))

    settings = [(key, _fmt_value(ev[key])) for key in ("n_images", "dims", "k", "n_samples", "seed", "likelihood") if key in ev]
    if "seconds" in ev:
        settings.append(("time", _fmt_seconds(ev["seconds"])))
    if settings:
        parts.append(_kv_table(settings))

    kl = ev.get("kl_per_dim")
    if isinstance(kl, list) and kl:
        var = ev.get("posterior_mean_var")
        var = var if isinstance(var, list) and len(var) == len(kl) else None
        threshold = ev.get("active_threshold")
        header = ["dim", "KL (nats)"] + (["Var[E q(z|x)]", "active"] if var is not None else [])
        body = []
        for i, value in enumerate(kl):
            row = [(str(i), "num"), (_esc(_fmt_num(value, 3)), "num")]
            if var is not None:
                active = _DASH
                if _finite(var[i]) and _finite(threshold):
                    active = "yes" if var[i] > threshold else "no"
                row += [(_esc(_fmt_num(var[i], 4)), "num"), (active, "")]
            body.append(row)
        parts.append("<h3>KL per latent dimension</h3>" + '<div class="scroll">' + _table(header, body) + "</div>")
    if ev.get("note"):
        parts.append(f'<p class="note">{_esc(ev["note"])}</p>')
    return "".join(parts)


def _vq_quantities(ev: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A VQ-VAE's rows of the evaluation: codebook use, and the 8-bit bits/dim under its fitted code prior."""
    rows = []
    if ev.get("codebook_perplexity") is not None:
        rows.append(("codebook perplexity", _fmt_num(ev.get("codebook_perplexity"), 1),
                     f"{_fmt_value(ev.get('codes_used'))} of {_fmt_value(ev.get('codebook_size'))} codes used"))
    vq = _dict(ev.get("vq_prior"))
    if vq:
        rows.append((f"bits per dimension, 8-bit, with the {_fmt_value(vq.get('prior_net'))} code prior",
                     _fmt_pm(vq.get("bits_per_dim_8bit"), vq.get("bits_per_dim_8bit_se"), 4, 4),
                     f"bits (codes: {_fmt_num(vq.get('prior_nll'), 2)} nats per image; uniform: {_fmt_num(vq.get('uniform_nll'), 2)})"))
    return rows


def _evaluation(evals: dict[str, dict[str, Any]], problems: list[str]) -> str:
    if not evals and not problems:
        return ""
    parts = ['<h2 id="evaluation">Evaluation</h2>']
    parts.extend(_warning(p) for p in problems)
    parts.extend(_eval_block(split, ev) for split, ev in evals.items())
    return "".join(parts)


# ---------------------------------------------------------------- sample quality (vaekit eval --generate N)

_QUALITY_FILE = "sample_quality.json"  # vaekit.commands.quality.QUALITY_FILE (commands/ is a floor above)


def _read_quality(run: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The entries of sample_quality.json (one per sampler), or ([], problem) when it is malformed; ([], None) when absent."""
    saved, problem = _read_eval(run / _QUALITY_FILE)
    if saved is None:
        return [], problem and f"{_QUALITY_FILE} is not a readable JSON object; the sample quality is left out."
    samplers = saved.get("samplers")
    if not isinstance(samplers, dict) or not all(isinstance(e, dict) for e in samplers.values()):
        return [], f"{_QUALITY_FILE} has no object of samplers; the sample quality is left out."
    return [{"sampler": name, **entry} for name, entry in samplers.items()], None


def _fmt_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _fmt_num(value, None)


def _quality_row(e: dict[str, Any]) -> list[tuple[str, str]]:
    options = ", ".join(f"{k}={_fmt_value(v)}" for k, v in _dict(e.get("options")).items())
    entropy = _DASH
    if _finite(e.get("mean_entropy")) and _finite(e.get("marginal_entropy")):
        entropy = f"{e['mean_entropy']:.3f} / {e['marginal_entropy']:.3f}"
    cells = [
        (_esc(f"{_fmt_value(e.get('sampler'))}" + (f" ({options})" if options else "")), ""),
        (_esc(_fmt_count(e.get("n_fake"))), "num"),
        (_esc(_fmt_count(e.get("n_real"))), "num"),
        (_esc(_fmt_value(e.get("seed"))), "num"),
        (_esc(_fmt_num(e.get("fd"), 3)), "num"),
        (_esc(_fmt_pm(e.get("kid"), e.get("kid_se"), 4, 4)), "num"),
    ]
    cells += [(_esc(_fmt_num(e.get(key), 3)), "num") for key in ("precision", "recall", "density", "coverage")]
    return cells + [(_esc(entropy), "num")]


def _sample_quality(entries: list[dict[str, Any]], problem: str | None) -> str:
    """One row per sampler measured: N, FD, KID ± SE, PRDC and the label entropies, under the features' name."""
    if not entries and not problem:
        return ""
    parts = ['<h2 id="sample-quality">Sample quality</h2>']
    if problem:
        parts.append(_warning(problem))
    if not entries:
        return "".join(parts)
    names = sorted({str(e.get("extractor", "unnamed features")) for e in entries})
    fd = sorted({str(e.get("fd_name", "FD")) for e in entries})
    parts.append(f"<p>Features: {'; '.join(f'<b>{_esc(n)}</b>' for n in names)}.</p>")
    if len(names) > 1:
        parts.append(_warning("The rows were measured in different features: compare only rows of the same features."))
    header = ["sampler", "N generated", "N test", "seed", _esc(fd[0] if len(fd) == 1 else "FD"), "KID ± SE", "precision",
              "recall", "density", "coverage", "label entropy (per sample / marginal, nats)"]
    parts.append('<div class="scroll">' + _table(header, [_quality_row(e) for e in entries]) + "</div>")
    parts.append(
        '<p class="note">Each row: N images generated by the sampler (seed as shown, <code>vaekit eval --generate N</code>) '
        "against the test images, in the features named above. FD (Fréchet distance, squared feature units) and KID "
        "(± its standard error over subsets) are lower for closer sets; precision (generated images inside the test "
        "images' k-NN balls), recall, density and coverage are higher for better; a low per-sample entropy means "
        "confidently classified images, a high marginal entropy many classes. FD and PRDC are biased at small N: compare "
        "rows at equal N, on the same features, within vaekit only. This is not FID.</p>"
    )
    return "".join(parts)


def _figure(path: Path, heading: str, caption: str) -> str:
    """One embedded figure; a warning instead if the file cannot be read or is not a PNG."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"<h3>{_esc(heading)}</h3>" + _warning(f"cannot read {path.name}: {e.strerror or e}")
    if not data.startswith(_PNG_SIGNATURE):
        return f"<h3>{_esc(heading)}</h3>" + _warning(f"{path.name} is not a PNG image; left out.")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><h3>{_esc(heading)}</h3><img src="{uri}" alt="{_esc(path.name)}">'
            f"<figcaption>{_esc(caption)} <code>{_esc(path.name)}</code></figcaption></figure>")


def _other_caption(name: str) -> str:
    stem = Path(name).stem
    if stem.startswith("samples_seed") and stem[len("samples_seed"):].isdigit():
        return f"Images decoded from z ~ N(0, I) with seed {stem[len('samples_seed'):]} (vaekit sample)."
    return "A further figure found in the run folder."


def _figures(pngs: list[Path], notes: Sequence[str] = ()) -> str:
    known = {name: (heading, caption) for name, heading, caption in FIGURES}
    main = [p for p in pngs if p.name in known]
    other = [p for p in pngs if p.name not in known]
    parts = []
    if main or notes:
        parts.append('<h2 id="figures">Figures</h2>')
        parts.extend(f'<p class="note">{_esc(note)}</p>' for note in notes)  # figures not drawn, and why
        for names in (("samples.png", "samples_gmm.png"), ("reconstructions.png", "samples_vq_prior.png")):
            pair = [p for p in main if not isinstance(p, str) and p.name in names]
            if len(pair) == 2:  # prior and GMM samples, reconstructions and code-prior samples: side by side
                side = '<div class="tables">' + "".join(f"<div style=\"flex: 1 1 300px\">{_figure(p, *known[p.name])}</div>" for p in pair) + "</div>"
                main = [side if p is pair[0] else p for p in main if p is not pair[1]]
        parts.extend(p if isinstance(p, str) else _figure(p, *known[p.name]) for p in main)
    if other:
        parts.append('<h2 id="other-figures">Other figures</h2>')
        parts.extend(_figure(p, p.name, _other_caption(p.name)) for p in other)
    return "".join(parts)


# ---------------------------------------------------------------- public API


def build_report(run_dir: str | os.PathLike, *, explorer_html: str | None = None, notes: Sequence[str] = ()) -> str:
    """The HTML text of the report of the run folder ``run_dir``.

    ``explorer_html``: the latent explorer's section (``vaekit.explorer.explorer_html``),
    shown after the summary; the page's CSP then allows its inline scripts by their sha256,
    and nothing else. Without it the page runs no script. ``notes``: one line each, shown
    at the head of the figures (e.g. a figure that was skipped, and why).

    Raises CheckpointError naming the folder if it is not a folder or has no config.json,
    and naming config.json if that file is not a JSON object.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist or is not a folder")
    if not (run / "config.json").is_file():
        raise CheckpointError(f"{run} is not a vaekit run folder: it has no config.json")
    meta = read_json(run / "config.json")
    rows, metric_problems = read_metrics(run / "metrics.jsonl")
    evals: dict[str, dict[str, Any]] = {}
    eval_problems: list[str] = []
    for split in ("test", "train"):
        ev, problem = _read_eval(run / f"eval_{split}.json")
        if ev is not None:
            evals[split] = ev
        if problem:
            eval_problems.append(problem)
    pngs = _png_files(run)
    gmm_info, gmm_problem = _read_eval(run / "gmm.json")
    if gmm_info is not None:
        meta = {**meta, "_gmm": gmm_info}
    if gmm_problem:
        eval_problems.append(gmm_problem.replace("its evaluation", "the GMM's log-likelihood"))
    vq_info, vq_problem = _read_eval(run / "vq_prior.json")
    if vq_info is not None:
        meta = {**meta, "_vq_prior": vq_info}
    if vq_problem:
        eval_problems.append(vq_problem.replace("its evaluation", "the code prior's NLL"))

    quality, quality_problem = _read_quality(run)

    name = run.resolve().name or str(run.resolve())
    sections = [
        _summary(run, meta, rows, evals),
        explorer_html or "",
        _config(meta),
        _metrics(rows, metric_problems),
        _evaluation(evals, eval_problems),
        _sample_quality(quality, quality_problem),
        _figures(pngs, notes),
    ]
    nav = [("summary", "Summary")]
    if explorer_html:
        nav.append(("explorer", "Latent explorer"))
    nav += [("config", "Configuration"), ("metrics", "Metrics")]
    if evals or eval_problems:
        nav.append(("evaluation", "Evaluation"))
    if quality or quality_problem:
        nav.append(("sample-quality", "Sample quality"))
    if notes or any(p.name in {n for n, _, _ in FIGURES} for p in pngs):
        nav.append(("figures", "Figures"))
    if any(p.name not in {n for n, _, _ in FIGURES} for p in pngs):
        nav.append(("other-figures", "Other figures"))
    nav_html = "<nav>" + "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in nav) + "</nav>"
    version = _fmt_value(meta.get("vaekit_version", "?"))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(script_hashes(explorer_html or ""))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>vaekit report: {_esc(name)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>vaekit run: {_esc(name)}</h1>\n"
        f'<p class="sub">A report of the run folder <code>{_esc(run)}</code>, written by vaekit.</p>\n'
        f"{nav_html}\n"
        + "\n".join(s for s in sections if s)
        + f"\n<footer>vaekit {_esc(version)} — a self-contained report: every image is embedded, "
        "nothing is loaded from the network.</footer>\n</main>\n</body>\n</html>\n"
    )


def write_report(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, explorer_html: str | None = None, notes: Sequence[str] = (),
) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``) atomically; returns its path.

    ``explorer_html``, ``notes``: see ``build_report``."""
    text = build_report(run_dir, explorer_html=explorer_html, notes=notes)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    atomic_write_text(path, text)
    return path
