// The causal stack view: draws what POST /api/causal answers; computes no index.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STEP_X = 24, STEP_Y = 70, LEFT = 120, TOP = 24, R = 6;
const FAINT = "#c9ced6", HOT = "#d1495b";
let view = null;

function el(name, attrs) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function xOf(level, pos) {
  // a strided level's position p sits above the input it last reads
  const reads = view.reads;
  let x = pos;
  for (let l = level; l > 0; l--) {
    const taps = reads[l - 1][x];
    x = taps.length ? taps[taps.length - 1] : 0;
  }
  return LEFT + x * STEP_X;
}

function yOf(level) {
  return TOP + (view.sizes.length - 1 - level) * STEP_Y;
}

function draw() {
  const svg = document.getElementById("stack");
  svg.replaceChildren();
  const levels = view.sizes.length;
  svg.setAttribute("width", LEFT + view.sizes[0] * STEP_X + 20);
  svg.setAttribute("height", TOP + levels * STEP_Y);
  for (let l = 1; l < levels; l++) {
    view.reads[l - 1].forEach((taps, o) => {
      for (const i of taps) {
        svg.append(el("line", {x1: xOf(l - 1, i), y1: yOf(l - 1), x2: xOf(l, o), y2: yOf(l),
          stroke: FAINT, "stroke-width": 1, "data-level": l, "data-from": i, "data-to": o}));
      }
    });
  }
  for (let l = 0; l < levels; l++) {
    const name = l === 0 ? "input" : `d=${view.layers[l - 1].dilation}` +
      (view.layers[l - 1].stride > 1 ? ` s=${view.layers[l - 1].stride}` : "");
    const label = el("text", {x: 8, y: yOf(l) + 4, "font-size": 12});
    label.textContent = l === levels - 1 ? `output ${name}` : name;
    svg.append(label);
    for (let p = 0; p < view.sizes[l]; p++) {
      const dot = el("circle", {cx: xOf(l, p), cy: yOf(l), r: R, fill: FAINT,
        "data-level": l, "data-pos": p, "data-on": 0});
      if (l === levels - 1) dot.addEventListener("mouseenter", () => focus(p));
      svg.append(dot);
    }
  }
  document.getElementById("field").textContent = view.receptive_field;
  if (view.sizes[levels - 1] > 0) focus(view.sizes[levels - 1] - 1);
}

function focus(t) {
  const deps = view.depends[t];
  const on = deps.map((ps) => new Set(ps));
  for (const dot of document.querySelectorAll("#stack circle")) {
    const hot = on[+dot.dataset.level].has(+dot.dataset.pos);
    dot.setAttribute("fill", hot ? HOT : FAINT);
    dot.dataset.on = hot ? 1 : 0;
  }
  const svg = document.getElementById("stack");
  const firstDot = svg.querySelector("circle");
  for (const line of svg.querySelectorAll("line")) {
    const l = +line.dataset.level;
    const hot = on[l].has(+line.dataset.to) && on[l - 1].has(+line.dataset.from);
    line.setAttribute("stroke", hot ? HOT : FAINT);
    line.setAttribute("stroke-width", hot ? 2 : 1);
    if (hot) svg.insertBefore(line, firstDot);  // above the faint lines, below the dots
  }
  document.getElementById("focus-t").textContent = t;
  document.getElementById("focus-count").textContent = deps[0].length;
}

async function update() {
  const body = {
    layers: document.getElementById("layers").value,
    kernel: Number(document.getElementById("kernel").value),
    steps: Number(document.getElementById("steps").value),
  };
  const status = document.getElementById("status");
  const answer = await fetch("/api/causal", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await answer.json();
  if (!answer.ok) {
    status.textContent = data.error.message;
    document.body.dataset.ready = "true";
    return;
  }
  status.textContent = "";
  view = data;
  draw();
  document.body.dataset.ready = "true";
}

document.getElementById("controls").addEventListener("input", () => {
  document.body.dataset.ready = "false";
  update();
});
update();
