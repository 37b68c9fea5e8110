"""The latent explorer's Python side (fast): CSP pinning, embedded weights, notes, the report around it.

The decoded images themselves are checked against torch in a real browser:
tests/test_explorer_browser.py (slow).
"""

import base64
import hashlib
import json
import re

import pytest
import torch
from torch import nn

from vaekit.explorer import UnsupportedDecoder, decoder_spec, explorer_html, script_hashes
from vaekit.gmm import fit_gmm
from vaekit.report import build_report

from explorer_models import Likelihood, MySequential, StandIn, stand_in
from test_report import Page, make_run


def _data(fragment: str) -> dict:
    """The JSON data object at the start of the explorer's script."""
    script = re.search(r"<script>(.*?)</script>", fragment, re.DOTALL).group(1)
    m = re.match(r"var VAEKIT_EXPLORER_DATA = (\{.*?\});\n", script, re.DOTALL)
    return json.loads(m.group(1))


def _csp(text: str) -> dict[str, list[str]]:
    content = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1)
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in content.split(";")) if d}


@pytest.fixture(scope="module")
def pngs():
    from test_report import COLOURS, _png

    return {name: _png(colour) for name, colour in COLOURS.items()}


def _means(k=2, m=300):
    g = torch.Generator().manual_seed(0)
    return torch.randn(m, k, generator=g), torch.randint(0, 10, (m,), generator=g)


def test_csp_pins_exactly_the_explorers_script(tmp_path, pngs):
    means, labels = _means()
    panel = explorer_html(stand_in("assignment"), means, labels)
    text = build_report(make_run(tmp_path / "run", pngs), explorer_html=panel)
    page = Page(text)
    scripts = re.findall(r"<script>(.*?)</script>", text, re.DOTALL)
    assert len(scripts) == 1 and len(page.find("script")) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode()
    csp = _csp(text)
    assert csp["script-src"] == [f"'sha256-{digest}'"]  # the hash and nothing else: no 'unsafe-inline', no URL
    assert csp["default-src"] == ["'none'"] and csp["img-src"] == ["data:"]
    assert set(csp) == {"default-src", "img-src", "style-src", "script-src"}
    assert script_hashes(panel) == [f"'sha256-{digest}'"]
    for needle in ("http://", "https://", "fetch(", "XMLHttpRequest", "eval(", "new Function", "import("):
        assert needle not in text, needle
    assert "window.vaekitExplorer" in scripts[0]


def test_a_report_without_explorer_has_no_script_source(tmp_path, pngs):
    text = build_report(make_run(tmp_path / "run", pngs))
    assert "script-src" not in _csp(text) and "<script" not in text


@pytest.mark.parametrize("kind,k,shape", [
    ("assignment", 2, (1, 28, 28)), ("mlp", 3, (3, 32, 32)), ("conv", 5, (1, 25, 25)), ("conv", 2, (3, 32, 32)),
    ("arch:mlp", 3, (1, 28, 28)), ("arch:conv", 4, (3, 32, 32)), ("arch:conv", 2, (1, 25, 25)),
])
def test_embedded_weights_round_trip_byte_exactly(kind, k, shape):
    model = stand_in(kind, K=k, C=shape[0], H=shape[1], W=shape[2])
    means, labels = _means(k)
    data = _data(explorer_html(model, means, labels))
    blob = base64.b64decode(data["weights"], validate=True)
    params = dict(model.decoder.named_parameters())
    seen = 0
    for layer in data["layers"]:
        for key in ("weight", "bias"):
            if layer.get(key):
                off, count = layer[key]
                name = layer["path"][len("decoder."):] + "." + key
                want = params[name].detach().float().contiguous().numpy().astype("<f4").tobytes()
                assert blob[4 * off : 4 * (off + count)] == want, name
                seen += 1
    assert seen == len(params)  # every parameter, each once
    assert len(blob) == 4 * sum(p.numel() for p in params.values())
    assert data["out_shape"] == list(shape) and data["K"] == k
    # shapes traced by torch, one sample: the last layer gives [C, H, W]
    with torch.no_grad():
        assert list(model.decoder(torch.zeros(1, k)).shape[1:]) == data["layers"][-1]["out_shape"]


def test_decoder_spec_walks_sequential_subclasses_in_order():
    dec = MySequential(nn.Linear(2, 12), MySequential(nn.ReLU(), nn.Sequential(nn.Unflatten(1, (3, 2, 2)))), nn.Conv2d(3, 1, 1))
    layers, weights = decoder_spec(dec, 2)
    assert [layer["type"] for layer in layers] == ["Linear", "ReLU", "Unflatten", "Conv2d"]
    assert [layer["path"] for layer in layers] == ["decoder.0", "decoder.1.0", "decoder.1.1.0", "decoder.2"]
    assert weights.dtype == torch.float32 and weights.numel() == 2 * 12 + 12 + 3 + 1


@pytest.mark.parametrize("bad,name", [
    (nn.BatchNorm2d(4), "BatchNorm2d"),
    (nn.Upsample(scale_factor=2), "Upsample"),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), "dilation"),
    (nn.Conv2d(4, 4, 3, padding=1, groups=2), "groups"),
])
def test_an_unsupported_layer_gives_a_visible_note_naming_it(tmp_path, pngs, bad, name):
    dec = nn.Sequential(nn.Linear(2, 4 * 7 * 7), nn.Unflatten(1, (4, 7, 7)), bad, nn.ConvTranspose2d(4, 1, 3))
    model = StandIn(dec, 2, "gaussian")
    with pytest.raises(UnsupportedDecoder, match=name):
        decoder_spec(dec, 2)
    panel = explorer_html(model, *_means())
    text = build_report(make_run(tmp_path / "run", pngs), explorer_html=panel)
    page = Page(text)
    assert "The latent explorer is not shown" in page.text and name in page.text and "decoder.2" in page.text
    assert "<script" not in text and "script-src" not in _csp(text)
    assert len(page.find("img")) == 3  # the static figures are all still there


def test_a_decoder_whose_forward_is_not_its_layers_gets_a_note():
    class Twice(nn.Sequential):
        def forward(self, z):
            return super().forward(2 * z)

    model = StandIn(Twice(nn.Linear(2, 16), nn.Unflatten(1, (1, 4, 4))), 2, "gaussian")
    panel = explorer_html(model, *_means())
    assert "not its layers applied in order" in panel and "<script" not in panel


def test_likelihood_as_an_object_or_a_string_and_an_unknown_one():
    means, labels = _means()
    for lik, want in ((Likelihood("continuous-bernoulli"), "continuous-bernoulli"), ("bernoulli", "bernoulli"),
                      (Likelihood("gaussian"), "gaussian"), ("continuous_bernoulli", "continuous-bernoulli")):
        assert _data(explorer_html(stand_in("mlp", likelihood=lik), means, labels))["likelihood"] == want
    panel = explorer_html(stand_in("mlp", likelihood=Likelihood("laplace")), means, labels)
    assert "The latent explorer is not shown" in panel and "laplace" in panel


def test_static_figures_stay_with_the_explorer_and_panel_contents(tmp_path, pngs):
    means, labels = _means(4, 500)
    gmm = fit_gmm(means, components=3)
    panel = explorer_html(stand_in("conv", K=4, C=3, H=32, W=32), means, labels, gmm=gmm)
    page = Page(build_report(make_run(tmp_path / "run", pngs), explorer_html=panel))
    assert len(page.find("img")) == 3  # every figure still embedded as a data: PNG
    assert "Latent explorer" in page.headings["h2"]
    ids = {a.get("id") for _, a in page.tags}
    for needle in ("vx-plane", "vx-image", "vx-sample-prior", "vx-sample-gmm", "vx-reset", "vx-sliders", "vx-status"):
        assert needle in ids, needle
    assert "needs JavaScript" in page.text  # what a reader without scripts sees
    data = _data(panel)
    assert len(data["gmm"]["weights"]) == 3 and len(data["dirs"]) == 2 and len(data["center"]) == 4
    assert data["labels"][:5] == labels[:5].tolist()
    # labels < 0 mean none: one colour, no legend
    data = _data(explorer_html(stand_in("mlp"), means[:, :2], torch.full((500,), -1)))
    assert data["labels"] is None and data["gmm"] is None


def test_report_size_of_the_assignment_model_is_small():
    from vaekit import SimpleVAE

    means, labels = _means(2, 10_000)
    panel = explorer_html(SimpleVAE(K=2, num_filters=32), means, labels)
    assert len(panel.encode()) < 5_000_000


def test_decoder_spec_infers_k_from_a_first_linear():
    layers, _ = decoder_spec(stand_in("mlp", K=3).decoder)
    assert layers[0]["in_shape"] == [3]
    with pytest.raises(UnsupportedDecoder, match="latent_dim"):
        decoder_spec(nn.Sequential(nn.Unflatten(1, (2, 1, 1)), nn.ConvTranspose2d(2, 1, 3)))
