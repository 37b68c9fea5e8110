"""The latent explorer of the run report: a live decoder in the page.

``explorer_html(model, means, labels, gmm=None)`` returns an HTML fragment for the report
(``vaekit.report.build_report(..., explorer_html=...)``): a canvas with the latent plane
(K = 2: z itself; K > 2: the two principal directions of the posterior means), the test
set's posterior means coloured by label, the prior's 1-, 2- and 3-sigma circles, the mean
image decoded in the page as the pointer moves, interpolation by dragging, sliders per
latent dimension (K > 2, up to 64), and buttons that draw z from the prior or from a
Gaussian mixture fitted to the posterior means (``vaekit.gmm``).

The decoder runs in plain JavaScript (``assets/explorer.js``), from its weights embedded
as base64 little-endian float32. ``decoder_spec`` turns a decoder made of supported layers
(Linear, Conv2d, ConvTranspose2d, ReLU, LeakyReLU, Tanh, Sigmoid, SiLU, ELU, Flatten,
Unflatten, Identity, nested nn.Sequential) into a list of layer descriptions and one flat
float32 tensor; any other layer raises ``UnsupportedDecoder`` naming it, and
``explorer_html`` then returns a visible note instead of the panel.

The page's script is one inline ``<script>``; the report's Content-Security-Policy allows
exactly that script by its sha256 (``script_hashes``).

Automation: ``window.vaekitExplorer.ready`` (a Promise), ``window.vaekitExplorer.decode(z)``
(the mean image as a Float32Array [C*H*W]) and the URL fragment ``#z=0.5,-1.2``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "UnsupportedDecoder", "decoder_spec", "explorer_html", "explorer_likelihood", "script_hashes", "SUPPORTED_LAYERS",
    "MAX_POINTS", "MAX_SLIDERS",
]

SUPPORTED_LAYERS = (
    "Linear", "Conv2d", "ConvTranspose2d", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "SiLU", "ELU",
    "Flatten", "Unflatten", "Identity", "Sequential",
)
MAX_POINTS = 10_000  # posterior means drawn on the plane (the first ones)
MAX_SLIDERS = 64
_JS = Path(__file__).parent / "assets" / "explorer.js"

_EXACT = {
    nn.Linear: "Linear", nn.Conv2d: "Conv2d", nn.ConvTranspose2d: "ConvTranspose2d", nn.ReLU: "ReLU",
    nn.LeakyReLU: "LeakyReLU", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid", nn.SiLU: "SiLU", nn.ELU: "ELU",
    nn.Flatten: "Flatten", nn.Unflatten: "Unflatten", nn.Identity: "Identity",
}


class UnsupportedDecoder(ValueError):
    """The in-page decoder cannot run this decoder; the message names the layer and why."""


# ---------------------------------------------------------------- the decoder as data


def _leaves(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """The decoder's layers in order, nested nn.Sequential (and its subclasses) walked through."""
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _leaves(child, f"{path}.{name}")
        return out
    return [(path, module)]


def _pair(value: Any) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _check_conv(path: str, m: nn.Module) -> None:
    kind = type(m).__name__
    if isinstance(m.padding, str):
        raise UnsupportedDecoder(f"{path} ({kind}) uses padding={m.padding!r}; the in-page decoder needs numeric padding")
    if _pair(m.dilation) != [1, 1]:
        raise UnsupportedDecoder(f"{path} ({kind}) uses dilation {tuple(_pair(m.dilation))}; the in-page decoder supports dilation 1")
    if m.groups != 1:
        raise UnsupportedDecoder(f"{path} ({kind}) uses groups={m.groups}; the in-page decoder supports groups=1")
    if m.padding_mode != "zeros":
        raise UnsupportedDecoder(f"{path} ({kind}) uses padding_mode={m.padding_mode!r}; the in-page decoder supports 'zeros'")


def decoder_spec(decoder: nn.Module, latent_dim: int | None = None) -> tuple[list[dict[str, Any]], Tensor]:
    """The decoder as (layers, weights) for the in-page decoder.

    ``latent_dim``: K, the width of the latents it takes (default: the ``in_features`` of
    its first layer, which must then be a Linear).

    ``layers``: one dict per layer, in order: ``type`` (the torch class name), ``path``
    (e.g. ``decoder.3``), ``in_shape`` / ``out_shape`` (one sample, without the batch dim,
    traced with torch), the layer's settings (kernel, stride, padding, ...) and
    ``weight`` / ``bias`` as ``[offset, count]`` into ``weights``. ``weights``: one flat
    float32 CPU tensor, each parameter's values in torch's row-major order.

    Raises UnsupportedDecoder naming the first layer it cannot run, or saying why (a
    forward that is not its layers in order, an output that is not [C, H, W]).
    """
    leaves = _leaves(decoder, "decoder")
    if latent_dim is None:
        if not leaves or not isinstance(leaves[0][1], nn.Linear):
            raise UnsupportedDecoder("give latent_dim: the decoder's first layer is not a Linear")
        latent_dim = leaves[0][1].in_features
    chunks: list[Tensor] = []
    offset = 0
    layers: list[dict[str, Any]] = []

    def add(t: Tensor | None) -> list[int] | None:
        nonlocal offset
        if t is None:
            return None
        flat = t.detach().to("cpu", torch.float32).contiguous().reshape(-1)
        chunks.append(flat)
        offset += flat.numel()
        return [offset - flat.numel(), flat.numel()]

    for path, m in leaves:
        kind = _EXACT.get(type(m))
        if kind is None:
            raise UnsupportedDecoder(
                f"{path} ({type(m).__name__}) is not supported by the in-page decoder "
                f"(supported: {', '.join(SUPPORTED_LAYERS)})"
            )
        spec: dict[str, Any] = {"type": kind, "path": path}
        if kind == "Linear":
            spec.update(in_features=m.in_features, out_features=m.out_features, weight=add(m.weight), bias=add(m.bias))
        elif kind in ("Conv2d", "ConvTranspose2d"):
            _check_conv(path, m)
            spec.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding), weight=add(m.weight), bias=add(m.bias))
            if kind == "ConvTranspose2d":
                spec["output_padding"] = _pair(m.output_padding)
        elif kind == "LeakyReLU":
            spec["negative_slope"] = float(m.negative_slope)
        elif kind == "ELU":
            spec["alpha"] = float(m.alpha)
        elif kind == "Flatten":
            if m.start_dim == 0:
                raise UnsupportedDecoder(f"{path} (Flatten) flattens the batch dimension (start_dim=0)")
        elif kind == "Unflatten":
            if isinstance(m.dim, str) or m.dim == 0:
                raise UnsupportedDecoder(f"{path} (Unflatten) unflattens dimension {m.dim!r}; it must be a numbered dimension after the batch")
        layers.append(spec)

    # trace the shapes with torch, and check that the layers in order are the decoder's forward
    try:
        p = next(decoder.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    gen = torch.Generator().manual_seed(1234)
    z = torch.randn(3, latent_dim, generator=gen).to(device, dtype)
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.no_grad():
            x = z
            for spec, (_, m) in zip(layers, leaves):
                spec["in_shape"] = list(x.shape[1:])
                try:
                    x = m(x)
                except Exception as e:  # noqa: BLE001 - a shape that does not fit: say where
                    raise UnsupportedDecoder(f"{spec['path']} ({spec['type']}) fails on input of shape {list(x.shape)}: {e}") from None
                spec["out_shape"] = list(x.shape[1:])
                if spec["type"] in ("Conv2d", "ConvTranspose2d") and (len(spec["in_shape"]) != 3 or len(spec["out_shape"]) != 3):
                    raise UnsupportedDecoder(f"{spec['path']} ({spec['type']}) gets input of shape {spec['in_shape']}; the in-page decoder needs [C, H, W]")
            try:
                direct = decoder(z)
            except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the note names the layer
                raise UnsupportedDecoder(f"the decoder fails on latents of shape [3, {latent_dim}]: {type(e).__name__}: {e}") from None
    finally:
        decoder.train(was_training)
    if direct.shape != x.shape or not torch.allclose(direct.float(), x.float(), rtol=1e-4, atol=1e-5):
        raise UnsupportedDecoder(
            f"the decoder's forward ({type(decoder).__name__}) is not its layers applied in order; "
            "the in-page decoder runs the layers in order"
        )
    if x.ndim != 4:
        raise UnsupportedDecoder(f"the decoder's output has shape {list(x.shape)}; the explorer needs images [M, C, H, W]")
    weights = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.float32)
    return layers, weights


def explorer_likelihood(model: nn.Module) -> Any:
    """The model's likelihood, which tells the page how to compute E[x|z]: its ``explorer_mean_js`` (a
    JavaScript function of one decoder output) and ``mean_description``. A likelihood given by name (a
    string, or an object with only a ``.name``) is looked up in ``LIKELIHOODS``; ``UnsupportedDecoder``
    if there is none, or it does not say how to compute its mean."""
    from .likelihoods import LIKELIHOODS

    lik = getattr(model, "likelihood", "gaussian")
    if getattr(lik, "explorer_mean_js", None) is None:
        name = lik if isinstance(lik, str) else getattr(lik, "name", None)
        if not isinstance(name, str):
            raise UnsupportedDecoder(f"the model's likelihood {lik!r} has no name; the explorer knows {', '.join(LIKELIHOODS)}")
        norm = name.strip().lower().replace("_", "-").replace(" ", "-")
        if norm not in LIKELIHOODS:
            raise UnsupportedDecoder(f"the explorer does not know the likelihood {name!r} (it knows {', '.join(LIKELIHOODS)})")
        lik = LIKELIHOODS[norm]()
    if not lik.explorer_mean_js:
        raise UnsupportedDecoder(f"the likelihood {lik.name!r} does not say how to compute its mean in the page (explorer_mean_js)")
    return lik


def latent_dim(model: nn.Module, means: Tensor | None = None) -> int:
    """K from ``model.latent_dim``, else ``model.K``, else the width of ``means``."""
    for attr in ("latent_dim", "K"):
        k = getattr(model, attr, None)
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
    if means is not None:
        return int(means.shape[1])
    raise UnsupportedDecoder("the model has neither .latent_dim nor .K")


# ---------------------------------------------------------------- the HTML fragment


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no '<', no line separators)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def _plane(means: Tensor, k: int) -> tuple[list[float], list[list[float]], Tensor, str]:
    """(center [K], two orthonormal directions [2][K], the points on the plane [M, 2], what the axes are)."""
    if k == 2:
        return [0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], means.float(), "z\u2080 (across) and z\u2081 (up)"
    from .latents import pca

    center, dirs, _ = pca(means, 2)
    pts = (means.float() - center) @ dirs.T  # [M, 2]
    return center.tolist(), dirs.tolist(), pts, "the first (across) and second (up) principal directions of the posterior means, around their mean"


def _view(center: list[float], dirs: list[list[float]], pts: Tensor, k: int) -> tuple[list[float], dict[str, float]]:
    """Where z = 0 lies on the plane, and the square the plane shows first: the points (99.5% of them) and the
    prior's 3-sigma circle."""
    c = torch.tensor(center, dtype=torch.float64)
    d = torch.tensor(dirs, dtype=torch.float64)
    prior_center = (-(c @ d.T)).tolist()  # where z = 0 lies on the plane
    r_points = float(torch.quantile(pts.abs().max(dim=1).values.double(), 0.995)) if pts.shape[0] else 0.0
    if k == 2:
        return prior_center, {"cu": 0.0, "cv": 0.0, "r": max(3.3, 1.05 * r_points)}
    return prior_center, {"cu": 0.0, "cv": 0.0, "r": max(1.05 * r_points, 3.3 + max(abs(prior_center[0]), abs(prior_center[1])))}


def _gmm_payload(gmm: Any, k: int) -> dict[str, Any] | None:
    if gmm is None:
        return None
    weights = gmm.weights.double()
    means = gmm.means.double()
    chol = torch.linalg.cholesky(gmm.covariances.double())
    if means.shape[1] != k:
        raise ValueError(f"the GMM has dimension {means.shape[1]}, the model K={k}")
    return {"weights": weights.tolist(), "means": means.tolist(), "chol": chol.tolist()}


def note_html(text: str) -> str:
    """The explorer's section when there is no panel: a visible note saying why."""
    return ('<h2 id="explorer">Latent explorer</h2>'
            f'<p class="warn" id="vx-unsupported">The latent explorer is not shown: {html.escape(text, quote=True)}</p>')


_PANEL_CSS = """
#vx-panel .vx-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
#vx-side { flex: 1 1 290px; min-width: 282px; }
#vx-panel canvas { border: 1px solid #c9ced8; }
#vx-plane { width: 420px; height: 420px; cursor: crosshair; touch-action: none; }
#vx-image { width: 280px; height: 280px; image-rendering: pixelated; background: #000; }
#vx-panel button { font: inherit; margin: 6px 8px 0 0; padding: 3px 10px; }
#vx-readout { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; color: #333; max-width: 420px; min-height: 2.6em; }
#vx-sliders { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 0 16px; margin-top: 10px; }
#vx-sliders label { display: flex; align-items: center; gap: 6px; font-size: 0.85em; font-family: ui-monospace, Menlo, Consolas, monospace; }
#vx-sliders input { flex: 1; }
.vx-legend span { display: inline-block; margin-right: 10px; font-size: 0.85em; }
.vx-legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 5px; }
"""
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _decoder(model: nn.Module, means: Tensor) -> tuple[nn.Module, int]:
    """The decoder the page runs and K: ``model.decoder`` and its latent size, or the model's own ``explorer_decoder``
    from its ``.K`` top-layer latents (several stochastic layers: down the mean path)."""
    own = getattr(model, "explorer_decoder", None)
    k = latent_dim(model, means) if own is None else int(model.K)
    if means.ndim != 2 or means.shape[1] != k:
        raise ValueError(f"means must have shape [M, K={k}], got {list(means.shape)}")
    decoder = getattr(model, "decoder", None) if own is None else own
    if not isinstance(decoder, nn.Module):
        raise UnsupportedDecoder(f"the model ({type(model).__name__}) has no .decoder module")
    return decoder, k



def _conditions_payload(conditions: Any) -> dict[str, Any] | None:
    """A conditional model's choices for the page: (what one is, names [n], condition vectors c [n, S]) -> JSON."""
    if conditions is None:
        return None
    title, names, vectors = conditions
    if vectors.ndim != 2 or vectors.shape[0] != len(names) or not names:
        raise ValueError(f"conditions must be (title, n names, vectors [n, S]), got {len(names)} names and {list(vectors.shape)}")
    return {"title": str(title), "names": [str(n) for n in names], "vectors": _b64(vectors)}


def _condition_picker(payload: dict[str, Any] | None) -> str:
    """The select element of a conditional model's choices (the class picker)."""
    if payload is None:
        return ""
    options = "".join(f'<option value="{i}">{_esc(name)}</option>' for i, name in enumerate(payload["names"]))
    return f'<p><label>{_esc(payload["title"])} <select id="vx-condition">{options}</select></label></p>'


def explorer_html(
    model: nn.Module, means: Tensor, labels: Tensor | None = None, *, gmm: Any = None, conditions: Any = None,
) -> str:
    """The explorer's HTML section for ``build_report(..., explorer_html=...)``.

    ``model``: any module with ``.decoder`` (latents [M, K] -> outputs [M, C, H, W]),
    ``.latent_dim`` or ``.K`` (or ``.explorer_decoder`` from ``.K`` top-layer latents), and ``.likelihood`` (a name, or an object with ``.name``;
    default "gaussian"). ``means``: posterior means of the test set [M, K] (the first
    ``MAX_POINTS`` are drawn); ``labels``: [M] integer labels (negative: none) or None;
    ``gmm``: a ``vaekit.gmm.GMM`` on the latent space, or None. ``conditions``: a conditional model's (what one is, names [n],
    c [n, S]; ``Condition.choices``): the page runs ``model.decoder.net`` on [z, c], c picked in a select (the class picker).

    A decoder the page cannot run gives a visible note naming the layer instead of the panel.
    """
    try:
        decoder, k = _decoder(model, means)
        lik = explorer_likelihood(model)
        payload = _conditions_payload(conditions)  # a conditional model (vaekit.conditioning): its decoder's network takes [z, c]
        decoder = decoder if payload is None else getattr(decoder, "net", decoder)
        layers, weights = decoder_spec(decoder, k + (0 if payload is None else int(conditions[2].shape[1])))
    except UnsupportedDecoder as e:
        return note_html(str(e))

    means = means.detach().float().cpu()[:MAX_POINTS]
    lab = None
    if labels is not None:
        lab_t = labels.detach().cpu().reshape(-1)[: means.shape[0]].long()
        if lab_t.numel() == means.shape[0] and bool((lab_t >= 0).any()):
            lab = lab_t.tolist()
    center, dirs, pts, axes = _plane(means, k)
    prior_center, view = _view(center, dirs, pts, k)
    out_shape = layers[-1]["out_shape"] if layers else [k]
    data = {
        "K": k,
        "likelihood": lik.name,
        "out_shape": out_shape,
        "layers": layers,
        "weights": _b64(weights),
        "points": _b64(pts),
        "labels": lab,
        "center": center,
        "dirs": dirs,
        "prior_center": prior_center,
        "view": view,
        "start": center if k > 2 else [0.0, 0.0],
        "gmm": _gmm_payload(gmm, k),
        "conditions": payload,
    }
    script = (
        "var VAEKIT_EXPLORER_DATA = " + _json_for_script(data) + ";\n"
        + "var VAEKIT_MEAN = " + lik.explorer_mean_js + ";\n"  # E[x|z] of one decoder output, from the likelihood
        + _JS.read_text(encoding="utf-8")
    )
    if "</script" in script.lower():  # cannot happen with the JSON above; never emit a broken page
        raise AssertionError("the explorer script contains '</script'")

    legend = ""
    if lab is not None:
        values = sorted(set(v for v in lab if v >= 0))[:20]
        legend = '<p class="vx-legend">' + "".join(
            f'<span><i style="background:{_PALETTE[v % 10]}"></i>{v}</span>' for v in values) + "</p>"
    c_, h_, w_ = (out_shape + [1, 1, 1])[:3] if len(out_shape) == 3 else (0, 0, 0)
    channel_note = ""
    if c_ not in (1, 3):
        channel_note = f'<p class="note">The decoder gives {c_} channels; the image shows channel 0 in grey.</p>'
    sliders_note = ""
    if k > MAX_SLIDERS:
        sliders_note = f'<p class="note">Sliders are shown for the first {MAX_SLIDERS} of the K={k} latent dimensions.</p>'
    buttons = ['<button type="button" id="vx-sample-prior">sample z ~ N(0, I)</button>']
    if gmm is not None:
        buttons.append(f'<button type="button" id="vx-sample-gmm">sample from the GMM ({len(gmm.weights)} components)</button>')
    if k > 2:
        buttons.append('<button type="button" id="vx-reset">reset to the mean of the posterior means</button>')
    lik_text = lik.mean_description + ("" if payload is None else f", given the {payload['title']} picked below (c)")
    points_text = f"the posterior means of {means.shape[0]} test images" + (" coloured by label" if lab is not None else "")
    return (
        '<h2 id="explorer">Latent explorer</h2>'
        f"<style>{_PANEL_CSS}</style>"
        '<div id="vx-panel">'
        '<p id="vx-status" class="note">The latent explorer needs JavaScript; the static figures below show the same model.</p>'
        '<div id="vx-ui" style="display:none">'
        f'<p class="sub">Move the pointer over the plane to decode that z in the page; drag from one point to another to play '
        f"the interpolation. The plane shows {_esc(points_text)} and the prior's 1-, 2- and 3-σ circles; its axes are {_esc(axes)}. "
        f"The image is E[x|z]: {_esc(lik_text)}, {h_}×{w_}"
        f"{' colour' if c_ == 3 else ''}.</p>"
        f"{legend}{channel_note}"
        '<div class="vx-row">'
        '<div><canvas id="vx-plane" width="420" height="420"></canvas></div>'
        f'<div id="vx-side"><canvas id="vx-image" width="{max(w_, 1) * max(1, 280 // max(w_, 1))}" height="{max(h_, 1) * max(1, 280 // max(w_, 1))}"></canvas>'
        f'{_condition_picker(payload)}<div>{"".join(buttons)}</div><p id="vx-readout"></p></div>'
        "</div>"
        f'{sliders_note}<div id="vx-sliders"></div>'
        "</div></div>"
        f"<script>{script}</script>"
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


_SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def script_hashes(fragment: str) -> list[str]:
    """The CSP sources (``'sha256-...'``) of the inline ``<script>`` elements in ``fragment``."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1).encode("utf-8")).digest()).decode("ascii") + "'"
        for m in _SCRIPT_RE.finditer(fragment)
    ]
