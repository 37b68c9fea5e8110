"""The report's explorer for a VQ-VAE: its grid of codes, which the user can change, decoded in the page.

The page cannot run the prior over the codes (a PixelCNN or a transformer), so it shows what it can: grids of
codes drawn from the fitted prior in Python (``vaekit sample --sampler vq-prior``), the codes of test images,
and codes uniform at random, each decoded in the page by the same in-page decoder as the latent explorer
(``assets/explorer.js``, its decoder run on the code vectors; ``assets/vq_explorer.js``, the panel). Clicking a
cell selects it and the slider sets its code. The codebook [M, D] is embedded as base64 float32 beside the
decoder's weights.

Automation: ``window.vaekitExplorer.ready``, ``decodeCodes(codes)`` (h w codes, raster order, to the mean image
as a Float32Array [C*H*W]), ``setCodes``, ``getCodes``, ``codeVectors``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .explorer import _JS, UnsupportedDecoder, _b64, _json_for_script, decoder_spec, explorer_likelihood, note_html

__all__ = ["vq_explorer_html", "vq_panel", "MAX_SHOWN"]

_VQ_JS = Path(__file__).parent / "assets" / "vq_explorer.js"
MAX_SHOWN = 16  # prior samples and test images embedded

_CSS = """
#vx-panel .vx-row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
#vx-codes { display: grid; gap: 2px; width: 360px; }
#vx-codes .vx-cell { font: 11px ui-monospace, Menlo, Consolas, monospace; padding: 4px 0; border: 1px solid #c9ced8; cursor: pointer; }
#vx-image { width: 280px; height: 280px; image-rendering: pixelated; background: #000; border: 1px solid #c9ced8; }
#vx-panel button.vx-act { font: inherit; margin: 6px 8px 0 0; padding: 3px 10px; }
#vx-readout, #vx-code-value { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; color: #333; }
#vx-code { width: 360px; }
"""


def _grids(codes: Tensor | None) -> list[list[int]]:
    return [] if codes is None else codes[:MAX_SHOWN].reshape(min(MAX_SHOWN, len(codes)), -1).tolist()


def vq_explorer_html(model: Any, test_codes: Tensor, prior_codes: Tensor | None = None, prior_name: str | None = None) -> str:
    """The VQ-VAE explorer's section for ``build_report(..., explorer_html=...)``: ``test_codes`` [m, h, w] and
    ``prior_codes`` [n, h, w] (or None: no fitted prior) are embedded, the first ``MAX_SHOWN`` of each."""
    try:
        lik = explorer_likelihood(model)
        layers, weights = decoder_spec(model.decoder, model.latent_dim)
    except UnsupportedDecoder as e:
        return note_html(str(e))
    h, w = model.grid
    data = {
        "K": model.latent_dim, "likelihood": lik.name, "out_shape": layers[-1]["out_shape"], "layers": layers,
        "weights": _b64(weights),
        "codes": {
            "codebook": _b64(model.codebook.vectors.detach().float()), "codebook_size": model.codebook_size,
            "code_dim": model.code_dim, "grid": [h, w], "prior_samples": _grids(prior_codes), "test_codes": _grids(test_codes),
        },
    }
    if not data["codes"]["prior_samples"] and not data["codes"]["test_codes"]:
        return note_html("there are neither prior samples nor test images to show")
    script = (
        "var VAEKIT_EXPLORER_DATA = " + _json_for_script(data) + ";\n" + "var VAEKIT_MEAN = " + lik.explorer_mean_js + ";\n"
        + _VQ_JS.read_text(encoding="utf-8") + _JS.read_text(encoding="utf-8")
    )
    if "</script" in script.lower():
        raise AssertionError("the explorer script contains '</script'")
    c, oh, ow = data["out_shape"]
    buttons = ['<button type="button" class="vx-act" id="vx-next-test">next test image\'s codes</button>',
               '<button type="button" class="vx-act" id="vx-uniform">codes uniform at random</button>']
    if data["codes"]["prior_samples"]:
        buttons.insert(0, f'<button type="button" class="vx-act" id="vx-next-prior">next sample of the {html.escape(prior_name or "code")} prior</button>')
    prior_text = (f"{len(data['codes']['prior_samples'])} grids of codes drawn from the {html.escape(prior_name or 'code')} prior "
                  "(in Python: the page cannot run it)" if data["codes"]["prior_samples"] else
                  "no prior samples yet (vaekit sample RUN_DIR --sampler vq-prior fits a prior over the codes)")
    return (
        '<h2 id="explorer">Latent explorer</h2>'
        f"<style>{_CSS}</style>"
        '<div id="vx-panel">'
        '<p id="vx-status" class="note">The explorer needs JavaScript; the static figures below show the same model.</p>'
        '<div id="vx-ui" style="display:none">'
        f'<p class="sub">The VQ-VAE\'s {h}×{w} grid of codes (each one of {model.codebook_size}), decoded in the page: '
        f"{prior_text}, the codes of test images, or codes uniform at random. Click a cell and move the slider to change "
        f"its code. The image is E[x|z]: {html.escape(lik.mean_description)}, {oh}×{ow}{' colour' if c == 3 else ''}.</p>"
        '<div class="vx-row">'
        f'<div><div id="vx-codes"></div><input type="range" id="vx-code" min="0" max="{model.codebook_size - 1}" step="1" value="0">'
        '<p id="vx-code-value"></p></div>'
        f'<div><canvas id="vx-image" width="{ow * max(1, 280 // ow)}" height="{oh * max(1, 280 // ow)}"></canvas>'
        f'<div>{"".join(buttons)}</div><p id="vx-readout"></p></div>'
        "</div></div></div>"
        f"<script>{script}</script>"
    )


def vq_panel(run: Any, model: Any, data: Any) -> str:
    """The VQ-VAE explorer of a run folder: the codes of its first test images, and samples of its fitted code
    prior when ``vaekit sample --sampler vq-prior`` has fitted one (seed 0)."""
    from .samplers.vq_prior import encoder_codes, saved_prior

    test_codes = encoder_codes(model, run.images(data, "test")[:MAX_SHOWN])  # [m, h, w]
    prior = saved_prior(run, model)
    prior_codes = prior.sample(MAX_SHOWN, torch.Generator().manual_seed(0)) if prior is not None else None
    return vq_explorer_html(model, test_codes, prior_codes, prior.kind if prior is not None else None)
