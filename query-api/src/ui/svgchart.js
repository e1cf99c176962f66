// svgchart.js: a small SVG chart renderer for the usage page.
//
// Why hand-written: the page handles API keys, so it loads nothing from
// elsewhere and depends on no package that would need auditing and updating.
// Bar and line charts over evenly spaced time buckets are all it needs, and
// that is a few hundred lines of plain DOM code. The output is static SVG
// (no canvas): it scales with the page, prints, and can be read by screen
// readers (role="img" with a summary label) and by tests.
//
// Every chart also gets a visually hidden <table> with every number it
// draws, so the data is available without seeing the picture.
"use strict";

(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 220;
  const M = { left: 56, right: 12, top: 14, bottom: 30 };

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function h(name, attrs, text) {
    const e = document.createElement(name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The smallest "nice" number (1, 2, 2.5, 5 x 10^k) >= v.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v - 1e-12) return m * p;
    return 10 * p;
  }

  // opts: {
  //   kind: "bar" | "line",
  //   title: string (used in the summary and the table caption),
  //   times: [epoch ms of each bucket start],
  //   series: [{ name, values: [number | null], cls }],
  //   format: (number) => string          value labels
  //   formatTime: (epoch ms) => string    bucket labels
  //   partial: index of the still-open bucket or null
  //   summary: string read out instead of the picture
  // }
  function render(container, opts) {
    container.textContent = "";
    const n = opts.times.length;
    const fmt = opts.format || String;
    const fmtT = opts.formatTime || ((t) => new Date(t).toISOString());
    let max = 0;
    for (const s of opts.series) for (const v of s.values) if (v !== null && v > max) max = v;
    const yMax = opts.yMax !== undefined ? Math.max(opts.yMax, max) : niceCeil(max);
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const band = n > 0 ? pw / n : pw;
    const x = (i) => M.left + band * (i + 0.5);
    const y = (v) => M.top + ph - (v / yMax) * ph;

    const svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": opts.summary || opts.title,
      preserveAspectRatio: "xMidYMid meet",
      class: "svgchart " + (opts.kind || "line"),
    });
    // Grid and y axis labels.
    const grid = el("g", { class: "grid", "aria-hidden": "true" }, svg);
    for (let k = 0; k <= 4; k++) {
      const v = (yMax * k) / 4;
      const yy = y(v);
      el("line", { x1: M.left, x2: W - M.right, y1: yy, y2: yy, class: k === 0 ? "axis" : "gridline" }, grid);
      const t = el("text", { x: M.left - 6, y: yy + 4, "text-anchor": "end", class: "tick" }, grid);
      t.textContent = fmt(v);
    }
    // X labels: about six, evenly spaced.
    if (n > 0) {
      const every = Math.max(1, Math.ceil(n / 6));
      for (let i = 0; i < n; i += every) {
        const t = el("text", { x: x(i), y: H - 10, "text-anchor": "middle", class: "tick" }, grid);
        t.textContent = fmtT(opts.times[i]);
      }
    }
    const plot = el("g", { class: "data", "aria-hidden": "true" }, svg);
    if (opts.kind === "bar") {
      const s = opts.series[0];
      const bw = Math.max(1, band * 0.72);
      s.values.forEach((v, i) => {
        if (v === null || v === 0) return;
        const r = el("rect", {
          x: x(i) - bw / 2, y: y(v), width: bw, height: Math.max(0.5, M.top + ph - y(v)),
          class: "bar " + (s.cls || "s0") + (i === opts.partial ? " partial" : ""),
        }, plot);
        el("title", {}, r).textContent = `${fmtT(opts.times[i])}: ${fmt(v)}${i === opts.partial ? " (open bucket)" : ""}`;
      });
    } else {
      opts.series.forEach((s, si) => {
        let d = "", pen = false;
        s.values.forEach((v, i) => {
          if (v === null) { pen = false; return; }
          d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1) + " ";
          pen = true;
        });
        if (d) el("path", { d, class: "line " + (s.cls || "s" + si) }, plot);
        s.values.forEach((v, i) => {
          if (v === null) return;
          const c = el("circle", { cx: x(i), cy: y(v), r: n > 60 ? 1.5 : 2.5, class: "dot " + (s.cls || "s" + si) }, plot);
          el("title", {}, c).textContent = `${s.name} ${fmtT(opts.times[i])}: ${fmt(v)}`;
        });
      });
    }
    if (opts.partial !== null && opts.partial !== undefined && n > 0) {
      el("rect", { x: M.left + band * opts.partial, y: M.top, width: band, height: ph, class: "open-bucket" }, plot);
    }
    container.appendChild(svg);

    if (opts.series.length > 1) {
      const legend = h("ul", { class: "legend", "aria-hidden": "true" });
      opts.series.forEach((s, si) => {
        const li = h("li");
        li.appendChild(h("span", { class: "swatch " + (s.cls || "s" + si) }));
        li.appendChild(document.createTextNode(s.name));
        legend.appendChild(li);
      });
      container.appendChild(legend);
    }
    if (n === 0) container.appendChild(h("p", { class: "muted" }, "No buckets in this window."));

    // The numbers, for screen readers and anyone who wants them exactly.
    const table = h("table", { class: "visually-hidden data-table" });
    table.appendChild(h("caption", {}, opts.title));
    const head = h("tr");
    head.appendChild(h("th", { scope: "col" }, "Bucket start"));
    for (const s of opts.series) head.appendChild(h("th", { scope: "col" }, s.name));
    const thead = h("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    const tbody = h("tbody");
    for (let i = 0; i < n; i++) {
      const tr = h("tr");
      tr.appendChild(h("th", { scope: "row" }, fmtT(opts.times[i]) + (i === opts.partial ? " (open)" : "")));
      for (const s of opts.series) {
        const v = s.values[i];
        tr.appendChild(h("td", { "data-value": v === null ? "" : String(v) }, v === null ? "no data" : fmt(v)));
      }
      tbody.appendChild(tr);
    }
    table.appendChild(tbody);
    container.appendChild(table);
  }

  global.SvgChart = { render, niceCeil };
})(window);
