// vaekit latent explorer: a decoder in plain JavaScript, run in the page (no libraries, no network).
// The data object VAEKIT_EXPLORER_DATA is written just before this code by vaekit/explorer.py.
(function () {
  "use strict";
  var D = VAEKIT_EXPLORER_DATA;
  var root = document.getElementById("vx-panel");
  var resolveReady, rejectReady;
  var ready = new Promise(function (res, rej) { resolveReady = res; rejectReady = rej; });
  var api = { ready: ready };
  window.vaekitExplorer = api;

  function fail(err) {
    var msg = "The explorer could not start: " + (err && err.message ? err.message : String(err));
    var box = document.getElementById("vx-status");
    if (box) { box.textContent = msg; box.className = "warn"; box.style.display = ""; }
    rejectReady(err instanceof Error ? err : new Error(msg));
  }

  // ------------------------------------------------------------ weights
  var LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  function b64floats(s) {
    var bin = atob(s), n = bin.length, bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    if (LITTLE) return new Float32Array(bytes.buffer);
    var dv = new DataView(bytes.buffer), out = new Float32Array(n >> 2);
    for (var j = 0; j < out.length; j++) out[j] = dv.getFloat32(4 * j, true);
    return out;
  }

  // ------------------------------------------------------------ layers: one sample, shapes without the batch
  function prod(a) { var p = 1; for (var i = 0; i < a.length; i++) p *= a[i]; return p; }

  function linear(x, L) {
    var I = L.in_features, O = L.out_features, w = L.W, b = L.B, rows = x.length / I;
    var y = new Float32Array(rows * O);
    for (var r = 0; r < rows; r++) {
      var xo = r * I;
      for (var o = 0; o < O; o++) {
        var s = b ? b[o] : 0, wo = o * I;
        for (var i = 0; i < I; i++) s += w[wo + i] * x[xo + i];
        y[r * O + o] = s;
      }
    }
    return y;
  }

  function conv2d(x, L) {
    var C = L.in_shape[0], H = L.in_shape[1], W = L.in_shape[2];
    var CO = L.out_shape[0], OH = L.out_shape[1], OW = L.out_shape[2];
    var kh = L.kernel[0], kw = L.kernel[1], sh = L.stride[0], sw = L.stride[1], ph = L.padding[0], pw = L.padding[1];
    var w = L.W, b = L.B, y = new Float32Array(CO * OH * OW), acc = new Float64Array(OH * OW);
    for (var co = 0; co < CO; co++) {
      acc.fill(b ? b[co] : 0);
      for (var ci = 0; ci < C; ci++) {
        for (var ky = 0; ky < kh; ky++) {
          for (var kx = 0; kx < kw; kx++) {
            var wv = w[((co * C + ci) * kh + ky) * kw + kx];
            if (wv === 0) continue;
            var oxmin = Math.max(0, Math.ceil((pw - kx) / sw));
            var oxmax = Math.min(OW - 1, Math.floor((W - 1 + pw - kx) / sw));
            for (var oy = 0; oy < OH; oy++) {
              var iy = oy * sh - ph + ky;
              if (iy < 0 || iy >= H) continue;
              var yo = oy * OW, xi = (ci * H + iy) * W - pw + kx;
              for (var ox = oxmin; ox <= oxmax; ox++) acc[yo + ox] += wv * x[xi + ox * sw];
            }
          }
        }
      }
      y.set(acc, co * OH * OW);
    }
    return y;
  }

  function convT2dGather(x, L) {  // few output channels: gather per output plane
    var C = L.in_shape[0], H = L.in_shape[1], W = L.in_shape[2];
    var CO = L.out_shape[0], OH = L.out_shape[1], OW = L.out_shape[2];
    var kh = L.kernel[0], kw = L.kernel[1], sh = L.stride[0], sw = L.stride[1], ph = L.padding[0], pw = L.padding[1];
    var w = L.W, b = L.B, y = new Float32Array(CO * OH * OW), acc = new Float64Array(OH * OW);
    for (var co = 0; co < CO; co++) {
      acc.fill(b ? b[co] : 0);
      for (var ci = 0; ci < C; ci++) {
        var xc = ci * H * W;
        for (var ky = 0; ky < kh; ky++) {
          for (var kx = 0; kx < kw; kx++) {
            var wv = w[((ci * CO + co) * kh + ky) * kw + kx];
            if (wv === 0) continue;
            // input columns ix whose output column ox = ix*sw - pw + kx lies in [0, OW)
            var ixmin = Math.max(0, Math.ceil((pw - kx) / sw));
            var ixmax = Math.min(W - 1, Math.floor((OW - 1 + pw - kx) / sw));
            for (var iy = 0; iy < H; iy++) {
              var oy = iy * sh - ph + ky;
              if (oy < 0 || oy >= OH) continue;
              var yo = oy * OW - pw + kx, xi = xc + iy * W;
              for (var ix = ixmin; ix <= ixmax; ix++) acc[yo + ix * sw] += wv * x[xi + ix];
            }
          }
        }
      }
      y.set(acc, co * OH * OW);
    }
    return y;
  }

  // ConvTranspose2d with many output channels: scatter each non-zero input value (after a ReLU
  // about half are zero) into a channels-last accumulator, the innermost loop running over the
  // output channels of weights laid out as [ci][ky][kx][co] (L.WT, made once).
  function convT2dScatter(x, L) {
    var C = L.in_shape[0], H = L.in_shape[1], W = L.in_shape[2];
    var CO = L.out_shape[0], OH = L.out_shape[1], OW = L.out_shape[2];
    var kh = L.kernel[0], kw = L.kernel[1], sh = L.stride[0], sw = L.stride[1], ph = L.padding[0], pw = L.padding[1];
    var wt = L.WT, b = L.B, n = OH * OW, acc = new Float64Array(n * CO), y = new Float32Array(CO * n);
    if (b) for (var p = 0; p < n; p++) for (var c0 = 0; c0 < CO; c0++) acc[p * CO + c0] = b[c0];
    var R = kw * CO;  // for one input value and one kernel row, kx and co run over R contiguous numbers
    for (var ci = 0; ci < C; ci++) {
      for (var iy = 0; iy < H; iy++) {
        for (var ix = 0; ix < W; ix++) {
          var v = x[(ci * H + iy) * W + ix];
          if (v === 0) continue;
          var ox0 = ix * sw - pw, jmin = Math.max(0, -ox0) * CO, jmax = Math.min(kw, OW - ox0) * CO;
          for (var ky = 0; ky < kh; ky++) {
            var oy = iy * sh - ph + ky;
            if (oy < 0 || oy >= OH) continue;
            var ob = (oy * OW + ox0) * CO, wb = (ci * kh + ky) * R;
            for (var j = jmin; j < jmax; j++) acc[ob + j] += v * wt[wb + j];
          }
        }
      }
    }
    for (var co2 = 0; co2 < CO; co2++) for (var q = 0; q < n; q++) y[co2 * n + q] = acc[q * CO + co2];
    return y;
  }

  function convT2d(x, L) {
    if (L.out_shape[0] < 8) return convT2dGather(x, L);
    if (!L.WT) {  // [ci][co][ky][kx] -> [ci][ky][kx][co]
      var C = L.in_shape[0], CO = L.out_shape[0], kk = L.kernel[0] * L.kernel[1], w = L.W, wt = new Float32Array(w.length);
      for (var ci = 0; ci < C; ci++) for (var co = 0; co < CO; co++) for (var k = 0; k < kk; k++) wt[(ci * kk + k) * CO + co] = w[(ci * CO + co) * kk + k];
      L.WT = wt;
    }
    return convT2dScatter(x, L);
  }

  function elementwise(x, f) { for (var i = 0; i < x.length; i++) x[i] = f(x[i]); return x; }
  function sigmoid(v) { return v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v)); }

  function applyLayer(x, L) {
    switch (L.type) {
      case "Linear": return linear(x, L);
      case "Conv2d": return conv2d(x, L);
      case "ConvTranspose2d": return convT2d(x, L);
      case "ReLU": return elementwise(x, function (v) { return v > 0 ? v : 0; });
      case "LeakyReLU": var a = L.negative_slope; return elementwise(x, function (v) { return v >= 0 ? v : a * v; });
      case "Tanh": return elementwise(x, Math.tanh);
      case "Sigmoid": return elementwise(x, sigmoid);
      case "SiLU": return elementwise(x, function (v) { return v * sigmoid(v); });
      case "ELU": var al = L.alpha; return elementwise(x, function (v) { return v > 0 ? v : al * Math.expm1(v); });
      case "Flatten": case "Unflatten": case "Identity": return x;  // the data is row-major: only the shape changes
      default: throw new Error("unsupported layer " + L.type);
    }
  }

  // the mean image E[x|z] from the decoder's output: the likelihood's own function (VAEKIT_MEAN)
  var K = D.K, shape = D.out_shape, layers = D.layers, meanOf = VAEKIT_MEAN;
  // a conditional model: the decoder takes [z, c], c the picked row of D.conditions.vectors (S numbers each)
  var CV = D.conditions ? b64floats(D.conditions.vectors) : new Float32Array(0);
  var S = D.conditions ? CV.length / D.conditions.names.length : 0, picked = 0;

  function decode(z) {
    if (!z || z.length !== K) throw new Error("z must have " + K + " numbers, got " + (z ? z.length : z));
    var x = new Float32Array(K + S);
    for (var i = 0; i < K; i++) x[i] = +z[i];
    for (var j = 0; j < S; j++) x[K + j] = CV[picked * S + j];
    for (var l = 0; l < layers.length; l++) {
      x = applyLayer(x, layers[l]);
      if (x.length !== prod(layers[l].out_shape)) throw new Error("layer " + l + " gave " + x.length + " values");
    }
    return elementwise(x, meanOf);
  }

  // ------------------------------------------------------------ the page
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var plane, pctx, bg, img, ictx, small, sctx, readout, sliders = [], z, center, dirs, view;
  var drag = null, playing = 0;

  function planeOf(zz) {  // latent z -> plane coordinates (u, v)
    var u = 0, v = 0;
    for (var i = 0; i < K; i++) { var d = zz[i] - center[i]; u += d * dirs[0][i]; v += d * dirs[1][i]; }
    return [u, v];
  }
  function zOfPlane(u, v) {  // keep the part of z off the plane, set its plane coordinates to (u, v)
    var cur = planeOf(z), out = new Array(K);
    for (var i = 0; i < K; i++) out[i] = z[i] + (u - cur[0]) * dirs[0][i] + (v - cur[1]) * dirs[1][i];
    return out;
  }
  function toPx(u, v) { var s = plane.width / (2 * view.r); return [(u - view.cu) * s + plane.width / 2, plane.height / 2 - (v - view.cv) * s]; }
  function fromPx(x, y) { var s = plane.width / (2 * view.r); return [(x - plane.width / 2) / s + view.cu, (plane.height / 2 - y) / s + view.cv]; }

  function drawBackground(points, labels) {
    bg = document.createElement("canvas");
    bg.width = plane.width; bg.height = plane.height;
    var c = bg.getContext("2d");
    c.fillStyle = "#ffffff"; c.fillRect(0, 0, bg.width, bg.height);
    var s = plane.width / (2 * view.r), o = toPx(D.prior_center[0], D.prior_center[1]);
    c.strokeStyle = "#9aa3b2"; c.lineWidth = 1;
    for (var k = 1; k <= 3; k++) { c.beginPath(); c.arc(o[0], o[1], k * s, 0, 2 * Math.PI); c.setLineDash(k === 1 ? [] : [4, 3]); c.stroke(); }
    c.setLineDash([]);
    c.fillStyle = "#5a6272"; c.font = "11px sans-serif";
    for (var k2 = 1; k2 <= 3; k2++) c.fillText(k2 + "\u03c3", o[0] + k2 * s * 0.7071 + 2, o[1] - k2 * s * 0.7071 - 2);
    c.globalAlpha = 0.55;
    for (var i = 0; i < points.length / 2; i++) {
      var p = toPx(points[2 * i], points[2 * i + 1]);
      var lab = labels ? labels[i] : -1;
      c.fillStyle = lab >= 0 ? PALETTE[lab % 10] : "#1f77b4";
      c.fillRect(p[0] - 1, p[1] - 1, 2, 2);
    }
    c.globalAlpha = 1;
  }

  function drawPlane() {
    pctx.drawImage(bg, 0, 0);
    if (drag && drag.to) {
      var a = toPx(drag.from[0], drag.from[1]), b = toPx(drag.to[0], drag.to[1]);
      pctx.strokeStyle = "#222"; pctx.lineWidth = 1.5; pctx.beginPath(); pctx.moveTo(a[0], a[1]); pctx.lineTo(b[0], b[1]); pctx.stroke();
    }
    var m = planeOf(z), p = toPx(m[0], m[1]);
    pctx.strokeStyle = "#000"; pctx.lineWidth = 2;
    pctx.beginPath(); pctx.arc(p[0], p[1], 6, 0, 2 * Math.PI); pctx.stroke();
    pctx.strokeStyle = "#fff"; pctx.lineWidth = 1;
    pctx.beginPath(); pctx.arc(p[0], p[1], 7.5, 0, 2 * Math.PI); pctx.stroke();
  }

  function drawImage(mean) {
    var C = shape[0], H = shape[1], W = shape[2], px = sctx.createImageData(W, H), d = px.data, n = H * W;
    for (var i = 0; i < n; i++) {
      var r, g, b;
      if (C === 3) { r = mean[i]; g = mean[n + i]; b = mean[2 * n + i]; } else { r = g = b = mean[i]; }
      d[4 * i] = Math.round(255 * Math.min(1, Math.max(0, r)));
      d[4 * i + 1] = Math.round(255 * Math.min(1, Math.max(0, g)));
      d[4 * i + 2] = Math.round(255 * Math.min(1, Math.max(0, b)));
      d[4 * i + 3] = 255;
    }
    sctx.putImageData(px, 0, 0);
    ictx.imageSmoothingEnabled = false;
    ictx.drawImage(small, 0, 0, img.width, img.height);
  }

  function fmt(v) { return (v >= 0 ? "\u2007" : "") + v.toFixed(2); }
  function show(newZ, why) {
    z = newZ.slice();
    var t0 = performance.now(), mean = decode(z);
    api.lastDecodeMs = performance.now() - t0;
    drawImage(mean);
    drawPlane();
    for (var i = 0; i < sliders.length; i++) { sliders[i].input.value = z[i]; sliders[i].out.textContent = fmt(z[i]); }
    var shown = z.slice(0, 8).map(function (v) { return v.toFixed(2); }).join(", ") + (K > 8 ? ", \u2026" : "");
    var given = D.conditions ? ", " + D.conditions.title + " " + D.conditions.names[picked] : "";
    readout.textContent = (why ? why + ": " : "") + "z = (" + shown + ")" + given;
  }

  function randn() {  // Box-Muller
    var u = 0, v = 0;
    while (u === 0) u = Math.random();
    v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  function samplePrior() { var out = []; for (var i = 0; i < K; i++) out.push(randn()); return out; }
  function sampleGmm() {
    var g = D.gmm, r = Math.random(), c = 0, acc = 0;
    for (c = 0; c < g.weights.length - 1; c++) { acc += g.weights[c]; if (r < acc) break; }
    var eps = samplePrior(), L = g.chol[c], out = [];
    for (var i = 0; i < K; i++) { var s = g.means[c][i]; for (var j = 0; j <= i; j++) s += L[i][j] * eps[j]; out.push(s); }
    return out;
  }

  function nearestPoint(u, v, points, px) {  // a data point within px pixels of (u, v), else (u, v)
    var s = plane.width / (2 * view.r), best = (px / s) * (px / s), bu = u, bv = v;
    for (var i = 0; i < points.length / 2; i++) {
      var du = points[2 * i] - u, dv = points[2 * i + 1] - v, d = du * du + dv * dv;
      if (d < best) { best = d; bu = points[2 * i]; bv = points[2 * i + 1]; }
    }
    return [bu, bv];
  }

  function play(from, to) {
    var start = performance.now(), token = ++playing, ms = 1200;
    function frame(now) {
      if (token !== playing) return;
      var t = Math.min(1, (now - start) / ms);
      var q = zOfPlane(from[0] + t * (to[0] - from[0]), from[1] + t * (to[1] - from[1]));
      show(q, "interpolation t = " + t.toFixed(2));
      if (t < 1) requestAnimationFrame(frame); else drag = null;
    }
    requestAnimationFrame(frame);
  }

  function parseHash() {
    var m = /(?:^#|[#&])z=([^&]*)/.exec(location.hash);
    if (!m) return null;
    var vals = decodeURIComponent(m[1]).split(",").map(Number);
    if (vals.some(function (v) { return !isFinite(v); })) return null;
    if (vals.length === K) return vals;
    if (vals.length === 2 && K > 2) return zOfPlane(vals[0], vals[1]);  // plane coordinates
    return null;
  }

  function eventPlane(ev) {
    var r = plane.getBoundingClientRect();
    return fromPx((ev.clientX - r.left) * plane.width / r.width, (ev.clientY - r.top) * plane.height / r.height);
  }

  function loadWeights() {
    var W = b64floats(D.weights);
    layers.forEach(function (L) {
      if (L.weight) L.W = W.subarray(L.weight[0], L.weight[0] + L.weight[1]);
      if (L.bias) L.B = W.subarray(L.bias[0], L.bias[0] + L.bias[1]);
    });
    if (typeof meanOf !== "function") throw new Error("no mean function for the likelihood " + D.likelihood);
  }

  function start() {
    var points = b64floats(D.points), labels = D.labels;
    center = D.center; dirs = D.dirs; view = D.view; z = D.start.slice();

    plane = document.getElementById("vx-plane"); pctx = plane.getContext("2d");
    img = document.getElementById("vx-image"); ictx = img.getContext("2d");
    small = document.createElement("canvas"); small.width = shape[2]; small.height = shape[1]; sctx = small.getContext("2d");
    readout = document.getElementById("vx-readout");
    drawBackground(points, labels);

    var box = document.getElementById("vx-sliders");
    if (box && K > 2) {
      var shownDims = Math.min(K, 64);
      for (var i = 0; i < shownDims; i++) {
        var row = document.createElement("label"), name = document.createElement("span"), input = document.createElement("input"), out = document.createElement("span");
        name.textContent = "z" + i; out.className = "vx-val";
        input.type = "range"; input.min = -4; input.max = 4; input.step = 0.01; input.dataset.dim = i;
        input.addEventListener("input", function (ev) {
          var q = z.slice(); q[+ev.target.dataset.dim] = +ev.target.value; playing++; show(q, "slider");
        });
        row.appendChild(name); row.appendChild(input); row.appendChild(out); box.appendChild(row);
        sliders.push({ input: input, out: out });
      }
    }
    plane.addEventListener("pointerdown", function (ev) {
      var p = eventPlane(ev);
      drag = { from: nearestPoint(p[0], p[1], points, 6), to: null, x: ev.clientX, y: ev.clientY };
      playing++;
      if (plane.setPointerCapture) { try { plane.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic pointer */ } }
      show(zOfPlane(drag.from[0], drag.from[1]), "drag from");
    });
    plane.addEventListener("pointermove", function (ev) {
      var p = eventPlane(ev);
      if (drag) { drag.to = nearestPoint(p[0], p[1], points, 6); drawPlane(); return; }
      if (playing && api.playingUntil && performance.now() < api.playingUntil) return;
      playing++;
      show(zOfPlane(p[0], p[1]), "pointer");
    });
    plane.addEventListener("pointerup", function (ev) {
      if (!drag) return;
      var p = eventPlane(ev), moved = Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y);
      if (moved > 4) { drag.to = nearestPoint(p[0], p[1], points, 6); api.playingUntil = performance.now() + 1300; play(drag.from, drag.to); }
      else { drag = null; drawPlane(); }
    });
    var bs = document.getElementById("vx-sample-prior");
    if (bs) bs.addEventListener("click", function () { playing++; show(samplePrior(), "z ~ N(0, I)"); });
    var bg2 = document.getElementById("vx-sample-gmm");
    if (bg2 && D.gmm) bg2.addEventListener("click", function () { playing++; show(sampleGmm(), "z ~ GMM"); });
    var pick = document.getElementById("vx-condition");
    if (pick && D.conditions) pick.addEventListener("change", function () { picked = +pick.value; playing++; show(z, D.conditions.title); });
    var br = document.getElementById("vx-reset");
    if (br) br.addEventListener("click", function () { playing++; show(center.slice(), "reset to the mean of the posterior means"); });
    window.addEventListener("hashchange", function () { var h = parseHash(); if (h) { playing++; show(h, "#z"); } });

    api.decode = decode;
    api.setZ = function (q) { playing++; show(Array.prototype.slice.call(q), "setZ"); };
    api.getZ = function () { return z.slice(); };
    api.K = K; api.shape = shape.slice(); api.likelihood = D.likelihood;
    api.samplePrior = samplePrior;
    if (D.conditions) {
      api.conditions = D.conditions.names.slice();
      api.setCondition = function (i) {
        if (!(+i >= 0 && +i < D.conditions.names.length && +i === Math.floor(+i))) throw new Error("no condition " + i);
        picked = +i; if (pick) pick.value = String(picked); playing++; show(z, D.conditions.title);
      };
    }
    if (D.gmm) api.sampleGmm = sampleGmm;
    var h = parseHash();
    show(h || z, h ? "#z" : "start");
    document.getElementById("vx-status").style.display = "none";
    document.getElementById("vx-ui").style.display = "";
    resolveReady(api);
  }

  try {
    loadWeights();
    // a VQ-VAE: its code grid instead of the latent plane (assets/vq_explorer.js, in the same script before this file)
    if (D.codes) VAEKIT_CODES_PANEL({ data: D, decode: decode, b64floats: b64floats, api: api, ready: resolveReady });
    else start();
  } catch (err) { fail(err); }
})();
