"""The VQ-VAE's explorer panel: the embedded codebook and code grids round-trip, the page's script is pinned by the
CSP, and, with Node.js, the page's own script (run against a minimal stand-in for the DOM) decodes code grids
like torch, and its cell and slider change one code."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.explorer import script_hashes
from vaekit.model import build_model
from vaekit.vq_explorer import MAX_SHOWN, vq_explorer_html


def model_for(shape=(3, 16, 12), likelihood="gaussian"):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="vqvae", latent_dim=3, codebook_size=10, num_filters=6, likelihood=likelihood), shape)
    with torch.no_grad():
        model.codebook.vectors.normal_()
    return model.eval()


def data_of(fragment: str) -> dict:
    script = re.search(r"<script>(.*?)</script>", fragment, re.DOTALL).group(1)
    return json.loads(re.match(r"var VAEKIT_EXPLORER_DATA = (\{.*?\});\n", script, re.DOTALL).group(1))


def test_the_codebook_and_the_code_grids_are_embedded():
    model = model_for()
    test = torch.randint(0, 10, (20, *model.grid))
    prior = torch.randint(0, 10, (3, *model.grid))
    panel = vq_explorer_html(model, test, prior, "pixelcnn")
    codes = data_of(panel)["codes"]
    book = np.frombuffer(base64.b64decode(codes["codebook"]), dtype="<f4").reshape(10, 3)
    assert np.array_equal(book, model.codebook.vectors.detach().numpy())
    assert codes["grid"] == list(model.grid) and codes["code_dim"] == 3 and codes["codebook_size"] == 10
    assert codes["prior_samples"] == prior.reshape(3, -1).tolist()
    assert codes["test_codes"] == test[:MAX_SHOWN].reshape(MAX_SHOWN, -1).tolist()
    assert "next sample of the pixelcnn prior" in panel and len(script_hashes(panel)) == 1
    without = vq_explorer_html(model, test, None)
    assert 'id="vx-next-prior"' not in without and "no prior samples yet" in without


NODE_HARNESS = r"""
const fs = require("fs");
const src = fs.readFileSync(process.argv[2], "utf8");
const els = {};
function node(tag) {
  return { tag, style: {}, dataset: {}, children: [], textContent: "", value: 0, width: 280, height: 280, listeners: {},
    appendChild(c) { this.children.push(c); }, addEventListener(t, f) { (this.listeners[t] = this.listeners[t] || []).push(f); },
    getContext() { return { createImageData: (w, h) => ({ data: new Uint8ClampedArray(w * h * 4) }), putImageData() {}, drawImage() {} }; } };
}
global.document = { getElementById: (id) => els[id] || (els[id] = node(id)), createElement: node };
global.window = {}; global.location = { hash: "" };
const job = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
eval(src);
window.vaekitExplorer.ready.then((api) => {
  const out = { decoded: job.codes.map((q) => Array.from(api.decodeCodes(q))), first: api.getCodes() };
  const cells = els["vx-codes"].children;
  cells[job.cell].listeners.click[0]({ currentTarget: cells[job.cell] });
  els["vx-code"].value = job.value;
  els["vx-code"].listeners.input[0]();
  out.changed = api.getCodes();
  try { api.decodeCodes([1]); } catch (e) { out.error = e.message; }
  console.log(JSON.stringify(out));
}, (e) => { console.log(JSON.stringify({ failed: String(e) })); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("shape,likelihood", [((3, 16, 12), "gaussian"), ((1, 12, 12), "bernoulli")])
def test_the_page_decodes_code_grids_like_torch(tmp_path, shape, likelihood):
    model = model_for(shape, likelihood)
    prior = torch.randint(0, 10, (2, *model.grid), generator=torch.Generator().manual_seed(1))
    panel = vq_explorer_html(model, torch.randint(0, 10, (2, *model.grid)), prior, "pixelcnn")
    (tmp_path / "page.js").write_text(re.search(r"<script>(.*?)</script>", panel, re.DOTALL).group(1))
    codes = torch.randint(0, 10, (3, model.positions), generator=torch.Generator().manual_seed(2))
    (tmp_path / "job.json").write_text(json.dumps({"codes": codes.tolist(), "cell": 1, "value": 7}))
    (tmp_path / "harness.js").write_text(NODE_HARNESS)
    p = subprocess.run(["node", "harness.js", "page.js", "job.json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "failed" not in out, out
    with torch.no_grad():
        want = model.mean_image(model.code_vectors(codes)[:, None])[:, 0].reshape(3, -1)
    torch.testing.assert_close(torch.tensor(out["decoded"]), want, rtol=0, atol=1e-4)
    assert out["first"] == prior[0].reshape(-1).tolist()  # the page opens on the first prior sample
    expected = list(out["first"])
    expected[1] = 7
    assert out["changed"] == expected
    assert f"codes must have {model.positions} numbers" in out["error"]
