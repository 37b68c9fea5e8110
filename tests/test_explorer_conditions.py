"""The latent explorer of a conditional model: the page's script, run in Node.js with a minimal DOM, decodes [z, c]
for the class picked in its select element exactly as torch's decoder network does (mlp and conv decoders), picking
by the element and by ``setCondition``; the panel lists the classes by name; an unconditional panel has no picker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.explorer import explorer_html
from vaekit.model import build_model

DOM = """
const els = {};
function ctx() {
  const t = {createImageData: (w, h) => ({data: new Uint8ClampedArray(w * h * 4)})};
  return new Proxy(t, {get: (o, k) => (k in o ? o[k] : () => {}), set: (o, k, v) => { o[k] = v; return true; }});
}
function el(id) {
  return {id, style: {}, width: 420, height: 420, value: "0", dataset: {}, textContent: "", className: "", listeners: {},
    addEventListener(type, f) { (this.listeners[type] = this.listeners[type] || []).push(f); },
    getContext() { return ctx(); }, appendChild() {}, getBoundingClientRect() { return {left: 0, top: 0, width: 420, height: 420}; }};
}
globalThis.document = {getElementById: (id) => (els[id] = els[id] || el(id)), createElement: (tag) => el(tag)};
globalThis.window = {addEventListener() {}};
globalThis.location = {hash: ""};
globalThis.atob = (s) => Buffer.from(s, "base64").toString("binary");
globalThis.requestAnimationFrame = () => {};
"""

RUN = """
window.vaekitExplorer.ready.then((api) => {
  const zs = %(zs)s, out = {names: api.conditions, byApi: [], bySelect: []};
  for (let i = 0; i < api.conditions.length; i++) {
    api.setCondition(i);
    out.byApi.push(zs.map((z) => Array.from(api.decode(z))));
    const pick = els["vx-condition"];
    pick.value = String((i + 1) %% api.conditions.length);
    pick.listeners.change.forEach((f) => f());
    out.bySelect.push(Array.from(api.decode(zs[0])));
  }
  try { api.setCondition(api.conditions.length); } catch (e) { out.error = e.message; }
  out.readout = els["vx-readout"].textContent;
  console.log(JSON.stringify(out));
}, (e) => { console.log(JSON.stringify({failed: e.message})); });
"""


def conditional(arch, options, shape):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, latent_dim=3, likelihood="bernoulli", condition="label",
                      options={**options, "classes": 3, "class_names": json.dumps(["cat", "dog", "<owl>"])})
    return build_model(cfg, shape).eval()


def panel(model):
    means = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    names, vectors = model.condition.choices(None, None)
    return explorer_html(model, means, torch.randint(0, 3, (50,)), conditions=("class", names, vectors))


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the explorer's JavaScript")
@pytest.mark.parametrize("arch,options,shape", [("mlp", {"hidden": "8"}, (1, 6, 6)), ("conv", {"num_filters": 4, "depth": 2}, (3, 8, 8))])
def test_the_page_decodes_z_with_the_picked_class_as_torch_does(arch, options, shape):
    model = conditional(arch, options, shape)
    html = panel(model)
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
    zs = [[0.0, 0.0, 0.0], [1.5, -0.7, 2.0]]
    out = subprocess.run(["node", "-e", DOM + script + RUN % {"zs": json.dumps(zs)}], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "failed" not in got, got
    assert got["names"] == ["cat", "dog", "<owl>"]
    net = model.decoder.net  # p(x|z, c)'s own network, fed [z, one-hot(y)]
    for i in range(3):
        c = torch.eye(3)[i].expand(len(zs), 3)
        with torch.no_grad():
            want = model.likelihood.mean(net(torch.cat([torch.tensor(zs), c], dim=1))).flatten(1)  # [2, C*H*W]
        assert torch.allclose(torch.tensor(got["byApi"][i]), want, atol=2e-5), i
        picked = (i + 1) % 3  # the select element's change picked the next class
        with torch.no_grad():
            by_select = model.likelihood.mean(net(torch.cat([torch.tensor(zs[:1]), torch.eye(3)[picked][None]], dim=1))).flatten()
        assert torch.allclose(torch.tensor(got["bySelect"][i]), by_select, atol=2e-5), i
    assert not torch.allclose(torch.tensor(got["byApi"][0]), torch.tensor(got["byApi"][1]))
    assert got["error"] == "no condition 3" and got["readout"].endswith("class cat")


def test_the_panel_lists_the_classes_and_an_unconditional_one_has_no_picker():
    html = panel(conditional("mlp", {"hidden": "8"}, (1, 6, 6)))
    assert '<select id="vx-condition"><option value="0">cat</option><option value="1">dog</option>' in html
    assert '<option value="2">&lt;owl&gt;</option>' in html and "given the class picked below" in html
    data = json.loads(re.search(r"var VAEKIT_EXPLORER_DATA = (\{.*?\});\n", html, re.DOTALL).group(1))
    assert data["conditions"]["names"] == ["cat", "dog", "<owl>"] and data["layers"][0]["in_features"] == 3 + 3
    torch.manual_seed(0)
    plain = build_model(ModelConfig(arch="mlp", latent_dim=3, options={"hidden": "8"}), (1, 6, 6))
    html = explorer_html(plain, torch.randn(20, 3))
    assert '<select id="vx-condition"' not in html and '"conditions":null' in html
    note = explorer_html(conditional("mlp", {"hidden": "8"}, (1, 6, 6)), torch.randn(20, 3))  # no choices given: the wrapper is no layer
    assert "vx-unsupported" in note and "ConditionedDecoder" in note
