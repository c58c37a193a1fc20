// dilconv explorer. Draws what the server says; computes no index and no value itself.
// The server answers, per axis, which padded input position every output position reads
// through every kernel tap (reads[o] = [[tap, position], ...]) and which input pixel each
// padded position holds (source[position], -1 for a zero). A 2-D read is a row read
// paired with a column read.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { data: null, pinned: null, lang: "dilconv", focus: "", timer: 0, seq: 0 };
const INT_FIELDS = ["in_h", "in_w", "k_h", "k_w", "stride_h", "stride_w", "dilation_h", "dilation_w"];

function tapColour(tap, count) {
  const hue = Math.round((360 * tap) / Math.max(count, 1) + 200) % 360;
  return `hsl(${hue} 75% 62%)`;
}

function fmt(v) {
  if (Number.isInteger(v)) return String(v);
  const s = Number(v).toPrecision(3);
  return String(Number(s));
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makeGrid(node, rows, cols, fill) {
  node.replaceChildren();
  const size = Math.max(18, Math.min(34, Math.floor(360 / Math.max(rows, cols, 1))));
  node.style.setProperty("--cols", cols);
  node.style.setProperty("--cell", `${size}px`);
  node.style.setProperty("--font", `${Math.max(9, Math.min(14, size * 0.4))}px`);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const cell = el("div", "cell");
      cell.dataset.r = r;
      cell.dataset.c = c;
      fill(cell, r, c);
      node.appendChild(cell);
    }
  }
}

// ---- request -------------------------------------------------------------------------

function parseValues(text) {
  return text.trim().split(/\n+/).map((line) => line.trim().split(/[\s,;]+/).map(Number));
}

function request() {
  const body = { focus: state.focus };
  for (const f of INT_FIELDS) body[f] = Number($(f).value);
  const kind = $("padding_kind").value;
  body.padding = kind !== "numbers" ? kind : [
    [Number($("pad_top").value), Number($("pad_bottom").value)],
    [Number($("pad_left").value), Number($("pad_right").value)],
  ];
  body.padding_mode = $("padding_mode").value;
  body.flip = $("flip").checked;
  body.transposed = $("transposed").checked;
  body.seed = Number($("seed").value);
  for (const a of ["x", "w"]) {
    const fill = $(`${a}_fill`).value;
    body[a] = fill === "typed" ? parseValues($(`${a}_text`).value) : fill;
  }
  return body;
}

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let payload;
  try {
    payload = await res.json();
  } catch {
    payload = { error: { message: `the server answered ${res.status} without JSON` } };
  }
  return { ok: res.ok, payload };
}

// The request field a control sets (the server looks for the nearest valid value there first).
function fieldOf(id) {
  if (id === "padding_kind" || id.startsWith("pad_")) return "padding";
  if (id === "x_fill" || id === "x_text") return "x";
  if (id === "w_fill" || id === "w_text") return "w";
  if (id === "lock_dilation") return "dilation_w";
  return id;
}

function schedule(field) {
  if (field) state.focus = field;
  clearTimeout(state.timer);
  state.timer = setTimeout(update, 90);
}

async function update() {
  const seq = ++state.seq;
  let answer;
  try {
    answer = await post("/api/conv", request());
  } catch (err) {
    answer = { ok: false, payload: { error: { message: `no answer from the server (${err})` } } };
  }
  if (seq !== state.seq) return; // a newer request is on its way
  if (answer.ok) {
    showMessage(null);
    state.data = answer.payload;
    render();
  } else {
    showMessage(answer.payload.error);
  }
}

// ---- messages ------------------------------------------------------------------------

const LABELS = {
  in_h: "input H", in_w: "input W", k_h: "kernel H", k_w: "kernel W",
  stride_h: "stride H", stride_w: "stride W", dilation_h: "dilation H", dilation_w: "dilation W",
  padding_mode: "padding_mode", flip: "flip", padding: "padding", seed: "seed",
};

function showMessage(error) {
  const box = $("message");
  box.replaceChildren();
  document.body.classList.toggle("invalid", Boolean(error));
  for (const bad of document.querySelectorAll("#controls .bad")) bad.classList.remove("bad");
  if (!error) return;
  box.appendChild(el("strong", null, "This combination does not work."));
  box.appendChild(el("p", "why", error.message));
  const control = error.field && document.getElementById(error.field);
  if (control) control.classList.add("bad");
  if (error.field && error.nearest !== null && error.nearest !== undefined) {
    const label = LABELS[error.field] || error.field;
    const line = el("p", "nearest", `The nearest valid value: ${label} = ${error.nearest}. `);
    const fix = el("button", "fix", `use ${label} = ${error.nearest}`);
    fix.type = "button";
    fix.id = "apply-fix";
    fix.addEventListener("click", () => applyFix(error.field, error.nearest));
    line.appendChild(fix);
    box.appendChild(line);
  }
  if (state.data) box.appendChild(el("p", "stale", "The views below show the last valid setting."));
}

function applyFix(field, value) {
  if (field === "padding") {
    $("padding_kind").value = value;
  } else if (field === "flip" || field === "transposed") {
    $(field).checked = value;
  } else {
    $(field).value = value;
    if (field.startsWith("dilation")) $("lock_dilation").checked = false;
  }
  syncControls();
  schedule(field);
}

// ---- drawing -------------------------------------------------------------------------

function render() {
  const d = state.data;
  const [ah, aw] = d.axes;
  const transposed = d.mode === "transposed";
  const kh = d.w.length, kw = d.w[0].length, taps = kh * kw;

  $("formula-symbolic").textContent = `${ah.formula.symbolic}   (and likewise for W)`;
  $("formula-h").textContent = ah.formula.numeric;
  $("formula-w").textContent = aw.formula.numeric;
  $("formula-effective").textContent = `${ah.formula.effective};  ${aw.formula.effective}`;

  const rows = ah.source.length, cols = aw.source.length;
  const [pt, pl] = [ah.pad[0], aw.pad[0]];
  $("input-caption").textContent = transposed
    ? `Input ${ah.in}×${aw.in} (the output gradient)`
    : `Input ${ah.in}×${aw.in}, padded to ${rows}×${cols}`;
  makeGrid($("input-grid"), rows, cols, (cell, r, c) => {
    const sr = ah.source[r], sc = aw.source[c];
    const inside = r >= pt && r < pt + ah.in && c >= pl && c < pl + aw.in;
    if (sr < 0 || sc < 0) {
      cell.classList.add("pad");
      cell.textContent = "0";
    } else {
      cell.textContent = fmt(d.x[sr][sc]);
      if (!inside) cell.classList.add("copy");
    }
    cell.dataset.sr = sr;
    cell.dataset.sc = sc;
  });

  makeGrid($("kernel-grid"), kh, kw, (cell, r, c) => {
    cell.textContent = fmt(d.w[r][c]);
    cell.dataset.tap = r * kw + c;
    cell.classList.add("tap");
    cell.style.setProperty("--tap", tapColour(r * kw + c, taps));
  });
  const dh = ah.dilation, dw = aw.dilation;
  $("dilated-caption").textContent =
    `Dilated kernel ${d.w_dilated.length}×${d.w_dilated[0].length} (dilation ${dh}, ${dw})`;
  makeGrid($("dilated-grid"), d.w_dilated.length, d.w_dilated[0].length, (cell, r, c) => {
    cell.textContent = fmt(d.w_dilated[r][c]);
    if (r % dh === 0 && c % dw === 0) {
      const tap = (r / dh) * kw + c / dw;
      cell.dataset.tap = tap;
      cell.classList.add("tap");
      cell.style.setProperty("--tap", tapColour(tap, taps));
    } else {
      cell.classList.add("gap");
    }
  });

  const oh = d.y.length, ow = d.y[0].length;
  $("output-caption").firstChild.textContent =
    `${transposed ? "Transposed output" : "Output"} ${oh}×${ow} (${d.dtype}) `;
  makeGrid($("output-grid"), oh, ow, (cell, r, c) => {
    cell.textContent = fmt(d.y[r][c]);
  });

  for (const grid of ["kernel-grid", "dilated-grid"]) {
    for (const cell of $(grid).querySelectorAll(".tap")) {
      cell.addEventListener("mouseenter", () => highlightTap(Number(cell.dataset.tap)));
      cell.addEventListener("mouseleave", restore);
    }
  }
  for (const cell of $("output-grid").children) {
    const r = Number(cell.dataset.r), c = Number(cell.dataset.c);
    cell.addEventListener("mouseenter", () => highlightOutput(r, c));
    cell.addEventListener("mouseleave", restore);
    cell.addEventListener("click", () => {
      const same = state.pinned && state.pinned[0] === r && state.pinned[1] === c;
      state.pinned = same ? null : [r, c];
      restore();
    });
  }
  if (state.pinned && (state.pinned[0] >= oh || state.pinned[1] >= ow)) state.pinned = null;
  restore();
  renderCode();
}

function clearHighlights() {
  for (const cell of document.querySelectorAll(".grid .cell")) {
    cell.classList.remove("hl", "src", "active", "pinned");
    cell.style.removeProperty("--hl");
    delete cell.dataset.tapHl;
  }
}

function inputCell(r, c) {
  const cols = state.data.axes[1].source.length;
  return $("input-grid").children[r * cols + c];
}

function mark(r, c, tap) {
  const d = state.data, taps = d.w.length * d.w[0].length;
  const cell = inputCell(r, c);
  cell.classList.add("hl");
  cell.dataset.tapHl = tap;
  cell.style.setProperty("--hl", tapColour(tap, taps));
  const [ah, aw] = d.axes;
  const sr = ah.source[r], sc = aw.source[c];
  const inside = r >= ah.pad[0] && r < ah.pad[0] + ah.in && c >= aw.pad[0] && c < aw.pad[0] + aw.in;
  if (!inside && sr >= 0 && sc >= 0) inputCell(ah.pad[0] + sr, aw.pad[0] + sc).classList.add("src");
}

function highlightOutput(r, c) {
  clearHighlights();
  const d = state.data, [ah, aw] = d.axes, kw = d.w[0].length;
  const out = $("output-grid").children[r * d.y[0].length + c];
  out.classList.add("active");
  const terms = [];
  for (const [ta, pr] of ah.reads[r]) {
    for (const [tb, pc] of aw.reads[c]) {
      const tap = ta * kw + tb;
      mark(pr, pc, tap);
      const sr = ah.source[pr], sc = aw.source[pc];
      const xv = sr < 0 || sc < 0 ? 0 : d.x[sr][sc];
      const wv = d.w[ta][tb];
      terms.push(`${wv < 0 ? `(${fmt(wv)})` : fmt(wv)}·${xv < 0 ? `(${fmt(xv)})` : fmt(xv)}`);
      for (const g of ["kernel-grid"]) $(g).children[tap].classList.add("active");
    }
  }
  const shown = terms.length > 12 ? `${terms.slice(0, 12).join(" + ")} + …` : terms.join(" + ");
  const rows = ah.reads[r].map(([, p]) => p).join(", ");
  const cols = aw.reads[c].map(([, p]) => p).join(", ");
  $("explain").textContent = terms.length
    ? `y[${r}, ${c}] = ${shown} = ${fmt(d.y[r][c])}. It reads rows ${rows} and columns ` +
      `${cols} of the ${transposedView() ? "input" : "padded input"}, each cell coloured by ` +
      "the kernel tap that multiplies it."
    : `y[${r}, ${c}] = 0: no input pixel reaches this output`;
}

function transposedView() {
  return state.data && state.data.mode === "transposed";
}

function highlightTap(tap) {
  clearHighlights();
  const d = state.data, [ah, aw] = d.axes, kw = d.w[0].length;
  const ta = Math.floor(tap / kw), tb = tap % kw;
  let count = 0;
  for (const rowReads of ah.reads) {
    for (const [ra, pr] of rowReads) {
      if (ra !== ta) continue;
      for (const colReads of aw.reads) {
        for (const [cb, pc] of colReads) {
          if (cb === tb) { mark(pr, pc, tap); count++; }
        }
      }
    }
  }
  for (const g of ["kernel-grid", "dilated-grid"]) {
    for (const cell of $(g).querySelectorAll(`[data-tap="${tap}"]`)) cell.classList.add("active");
  }
  $("explain").textContent =
    `kernel tap w[${ta}, ${tb}] = ${fmt(d.w[ta][tb])} multiplies the ${count} highlighted input cells`;
}

function restore() {
  if (state.pinned) {
    highlightOutput(...state.pinned);
    $("output-grid").children[state.pinned[0] * state.data.y[0].length + state.pinned[1]]
      .classList.add("pinned");
  } else {
    clearHighlights();
    $("explain").textContent = "Hover an output cell to see the input cells it reads; " +
      "click to pin it. Hover a kernel tap to see every input cell it multiplies.";
  }
}

function renderCode() {
  if (!state.data) return;
  $("code").textContent = state.data.code[state.lang];
  for (const tab of document.querySelectorAll("[data-lang]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.lang === state.lang));
  }
}

// ---- receptive field -----------------------------------------------------------------

async function updateStack() {
  const answer = await post("/api/receptive", { stack: $("stack").value });
  const msg = $("stack-message");
  if (!answer.ok) {
    msg.textContent = answer.payload.error.message +
      (answer.payload.error.nearest ? ` (nearest valid: ${answer.payload.error.nearest})` : "");
    return;
  }
  msg.textContent = "";
  const { layers, coverage, holes } = answer.payload;
  const body = $("stack-table").tBodies[0];
  body.replaceChildren();
  layers.forEach((l, i) => {
    const tr = el("tr");
    for (const v of [i + 1, l.kernel, l.dilation, l.stride, `${l.size}×${l.size}`, l.jump]) {
      tr.appendChild(el("td", null, String(v)));
    }
    body.appendChild(tr);
  });
  const n = coverage.length, canvas = $("coverage"), ctx = canvas.getContext("2d");
  const px = Math.max(1, Math.floor(300 / n));
  canvas.width = canvas.height = px * n;
  const top = Math.max(...coverage.flat());
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const v = coverage[r][c];
      ctx.fillStyle = v === 0 ? "#f3d9d3" : `hsl(215 70% ${88 - (58 * v) / top}%)`;
      ctx.fillRect(c * px, r * px, px, px);
    }
  }
  $("coverage-caption").textContent =
    `Paths from one output pixel to each of the ${n}×${n} input pixels it depends on ` +
    `(darker: more paths). ${holes ? `${holes} pixels inside the field are never read ` +
    "(gridding, shown pale red)." : "No holes: every pixel in the field is read."}`;
}

// ---- controls ------------------------------------------------------------------------

function syncControls() {
  const numbers = $("padding_kind").value === "numbers";
  for (const id of ["pad_top", "pad_bottom", "pad_left", "pad_right"]) $(id).disabled = !numbers;
  for (const a of ["x", "w"]) $(`${a}_text`).hidden = $(`${a}_fill`).value !== "typed";
  $("dilation_h_value").textContent = $("dilation_h").value;
  $("dilation_w_value").textContent = $("dilation_w").value;
}

function fillTyped(a) {
  if (!state.data || $(`${a}_text`).value.trim()) return;
  $(`${a}_text`).value = state.data[a].map((row) => row.map(fmt).join(" ")).join("\n");
}

async function init() {
  const res = await fetch("/api/limits");
  const info = await res.json();
  for (const f of INT_FIELDS) {
    const [lo, hi] = info.limits[f];
    Object.assign($(f), { min: lo, max: hi, value: info.defaults[f] });
  }
  for (const id of ["pad_top", "pad_bottom", "pad_left", "pad_right"]) $(id).max = info.limits.pad[1];
  for (const mode of info.padding_modes) $("padding_mode").appendChild(el("option", null, mode));
  $("padding_kind").value = info.defaults.padding;
  syncControls();

  const controls = $("controls");
  controls.addEventListener("input", (ev) => {
    const id = ev.target.id;
    if ($("lock_dilation").checked && (id === "dilation_h" || id === "dilation_w")) {
      $(id === "dilation_h" ? "dilation_w" : "dilation_h").value = ev.target.value;
    }
    if (id === "x_fill" || id === "w_fill") fillTyped(id[0]);
    syncControls();
    schedule(fieldOf(ev.target.id));
  });
  controls.addEventListener("submit", (ev) => ev.preventDefault());
  $("reroll").addEventListener("click", () => {
    $("seed").value = Number($("seed").value) + 1;
    schedule("seed");
  });
  for (const tab of document.querySelectorAll("[data-lang]")) {
    tab.addEventListener("click", () => { state.lang = tab.dataset.lang; renderCode(); });
  }
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("code").textContent);
      $("copy").textContent = "copied";
    } catch {
      window.getSelection().selectAllChildren($("code"));
      $("copy").textContent = "selected: press Ctrl+C";
    }
    setTimeout(() => { $("copy").textContent = "copy"; }, 1500);
  });
  $("stack").addEventListener("input", () => { clearTimeout(state.stackTimer); state.stackTimer = setTimeout(updateStack, 150); });
  $("stack-form").addEventListener("submit", (ev) => { ev.preventDefault(); updateStack(); });
  for (const b of document.querySelectorAll("[data-stack]")) {
    b.addEventListener("click", () => { $("stack").value = b.dataset.stack; updateStack(); });
  }
  await Promise.all([update(), updateStack()]);
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((err) => showMessage({ message: `the page could not start: ${err}` }));
});
