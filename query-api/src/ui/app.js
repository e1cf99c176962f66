// app.js: the usage page. A plain client of the public API: every number on
// the page comes from an /api/v1/analytics/*, /api/v1/query/timeseries or
// usage endpoint called with the read key the user entered.
//
// The key is kept in sessionStorage (gone when the tab closes) and may be
// passed as /#key=<key>: the URL fragment is never sent to the server, and
// the page removes the key from the address bar as soon as it has read it.
// Other fragment fields (window, frequency, tz, org) make a view linkable.
"use strict";

(function () {
  const KEY_STORE = "agentmeter.key";
  const REFRESH_MS = 10000;
  const AUTO_FREQUENCY = { "1h": "1m", "24h": "1h", "7d": "6h", "30d": "1d" };
  const $ = (id) => document.getElementById(id);
  const num = new Intl.NumberFormat("en-US");
  const num1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const num2 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  let timer = null;
  let running = false;
  let generation = 0;

  class ApiError extends Error {
    constructor(status, detail, path) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.path = path;
    }
  }

  // --- settings -----------------------------------------------------------

  function browserTz() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (_) { return "UTC"; }
  }

  function readFragment() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (p.get("key")) {
      sessionStorage.setItem(KEY_STORE, p.get("key"));
      p.delete("key");
    }
    for (const f of ["window", "frequency", "tz", "org"]) {
      const v = p.get(f);
      if (v === null) continue;
      const input = $(f);
      if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === v)) continue;
      input.value = v;
    }
    writeFragment();
  }

  // The view (never the key) in the fragment, so it can be bookmarked.
  function writeFragment() {
    const p = new URLSearchParams();
    for (const f of ["window", "frequency", "tz", "org"]) if ($(f).value) p.set(f, $(f).value);
    history.replaceState(null, "", location.pathname + location.search + "#" + p.toString());
  }

  function settings() {
    const win = $("window").value;
    const f = $("frequency").value;
    return {
      key: sessionStorage.getItem(KEY_STORE) || "",
      window: win,
      frequency: f === "auto" ? AUTO_FREQUENCY[win] || "1h" : f,
      tz: $("tz").value.trim() || browserTz(),
      org: $("org").value.trim(),
    };
  }

  // --- HTTP ---------------------------------------------------------------

  async function getJson(path, key) {
    let resp;
    try {
      resp = await fetch(path, {
        headers: { "X-API-Key": key, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (_) {
      throw new ApiError(0, "The API could not be reached.", path);
    }
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) {
      let detail = body && body.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0] || ""}: ${d.msg}`).join("; ");
      throw new ApiError(resp.status, detail || resp.statusText, path);
    }
    return body;
  }

  function message(err) {
    switch (err.status) {
      case 0: return "Cannot reach the API. Is agentmeter-api running?";
      case 401: return "Key not accepted (HTTP 401): the server does not know this key. Check it and enter it again.";
      case 403: return "This key may not read this (HTTP 403).";
      case 404: return `Not found (HTTP 404): ${err.detail}`;
      case 422: return `The API rejected a setting (HTTP 422): ${err.detail}`;
      default: return err.status >= 500
        ? `The API failed to answer (HTTP ${err.status}); it will be retried.`
        : `Request failed (HTTP ${err.status}): ${err.detail}`;
    }
  }

  function qs(params) {
    return new URLSearchParams(params).toString();
  }

  // --- formatting -----------------------------------------------------------

  function timeFormatter(s) {
    const long = s.window === "7d" || s.window === "30d";
    const daily = /d$|w$|mo$/.test(s.frequency);
    const opts = daily ? { month: "short", day: "numeric" }
      : long ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
        : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    let f;
    try { f = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: s.tz }); } catch (_) { f = new Intl.DateTimeFormat("en-GB", opts); }
    return (t) => f.format(new Date(t));
  }

  function fullTime(iso, tz) {
    if (!iso) return "never";
    try {
      return new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "short", timeZone: tz }).format(new Date(iso)) + " " + tz;
    } catch (_) {
      return iso;
    }
  }

  const ms = (secs) => (secs === null || secs === undefined ? null : secs * 1000);
  const fmtMs = (v) => (v === null ? "–" : v >= 1000 ? num2.format(v / 1000) + " s" : num1.format(v) + " ms");
  const fmtPct = (v) => (v === null ? "–" : num2.format(v * 100) + " %");

  // --- charts -------------------------------------------------------------

  function chart(id, opts, total, totalText, attrs) {
    const fig = $(id);
    fig.dataset.total = String(total);
    for (const k in attrs || {}) fig.dataset[k] = String(attrs[k]);
    fig.querySelector("[data-role=total]").textContent = totalText;
    fig.classList.remove("failed");
    SvgChart.render(fig.querySelector("[data-role=plot]"), opts);
  }

  function chartError(id, text) {
    const fig = $(id);
    delete fig.dataset.total;
    fig.classList.add("failed");
    fig.querySelector("[data-role=total]").textContent = "";
    const plot = fig.querySelector("[data-role=plot]");
    plot.textContent = "";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = text;
    plot.appendChild(p);
  }

  function partialIndex(points) {
    const i = points.findIndex((p) => p.partial);
    return i < 0 ? null : i;
  }

  function countChart(id, title, d, s, fmtT) {
    const pts = d.data.data_points;
    const values = pts.map((p) => p.count);
    const total = values.reduce((a, b) => a + b, 0);
    const peak = Math.max(0, ...values);
    chart(id, {
      kind: "bar",
      title: `${title} per ${s.frequency} bucket, ${s.tz}`,
      times: pts.map((p) => Date.parse(p.timestamp)),
      series: [{ name: title, values, cls: id === "chart-queries" ? "s1" : "s0" }],
      format: (v) => num.format(Math.round(v * 100) / 100),
      formatTime: fmtT,
      partial: partialIndex(pts),
      summary: `${title}: ${num.format(total)} in the last ${s.window}, in ${pts.length} buckets of ${s.frequency}; busiest bucket ${num.format(peak)}.`,
    }, total, num.format(total) + " total");
  }

  function errorRateChart(d, s, fmtT) {
    const data = d.data;
    const pts = data.time_series_data;
    const values = pts.map((p) => (p.calls > 0 ? p.value : null));
    chart("chart-error-rate", {
      kind: "line",
      title: `Error rate per ${s.frequency} bucket, ${s.tz}`,
      times: pts.map((p) => Date.parse(p.timestamp)),
      series: [{ name: "Error rate", values, cls: "s3" }],
      format: fmtPct,
      formatTime: fmtT,
      partial: partialIndex(pts),
      summary: `Error rate: ${fmtPct(data.average_error_rate)} overall, ${num.format(data.total_errors)} errors in ${num.format(data.total_tool_calls)} tool calls in the last ${s.window}.`,
    }, data.average_error_rate,
    `${fmtPct(data.average_error_rate)} (${num.format(data.total_errors)} of ${num.format(data.total_tool_calls)})`,
    { errors: data.total_errors, calls: data.total_tool_calls });
  }

  function latencyChart(d, s, fmtT) {
    const pts = d.data.data_points;
    const has = (p) => p.total_calls > 0;
    const avg = pts.map((p) => (has(p) ? ms(p.average_latency) : null));
    const p95 = pts.map((p) => (has(p) ? ms(p.latency_p95) : null));
    const calls = pts.reduce((a, p) => a + p.total_calls, 0);
    const sum = pts.reduce((a, p) => a + (has(p) ? ms(p.average_latency) * p.total_calls : 0), 0);
    const overall = calls > 0 ? Math.round((sum / calls) * 1000) / 1000 : null;
    const worstP95 = Math.max(0, ...p95.filter((v) => v !== null));
    chart("chart-latency", {
      kind: "line",
      title: `Tool-call latency per ${s.frequency} bucket, ${s.tz}`,
      times: pts.map((p) => Date.parse(p.timestamp)),
      series: [{ name: "average", values: avg, cls: "s0" }, { name: "p95", values: p95, cls: "s2" }],
      format: fmtMs,
      formatTime: fmtT,
      partial: partialIndex(pts),
      summary: overall === null
        ? `Latency: no tool calls in the last ${s.window}.`
        : `Latency: average ${fmtMs(overall)} over ${num.format(calls)} tool calls; highest bucket p95 ${fmtMs(worstP95)}.`,
    }, overall === null ? "" : overall, overall === null ? "no calls" : `avg ${fmtMs(overall)}`, { p95Max: worstP95 });
  }

  // --- tables -------------------------------------------------------------

  function table(id, caption, columns, rows) {
    const box = $(id).querySelector("[data-role=body]");
    box.textContent = "";
    $(id).dataset.rows = String(rows.length);
    if (rows.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "Nothing in this window.";
      box.appendChild(p);
      return;
    }
    const t = document.createElement("table");
    const c = document.createElement("caption");
    c.className = "visually-hidden";
    c.textContent = caption;
    t.appendChild(c);
    const thead = t.createTHead().insertRow();
    for (const col of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = col.name;
      if (col.num) th.className = "num";
      thead.appendChild(th);
    }
    const tb = t.createTBody();
    for (const r of rows) {
      const tr = tb.insertRow();
      tr.dataset.key = r.key;
      columns.forEach((col, i) => {
        const td = tr.insertCell();
        const v = r.cells[i];
        td.textContent = col.num ? num.format(v) : v;
        if (col.num) { td.className = "num"; td.dataset.value = String(v); }
        if (col.title) td.title = r.key;
      });
    }
    box.appendChild(t);
  }

  function tableError(id, text) {
    const box = $(id).querySelector("[data-role=body]");
    box.textContent = "";
    delete $(id).dataset.rows;
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = text;
    box.appendChild(p);
  }

  const shortId = (id) => (id && id !== "00000000-0000-0000-0000-000000000000" ? id.slice(0, 8) + "…" : "(none)");

  // A top-N answer: the by-calls list joined with the by-queries counts.
  function topTable(id, noun, d, listKey, idKey) {
    const byCalls = d.data.tool_calls[listKey];
    const queries = new Map(d.data.queries_processed[listKey].map((x) => [x[idKey], x.count]));
    table(id, `Top ${noun} by tool calls`, [{ name: noun, title: true }, { name: "Calls", num: true }, { name: "Queries", num: true }],
      byCalls.map((x) => ({ key: x[idKey], cells: [shortId(x[idKey]), x.count, queries.get(x[idKey]) || 0] })));
  }

  function toolsTable(d) {
    const rows = d.series.map((s) => ({
      name: s.name,
      total: s.points.reduce((a, p) => a + (p[1] || 0), 0),
    })).filter((r) => r.total > 0);
    rows.sort((a, b) => (a.name === "other") - (b.name === "other") || b.total - a.total || a.name.localeCompare(b.name));
    table("top-tools", "Top tools by tool calls", [{ name: "Tool" }, { name: "Calls", num: true }],
      rows.map((r) => ({ key: r.name, cells: [r.name === "other" ? "(all other tools)" : r.name, r.total] })));
  }

  function usersTable(d) {
    table("top-users", "Top users by tool calls", [{ name: "User" }, { name: "Calls", num: true }],
      d.data.users.map((u) => ({ key: u.user_email, cells: [u.user_email || "(no e-mail)", u.tool_count] })));
  }

  // --- limits -------------------------------------------------------------

  const METRIC_NAMES = {
    tokens: "Tokens", input_tokens: "Input tokens", output_tokens: "Output tokens", messages: "Messages",
    cost_usd: "Cost (USD)", executions: "Executions", tool_calls: "Tool calls",
  };
  const NOT_METRICS = new Set(["extra_usage", "as_of", "staleness_ms"]);

  function amount(v) {
    if (v === null || v === undefined) return "–";
    if (v === "unlimited") return "unlimited";
    const n = Number(v);
    return Number.isFinite(n) ? num2.format(n) : String(v);
  }

  function renderLimits(org, orgUsage, current, s) {
    const box = $("limits");
    box.textContent = "";
    const metrics = Object.keys(orgUsage).filter((k) => !NOT_METRICS.has(k) && orgUsage[k] && typeof orgUsage[k] === "object");
    const head = document.createElement("p");
    head.className = "muted";
    head.textContent = `Organization ${org}` + (current ? ` · period ${fullTime(current.period_start, s.tz)} – ${fullTime(current.period_end, s.tz)}` : "");
    box.appendChild(head);
    box.dataset.limited = String(metrics.length);
    if (metrics.length === 0) {
      const p = document.createElement("p");
      p.textContent = "No limits apply to this organization.";
      if (current) {
        const u = current.usage;
        p.textContent += ` This month: ${amount(u.messages.current)} messages, ${amount(u.tokens.total)} tokens, $${amount(u.cost_usd.current)}.`;
      }
      box.appendChild(p);
      return;
    }
    const t = document.createElement("table");
    t.className = "limits";
    const cap = document.createElement("caption");
    cap.className = "visually-hidden";
    cap.textContent = "Limit status";
    t.appendChild(cap);
    const hr = t.createTHead().insertRow();
    for (const [name, isNum] of [["Metric"], ["Used", 1], ["Limit", 1], ["Remaining", 1], ["Utilization"], ["Resets"]]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      if (isNum) th.className = "num";
      hr.appendChild(th);
    }
    const tb = t.createTBody();
    for (const m of metrics) {
      const f = orgUsage[m];
      const block = current && current.usage[m] && current.usage[m].max !== undefined ? current.usage[m] : null;
      const tr = tb.insertRow();
      tr.dataset.metric = m;
      tr.insertCell().textContent = METRIC_NAMES[m] || m;
      for (const k of ["current", "max", "remaining"]) {
        const td = tr.insertCell();
        td.className = "num";
        td.textContent = block ? amount(block[k]) : "–";
      }
      const util = f.utilization === null || f.utilization === undefined ? 0 : f.utilization;
      const td = tr.insertCell();
      const meter = document.createElement("meter");
      meter.min = 0; meter.max = 100; meter.low = 80; meter.high = 95; meter.optimum = 0; meter.value = Math.min(100, util);
      meter.setAttribute("aria-label", `${METRIC_NAMES[m] || m} utilization`);
      td.appendChild(meter);
      td.appendChild(document.createTextNode(" " + num2.format(util) + " %"));
      tr.dataset.utilization = String(util);
      if (util >= 100) tr.className = "over";
      tr.insertCell().textContent = fullTime(f.resets_at, s.tz);
    }
    box.appendChild(t);
  }

  function limitsMessage(text, cls) {
    const box = $("limits");
    box.textContent = "";
    delete box.dataset.limited;
    const p = document.createElement("p");
    p.className = cls || "muted";
    p.textContent = text;
    box.appendChild(p);
  }

  async function loadLimits(s) {
    if (!s.org) {
      limitsMessage("Enter an organization id to see its limit status.");
      return;
    }
    const org = encodeURIComponent(s.org);
    try {
      const [orgUsage, current] = await Promise.all([
        getJson(`/api/organizations/${org}/usage`, s.key),
        getJson(`/v1/api/usage/current?${qs({ organization_id: s.org })}`, s.key).catch(() => null),
      ]);
      renderLimits(s.org, orgUsage, current, s);
    } catch (e) {
      if (e.status === 404 && e.detail === "Not Found") {
        limitsMessage("Limit status is not available on this server (no usage endpoints).", "error");
      } else if (e.status === 422) {
        limitsMessage("The organization id must be a UUID.", "error");
      } else {
        limitsMessage("Limit status: " + message(e), "error");
      }
    }
  }

  // --- refresh ------------------------------------------------------------

  function setStatus(text, kind) {
    const st = $("status");
    st.textContent = text;
    st.className = "status" + (kind ? " " + kind : "");
  }

  async function refresh() {
    const s = settings();
    if (!s.key) {
      document.body.dataset.state = "nokey";
      setStatus("Enter a read key to see usage.", "info");
      return;
    }
    if (running) return;
    running = true;
    const gen = ++generation;
    document.body.dataset.state = "loading";
    const fmtT = timeFormatter(s);
    const g = qs({ window: s.window, frequency: s.frequency, tz: s.tz });
    const top = qs({ window: s.window, tz: s.tz, limit: 10 });
    const a = "/api/v1/analytics/";
    const jobs = {
      calls: getJson(a + "tool-calls-processed-graph?" + g, s.key),
      queries: getJson(a + "queries-processed-graph?" + g, s.key),
      errors: getJson(a + "error-rate-graph?" + g, s.key),
      latency: getJson(a + "average-tool-call-latency-graph?" + g, s.key),
      servers: getJson(a + "top-servers?" + top, s.key),
      projects: getJson(a + "top-projects?" + top, s.key),
      navigators: getJson(a + "top-navigators?" + top, s.key),
      tools: getJson("/api/v1/query/timeseries?" + qs({ metric: "tool_calls", group_by: "tool", top: 10, window: s.window, step: s.frequency, tz: s.tz }), s.key),
      users: getJson(a + "users?" + top, s.key),
    };
    const names = Object.keys(jobs);
    const settled = await Promise.allSettled(names.map((n) => jobs[n]));
    await loadLimits(s);
    running = false;
    if (gen !== generation) return;
    const r = {};
    const errors = [];
    names.forEach((n, i) => { r[n] = settled[i]; if (settled[i].status === "rejected") errors.push(settled[i].reason); });
    const draw = (name, ok, fail) => {
      const x = r[name];
      if (x.status === "fulfilled") {
        try { ok(x.value); } catch (e) { fail("Unexpected answer from the API."); console.error(e); }
      } else {
        // A rejected key is said once, in the status line.
        fail(x.reason.status === 401 ? "Not shown: key not accepted." : message(x.reason));
      }
    };
    draw("calls", (d) => countChart("chart-tool-calls", "Tool calls", d, s, fmtT), (m) => chartError("chart-tool-calls", m));
    draw("queries", (d) => countChart("chart-queries", "Queries", d, s, fmtT), (m) => chartError("chart-queries", m));
    draw("errors", (d) => errorRateChart(d, s, fmtT), (m) => chartError("chart-error-rate", m));
    draw("latency", (d) => latencyChart(d, s, fmtT), (m) => chartError("chart-latency", m));
    draw("servers", (d) => topTable("top-servers", "Server", d, "servers", "server_id"), (m) => tableError("top-servers", m));
    draw("projects", (d) => topTable("top-projects", "Project", d, "projects", "project_id"), (m) => tableError("top-projects", m));
    draw("navigators", (d) => topTable("top-navigators", "Navigator", d, "navigators", "navigator_id"), (m) => tableError("top-navigators", m));
    draw("tools", toolsTable, (m) => tableError("top-tools", m));
    draw("users", usersTable, (m) => tableError("top-users", m));

    const unauthorized = errors.find((e) => e.status === 401);
    if (unauthorized) {
      document.body.dataset.state = "unauthorized";
      setStatus(message(unauthorized), "error");
      $("key").focus();
    } else if (errors.length > 0) {
      document.body.dataset.state = "error";
      setStatus(message(errors[0]), "error");
    } else {
      document.body.dataset.state = "ready";
      setStatus("", "");
      const asOf = r.calls.value.data.as_of;
      $("updated").textContent = `Updated ${fullTime(new Date().toISOString(), s.tz)} · data as of ${fullTime(asOf, s.tz)}`;
    }
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    if ($("auto").checked) timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  function init() {
    const tz = browserTz();
    $("tz").value = tz;
    if (typeof Intl.supportedValuesOf === "function") {
      const list = $("tz-list");
      for (const z of Intl.supportedValuesOf("timeZone")) {
        const o = document.createElement("option");
        o.value = z;
        list.appendChild(o);
      }
    }
    readFragment();
    if (sessionStorage.getItem(KEY_STORE)) $("key").placeholder = "(key stored for this tab)";
    $("controls").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const k = $("key").value.trim();
      if (k) {
        sessionStorage.setItem(KEY_STORE, k);
        $("key").value = "";
        $("key").placeholder = "(key stored for this tab)";
      }
      writeFragment();
      refresh();
    });
    for (const id of ["window", "frequency"]) $(id).addEventListener("change", () => { writeFragment(); refresh(); });
    for (const id of ["tz", "org"]) $(id).addEventListener("change", () => { writeFragment(); refresh(); });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      $("key").value = "";
      $("key").placeholder = "am_...";
      setStatus("Key forgotten.", "info");
      document.body.dataset.state = "nokey";
    });
    $("auto").addEventListener("change", schedule);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    schedule();
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
