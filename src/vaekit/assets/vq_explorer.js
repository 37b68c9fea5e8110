// vaekit VQ-VAE explorer: the code grid of a VQ-VAE, decoded in the page by explorer.js's decoder.
// explorer.js calls VAEKIT_CODES_PANEL(ctx) instead of its latent plane when VAEKIT_EXPLORER_DATA.codes is set:
// ctx.decode(z) runs the decoder on z [K = D*h*w] (channel-major [D, h, w]), ctx.b64floats reads the codebook,
// ctx.api is window.vaekitExplorer, ctx.ready resolves its promise. The prior over the codes (a PixelCNN or a
// transformer) does not run in the page: its samples were drawn in Python and are embedded as code grids.
function VAEKIT_CODES_PANEL(ctx) {
  "use strict";
  var D = ctx.data, C = D.codes, api = ctx.api;
  var M = C.codebook_size, dim = C.code_dim, h = C.grid[0], w = C.grid[1], n = h * w;
  var book = ctx.b64floats(C.codebook);  // [M * dim], row-major [M, dim]
  if (book.length !== M * dim) throw new Error("the codebook has " + book.length + " numbers, expected " + M * dim);
  var shape = D.out_shape, codes = null, selected = 0, which = { prior: -1, test: -1 };
  var grid = document.getElementById("vx-codes"), img = document.getElementById("vx-image"), ictx = img.getContext("2d");
  var small = document.createElement("canvas"), sctx, readout = document.getElementById("vx-readout");
  var slider = document.getElementById("vx-code"), out = document.getElementById("vx-code-value");
  small.width = shape[2]; small.height = shape[1]; sctx = small.getContext("2d");

  function check(q) {
    if (!q || q.length !== n) throw new Error("codes must have " + n + " numbers (" + h + "x" + w + "), got " + (q ? q.length : q));
    for (var i = 0; i < n; i++) if (!(q[i] >= 0 && q[i] < M && q[i] === Math.floor(q[i]))) throw new Error("code " + q[i] + " at " + i + " is not in 0.." + (M - 1));
  }
  function vectors(q) {  // the code vectors z [dim * h * w], channel-major like the decoder's Unflatten
    var z = new Float32Array(dim * n);
    for (var p = 0; p < n; p++) for (var d = 0; d < dim; d++) z[d * n + p] = book[q[p] * dim + d];
    return z;
  }
  function decodeCodes(q) { check(q); return ctx.decode(vectors(q)); }

  function drawImage(mean) {
    var ch = shape[0], H = shape[1], W = shape[2], px = sctx.createImageData(W, H), d = px.data, m = H * W;
    for (var i = 0; i < m; i++) {
      var r = mean[i], g = ch === 3 ? mean[m + i] : r, b = ch === 3 ? mean[2 * m + i] : r;
      d[4 * i] = Math.round(255 * Math.min(1, Math.max(0, r)));
      d[4 * i + 1] = Math.round(255 * Math.min(1, Math.max(0, g)));
      d[4 * i + 2] = Math.round(255 * Math.min(1, Math.max(0, b)));
      d[4 * i + 3] = 255;
    }
    sctx.putImageData(px, 0, 0);
    ictx.imageSmoothingEnabled = false;
    ictx.drawImage(small, 0, 0, img.width, img.height);
  }
  function drawGrid() {
    var cells = grid.children;
    for (var p = 0; p < n; p++) {
      cells[p].textContent = String(codes[p]);
      cells[p].style.background = "hsl(" + Math.round(360 * codes[p] / M) + ", 55%, " + (p === selected ? "62%" : "86%") + ")";
      cells[p].style.fontWeight = p === selected ? "700" : "400";
    }
    slider.value = codes[selected];
    out.textContent = "code at row " + Math.floor(selected / w) + ", column " + (selected % w) + ": " + codes[selected];
  }
  function show(q, why) {
    var t0 = performance.now(), mean = decodeCodes(q);
    api.lastDecodeMs = performance.now() - t0;
    codes = Array.prototype.slice.call(q);
    drawImage(mean);
    drawGrid();
    readout.textContent = why;
  }
  function cycle(kind, list, label) {
    if (!list || !list.length) return;
    which[kind] = (which[kind] + 1) % list.length;
    show(list[which[kind]], label + " " + (which[kind] + 1) + " of " + list.length);
  }

  for (var p = 0; p < n; p++) {
    var cell = document.createElement("button");
    cell.type = "button"; cell.className = "vx-cell"; cell.dataset.pos = p;
    cell.addEventListener("click", function (ev) { selected = +ev.currentTarget.dataset.pos; drawGrid(); });
    grid.appendChild(cell);
  }
  grid.style.gridTemplateColumns = "repeat(" + w + ", 1fr)";
  slider.max = M - 1;
  slider.addEventListener("input", function () {
    var q = codes.slice(); q[selected] = +slider.value; show(q, "code " + slider.value + " at row " + Math.floor(selected / w) + ", column " + (selected % w));
  });
  var bp = document.getElementById("vx-next-prior"), bt = document.getElementById("vx-next-test"), bu = document.getElementById("vx-uniform");
  if (bp) bp.addEventListener("click", function () { cycle("prior", C.prior_samples, "prior sample"); });
  if (bt) bt.addEventListener("click", function () { cycle("test", C.test_codes, "test image's codes"); });
  if (bu) bu.addEventListener("click", function () {
    var q = []; for (var i = 0; i < n; i++) q.push(Math.floor(Math.random() * M)); show(q, "codes uniform at random");
  });

  api.decodeCodes = decodeCodes;
  api.codeVectors = vectors;
  api.setCodes = function (q) { show(q, "setCodes"); };
  api.getCodes = function () { return codes.slice(); };
  api.K = dim * n; api.shape = shape.slice(); api.grid = [h, w]; api.codebookSize = M; api.likelihood = D.likelihood;
  var first = C.prior_samples && C.prior_samples.length ? C.prior_samples : C.test_codes;
  which[first === C.prior_samples ? "prior" : "test"] = 0;
  show(first[0], first === C.prior_samples ? "prior sample 1 of " + first.length : "test image's codes 1 of " + first.length);
  document.getElementById("vx-status").style.display = "none";
  document.getElementById("vx-ui").style.display = "";
  ctx.ready(api);
}
