"""The latent explorer in a real browser (slow): headless Chromium through chromedriver.

The page's decoded images are compared with torch itself (the decoder, then the
likelihood's mean), for the assignment decoder, an MLP and strided conv decoders, grey and
colour; the pointer, the drag, the #z= fragment, the sliders and the buttons are driven as
a user would; the time to decode one image is measured.

Run: ``python -m pytest -m slow tests/test_explorer_browser.py`` (Debian: apt-get install
chromium chromium-driver). Skipped where Chromium or chromedriver is missing.
"""

from __future__ import annotations

import io
import json
import statistics

import numpy as np
import pytest
import torch

from vaekit.explorer import explorer_html
from vaekit.gmm import fit_gmm
from vaekit.report import write_report

from explorer_models import Likelihood, stand_in, torch_mean_image
from test_report import COLOURS, _png, make_run
from webdriver import Browser, chromedriver, chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium() is None or chromedriver() is None,
                       reason="headless Chromium and chromedriver are not installed (Debian: chromium chromium-driver)"),
]

WAIT_READY = """
var done = arguments[arguments.length - 1];
if (!window.vaekitExplorer) { done("no window.vaekitExplorer: the script did not run"); return; }
window.vaekitExplorer.ready.then(function () { done("ready"); }, function (e) { done("failed: " + e.message); });
"""
DECODE_ALL = "return arguments[0].map(function (z) { return Array.from(window.vaekitExplorer.decode(z)); });"


def latent_points(k: int, n: int = 24) -> torch.Tensor:
    """n points: draws from N(0, I), the prior's tails along each axis and diagonal (|z| up to 4), and the origin."""
    g = torch.Generator().manual_seed(k)
    tails = []
    for axis in range(min(k, 3)):
        for r in (4.0, -4.0, 3.0):
            e = torch.zeros(k)
            e[axis] = r
            tails.append(e)
    tails += [torch.full((k,), 4.0 / k**0.5), torch.full((k,), -2.8), torch.zeros(k)]
    tails = torch.stack(tails)
    return torch.cat([tails, torch.randn(max(0, n - len(tails)), k, generator=g)])[: max(n, len(tails))]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


@pytest.fixture(scope="module")
def figures():
    return {name: _png(colour) for name, colour in COLOURS.items()}


def write(tmp_path, figures, model, k, *, gmm=None, name="run"):
    g = torch.Generator().manual_seed(1)
    means = torch.randn(2000, k, generator=g) * 0.8 + 0.3
    labels = torch.randint(0, 10, (2000,), generator=g)
    run = make_run(tmp_path / name, figures)
    return write_report(run, explorer_html=explorer_html(model, means, labels, gmm=gmm)), means


def open_report(browser, path, fragment=""):
    browser.open(path.resolve().as_uri() + fragment)
    state = browser.async_script(WAIT_READY)
    assert state == "ready", state


CASES = [  # (kind, K, (C, H, W), likelihood)
    ("assignment", 2, (1, 28, 28), "gaussian"),
    ("assignment-perturbed", 2, (1, 28, 28), "bernoulli"),
    ("mlp", 2, (1, 28, 28), "gaussian"),
    ("mlp", 6, (3, 32, 32), Likelihood("continuous-bernoulli")),
    ("conv", 3, (3, 32, 32), "bernoulli"),
    ("conv", 2, (1, 25, 25), Likelihood("continuous-bernoulli")),
    ("conv", 8, (1, 25, 25), "gaussian"),
    # vaekit's registered architectures, grey and colour
    ("arch:mlp", 2, (1, 28, 28), "bernoulli"),
    ("arch:mlp", 5, (3, 32, 32), "gaussian"),
    ("arch:conv", 3, (3, 32, 32), "continuous-bernoulli"),
    ("arch:conv", 2, (1, 25, 25), "gaussian"),
]


@pytest.mark.parametrize("kind,k,shape,lik", CASES, ids=[f"{c[0]}-K{c[1]}-{'x'.join(map(str, c[2]))}" for c in CASES])
def test_page_decodes_like_torch(browser, tmp_path, figures, kind, k, shape, lik):
    model = stand_in(kind, K=k, C=shape[0], H=shape[1], W=shape[2], likelihood=lik)
    report, _ = write(tmp_path, figures, model, k)
    open_report(browser, report)
    z = latent_points(k)
    assert len(z) >= 20 and float(z.abs().max()) >= 4.0
    page = torch.tensor(browser.script(DECODE_ALL, z.tolist()), dtype=torch.float64)  # [n, C*H*W]
    want = torch_mean_image(model, z).reshape(len(z), -1)
    assert page.shape == want.shape
    err = (page - want).abs().max().item()
    assert err <= 1e-4, f"max |page - torch| = {err:.3g}"
    assert browser.script("return window.vaekitExplorer.shape") == list(shape)


def _pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png))[..., :3]


def test_pointer_moves_change_the_image_and_drag_plays_the_interpolation(browser, tmp_path, figures):
    model = stand_in("assignment-perturbed", K=2)
    report, _ = write(tmp_path, figures, model, 2)
    open_report(browser, report)
    browser.pointer("#vx-plane", [("move", -120, -100)])
    z1 = browser.script("return window.vaekitExplorer.getZ()")
    shot1 = _pixels(browser.screenshot("#vx-image"))
    browser.pointer("#vx-plane", [("move", 140, 110)])
    z2 = browser.script("return window.vaekitExplorer.getZ()")
    shot2 = _pixels(browser.screenshot("#vx-image"))
    # the plane spans +-view.r around 0 over 420 px: left/up is z0 < 0, z1 > 0
    assert z1[0] < -0.5 and z1[1] > 0.5 and z2[0] > 0.5 and z2[1] < -0.5, (z1, z2)
    diff = np.abs(shot1 - shot2).mean()
    assert diff > 0.01, f"the shown image did not change (mean pixel difference {diff:.4f})"
    # the image shown is the page's decode of that z (grey levels, clipped): compare a downsampled copy
    mean = torch_mean_image(model, torch.tensor([z2])).reshape(28, 28).clamp(0, 1).numpy()
    shown = shot2.mean(axis=2)
    h, w = shown.shape
    cells = np.array([[shown[int((i + 0.5) * h / 28), int((j + 0.5) * w / 28)] for j in range(28)] for i in range(28)])
    assert np.abs(cells - mean).max() < 0.03

    # drag from one point to another: the interpolation plays and ends at the end point
    browser.pointer("#vx-plane", [("move", -100, 0), ("down", 0, 0), ("move", -20, 40), ("move", 100, 60), ("up", 0, 0)])
    mid = browser.script("return document.getElementById('vx-readout').textContent")
    browser.async_script("var done = arguments[0]; setTimeout(function () { done(1); }, 1600);")
    end = browser.script("return [window.vaekitExplorer.getZ(), document.getElementById('vx-readout').textContent]")
    assert "interpolation" in mid or "drag" in mid, mid
    assert "interpolation t = 1.00" in end[1], end[1]
    assert end[0][0] > 0.5 and end[0][1] < 0, end[0]


def test_z_fragment_sets_the_point_when_the_page_opens(browser, tmp_path, figures):
    model = stand_in("mlp", K=2)
    report, _ = write(tmp_path, figures, model, 2)
    open_report(browser, report, "#z=0.5,-1.2")
    z = browser.script("return window.vaekitExplorer.getZ()")
    assert z == pytest.approx([0.5, -1.2])
    assert "#z" in browser.script("return document.getElementById('vx-readout').textContent")
    # a later change of the fragment moves the point too
    browser.script("location.hash = '#z=-3,2.5';")
    browser.async_script("var done = arguments[0]; setTimeout(function () { done(1); }, 200);")
    assert browser.script("return window.vaekitExplorer.getZ()") == pytest.approx([-3, 2.5])


def test_sliders_reset_and_samplers_for_k_above_2(browser, tmp_path, figures):
    k = 5
    model = stand_in("conv", K=k, C=3, H=32, W=32)
    g = torch.Generator().manual_seed(0)
    gmm = fit_gmm(torch.randn(500, k, generator=g) * 0.5 + 2.0, components=2)
    report, means = write(tmp_path, figures, model, k, gmm=gmm)
    open_report(browser, report, "#z=" + ",".join(["0.1"] * k))
    assert browser.script("return document.querySelectorAll('#vx-sliders input').length") == k
    # a slider changes its coordinate only
    z = browser.script("""
        var s = document.querySelectorAll('#vx-sliders input')[3];
        s.value = 2.5; s.dispatchEvent(new Event('input'));
        return window.vaekitExplorer.getZ();""")
    assert z == pytest.approx([0.1, 0.1, 0.1, 2.5, 0.1])
    # reset: the mean of the posterior means
    browser.script("document.getElementById('vx-reset').click();")
    z = browser.script("return window.vaekitExplorer.getZ()")
    assert z == pytest.approx(means.mean(0).tolist(), abs=1e-5)
    # the samplers draw new points: the GMM's around its means (here near 2)
    draws = browser.script("""
        var out = [];
        for (var i = 0; i < 200; i++) { document.getElementById('vx-sample-gmm').click(); out.push(window.vaekitExplorer.getZ()); }
        return out;""")
    assert np.abs(np.mean(draws, axis=0) - 2.0).max() < 0.3
    draws = browser.script("""
        var out = [];
        for (var i = 0; i < 200; i++) { document.getElementById('vx-sample-prior').click(); out.push(window.vaekitExplorer.getZ()); }
        return out;""")
    assert np.abs(np.mean(draws, axis=0)).max() < 0.35 and 0.7 < np.std(draws) < 1.3


def test_the_explorer_does_not_run_under_a_wrong_hash(browser, tmp_path, figures):
    """The CSP is live: a page whose script does not match its pinned hash runs nothing."""
    report, _ = write(tmp_path, figures, stand_in("mlp", K=2), 2)
    text = report.read_text()
    report.write_text(text.replace("var VAEKIT_EXPLORER_DATA = ", "var VAEKIT_EXPLORER_DATA  = ", 1))
    browser.open(report.resolve().as_uri())
    assert browser.script("return typeof window.vaekitExplorer") == "undefined"
    assert "needs JavaScript" in browser.script("return document.getElementById('vx-status').textContent")


def test_decode_time_and_report_size_of_the_assignment_model(browser, tmp_path, figures):
    from vaekit import SimpleVAE

    torch.manual_seed(0)
    model = SimpleVAE(K=2, num_filters=32)
    report, _ = write(tmp_path, figures, model, 2)
    open_report(browser, report)
    times = browser.script("""
        var api = window.vaekitExplorer, t = [];
        for (var i = 0; i < 5; i++) api.decode([0.1 * i, -0.2]);
        for (var j = 0; j < 30; j++) { var t0 = performance.now(); api.decode([Math.sin(j), Math.cos(j)]); t.push(performance.now() - t0); }
        return t;""")
    median = statistics.median(times)
    size = report.stat().st_size
    print(json.dumps({"decode_ms_median": median, "decode_ms_min": min(times), "report_bytes": size}))
    assert size < 5_000_000
    assert median < 250, f"decoding one image took {median:.1f} ms (goal: 50 ms)"
