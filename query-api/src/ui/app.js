// app.js: the usage page. A plain client of the public API: every number on
// the page comes from an /api/v1/analytics/*, /api/v1/query/timeseries or
// usage endpoint called with the key the user entered.
//
// State lives in the URL fragment (window, frequency, tz and the active
// filters), so a view can be bookmarked and shared; the fragment never
// reaches the server. The key may be handed over as /#key=<key> too: it is
// moved to sessionStorage (gone when the tab closes) and removed from the
// address bar at once, and the "Share link" button never includes it.
//
// Clicking a server, project, navigator, tool or user adds a filter that
// every panel whose endpoint accepts it applies; panels whose endpoint
// cannot filter by it say so. Rows show the latest name the API gives
// beside each id (`*_name`, `label`).
"use strict";

(function () {
  const KEY_STORE = "agentmeter.key";
  const REFRESH_MS = 10000;
  const AUTO_FREQUENCY = { "1h": "1m", "24h": "1h", "7d": "6h", "30d": "1d" };
  const NIL = "00000000-0000-0000-0000-000000000000";
  const MAX_ORGS = 20;
  const $ = (id) => document.getElementById(id);
  const num = new Intl.NumberFormat("en-US");
  const num1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const num2 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  let timer = null;
  let running = false;
  let generation = 0;

  // The filters the page knows, in the order chips are shown. The value of
  // `label` is remembered from the tables so a chip can show a name.
  const FILTERS = {
    server_id: { noun: "Server" },
    project_id: { noun: "Project" },
    navigator_instance_id: { noun: "Navigator" },
    server_instance_id: { noun: "Server instance" },
    tool_name: { noun: "Tool" },
    user_email: { noun: "User" },
  };
  // Filters whose value is itself readable (not an id).
  const PLAIN = new Set(["tool_name", "user_email"]);
  const filters = {};
  const labels = {};

  // Which filters each endpoint accepts (docs/api.md; params.rs `Accepts`).
  // A filter an endpoint does not accept is not sent (some answer 422) and
  // the panel is marked "not filtered by ...".
  const PNS = ["project_id", "navigator_instance_id", "server_instance_id", "server_id", "user_email"];
  const PN = ["project_id", "navigator_instance_id", "user_email"];
  const ACCEPTS = {
    countGraph: [...PNS, "tool_name"],
    graph: PNS,
    topServers: PN,
    topProjects: [],
    users: PN,
    callSeries: [...PNS, "tool_name"],
    execSeries: PN,
  };

  class ApiError extends Error {
    constructor(status, detail, path) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.path = path;
    }
  }

  // --- state in the URL -----------------------------------------------------

  function browserTz() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (_) { return "UTC"; }
  }

  // Reads window, frequency, tz and filters (and a key, which it removes)
  // from the fragment.
  function readFragment() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (p.get("key")) sessionStorage.setItem(KEY_STORE, p.get("key"));
    for (const f of ["window", "frequency", "tz"]) {
      const v = p.get(f);
      if (v === null) continue;
      const input = $(f);
      if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === v)) continue;
      input.value = v;
    }
    for (const k of Object.keys(FILTERS)) {
      const v = p.get(k);
      if (v) filters[k] = v; else delete filters[k];
    }
    writeFragment();
  }

  // The view, never the key.
  function stateString() {
    const p = new URLSearchParams();
    for (const f of ["window", "frequency", "tz"]) if ($(f).value) p.set(f, $(f).value.trim());
    for (const k of Object.keys(FILTERS)) if (filters[k]) p.set(k, filters[k]);
    return p.toString();
  }

  function writeFragment() {
    history.replaceState(null, "", location.pathname + location.search + "#" + stateString());
  }

  function shareLink() {
    return location.origin + location.pathname + "#" + stateString();
  }

  function settings() {
    const win = $("window").value;
    const f = $("frequency").value;
    return {
      key: sessionStorage.getItem(KEY_STORE) || "",
      window: win,
      frequency: f === "auto" ? AUTO_FREQUENCY[win] || "1h" : f,
      tz: $("tz").value.trim() || browserTz(),
    };
  }

  // The filters an endpoint accepts as query parameters, and the active
  // ones it does not.
  function scoped(accepts) {
    const params = {};
    const ignored = [];
    for (const k of Object.keys(filters)) {
      if (accepts.includes(k)) params[k] = filters[k]; else ignored.push(k);
    }
    return { params, ignored };
  }

  // --- HTTP ---------------------------------------------------------------

  async function request(method, path, key, body) {
    for (let attempt = 0; ; attempt++) {
      let resp;
      try {
        const headers = { "X-API-Key": key, Accept: "application/json" };
        if (body !== undefined) headers["Content-Type"] = "application/json";
        resp = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          cache: "no-store",
          credentials: "omit",
        });
      } catch (_) {
        throw new ApiError(0, "The API could not be reached.", path);
      }
      if (resp.status === 429 && attempt < 2) {
        const wait = Math.min(3, Number(resp.headers.get("Retry-After")) || 1);
        await new Promise((r) => setTimeout(r, wait * 1000));
        continue;
      }
      let json = null;
      try { json = await resp.json(); } catch (_) { /* not JSON */ }
      if (!resp.ok) {
        let detail = json && json.detail;
        if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0] || ""}: ${d.msg}`).join("; ");
        throw new ApiError(resp.status, detail || resp.statusText, path);
      }
      return json;
    }
  }

  const getJson = (path, key) => request("GET", path, key);
  const postJson = (path, key, body) => request("POST", path, key, body);

  function message(err) {
    switch (err.status) {
      case 0: return "Cannot reach the API. Is agentmeter-api running?";
      case 401: return "Key not accepted (HTTP 401): the server does not know this key. Check it and enter it again.";
      case 403: return "This key may not read this (HTTP 403).";
      case 404: return `Not found (HTTP 404): ${err.detail}`;
      case 422: return `The API rejected a setting (HTTP 422): ${err.detail}`;
      case 429: return "Too many requests for this key (HTTP 429); the next refresh will try again.";
      default: return err.status >= 500
        ? `The API failed to answer (HTTP ${err.status}); it will be retried.`
        : `Request failed (HTTP ${err.status}): ${err.detail}`;
    }
  }

  const qs = (params) => new URLSearchParams(params).toString();

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
  const fmtUsd = (v) => (v === null || v === undefined ? "–" : "$" + new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2, maximumFractionDigits: Math.abs(v) < 1 && v !== 0 ? 4 : 2,
  }).format(v));
  const fmtCompact = (v) => (v === null ? "–" : Math.abs(v) >= 10000 ? compact.format(v) : num.format(v));
  // Sums in floating point drift (0.1 + 0.2); the API's own figures have
  // at most six decimals.
  const round6 = (v) => Math.round(v * 1e6) / 1e6;

  const shortId = (id) => (!id || id === NIL ? "(none)" : id.length > 12 ? id.slice(0, 8) + "…" : id);

  // A row's display name: the `*_name` field when the answer carries one,
  // else the id shortened (the full id is always the tooltip).
  function label(item, idKey, nameKey) {
    const id = item[idKey];
    const name = nameKey && typeof item[nameKey] === "string" ? item[nameKey].trim() : "";
    return { id, text: name || shortId(id), title: id };
  }

  // --- charts -------------------------------------------------------------

  function markIgnored(el, ignored) {
    el.dataset.unfiltered = ignored.join(" ");
    let note = el.querySelector(":scope > .unfiltered, :scope > figcaption .unfiltered, :scope > h3 .unfiltered");
    if (note) note.remove();
    if (ignored.length === 0) return;
    note = document.createElement("span");
    note.className = "unfiltered";
    note.textContent = "not filtered by " + ignored.map((k) => FILTERS[k].noun.toLowerCase()).join(", ");
    const host = el.querySelector("figcaption") || el.querySelector("h3") || el.querySelector("h2") || el;
    host.appendChild(note);
  }

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
    return total;
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

  // A grouped /query/timeseries answer: per series total, and per bucket
  // the sum over all series (the "other" series holds the rest, so the sum
  // is the whole).
  function seriesTotals(d) {
    const per = d.series.map((x) => ({ name: x.name, item: x, total: round6(x.points.reduce((a, p) => a + (p[1] || 0), 0)) }));
    const times = d.series.length ? d.series[0].points.map((p) => p[0]) : [];
    const buckets = times.map((_, i) => round6(d.series.reduce((a, x) => a + (x.points[i][1] || 0), 0)));
    const total = round6(per.reduce((a, x) => a + x.total, 0));
    const open = d.open_bucket === null || d.open_bucket === undefined ? -1 : times.indexOf(d.open_bucket);
    return { per, times, buckets, total, partial: open < 0 ? null : open };
  }

  function execChart(id, title, t, s, fmtT, fmt, cls) {
    chart(id, {
      kind: "bar",
      title: `${title} per ${s.frequency} bucket, ${s.tz}`,
      times: t.times,
      series: [{ name: title, values: t.buckets, cls }],
      format: fmt,
      formatTime: fmtT,
      partial: t.partial,
      summary: `${title}: ${fmt(t.total)} in the last ${s.window}.`,
    }, t.total, `${fmt(t.total)} in ${s.window}`);
  }

  function card(id, value, text, note) {
    const c = $(id);
    c.dataset.value = String(value);
    c.querySelector("[data-role=value]").textContent = text;
    c.querySelector("[data-role=note]").textContent = note || "";
    c.classList.remove("failed");
  }

  function cardError(id) {
    const c = $(id);
    delete c.dataset.value;
    c.querySelector("[data-role=value]").textContent = "–";
    c.querySelector("[data-role=note]").textContent = "not available";
    c.classList.add("failed");
  }

  // --- tables -------------------------------------------------------------

  // columns: [{ name, num?, fmt? }]; rows: [{ key, cells, label?, filter? }]
  // where the first cell is the row's label and `filter` = [param, value]
  // makes it a button that filters the page.
  function table(box, caption, columns, rows, holder) {
    box.textContent = "";
    holder.dataset.rows = String(rows.length);
    if (rows.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "Nothing in this window.";
      box.appendChild(p);
      return null;
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
        if (i === 0) {
          const lab = r.label || { text: String(v), title: r.key };
          if (r.filter) {
            const b = document.createElement("button");
            b.type = "button";
            b.className = "filter-link";
            b.textContent = lab.text;
            b.title = `${lab.title} — click to filter the page`;
            b.dataset.filter = r.filter[0];
            b.dataset.value = r.filter[1];
            b.addEventListener("click", () => addFilter(r.filter[0], r.filter[1], lab.text));
            td.appendChild(b);
            if (filters[r.filter[0]] === r.filter[1]) tr.className = "selected";
          } else {
            td.textContent = lab.text;
            td.title = lab.title;
          }
          return;
        }
        td.textContent = col.fmt ? col.fmt(v) : col.num ? num.format(v) : v;
        if (col.num) { td.className = "num"; td.dataset.value = String(v); }
      });
    }
    box.appendChild(t);
    return t;
  }

  function panelTable(id, caption, columns, rows) {
    table($(id).querySelector("[data-role=body]"), caption, columns, rows, $(id));
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

  // A top-N answer: the by-calls list joined with the by-queries counts.
  // `filterKey` names the filter a click sets, taken from the row's
  // `filterField` (rows without it are not clickable).
  function topTable(id, noun, d, listKey, idKey, nameKey, filterKey, filterField) {
    const byCalls = d.data.tool_calls[listKey];
    const queries = new Map(d.data.queries_processed[listKey].map((x) => [x[idKey], x.count]));
    panelTable(id, `Top ${noun} by tool calls`, [{ name: noun }, { name: "Calls", num: true }, { name: "Queries", num: true }],
      byCalls.map((x) => {
        const lab = label(x, idKey, nameKey);
        const fv = filterKey && x[filterField] && x[filterField] !== NIL ? x[filterField] : null;
        if (fv) labels[filterKey + "=" + fv] = lab.text;
        return { key: x[idKey], label: lab, filter: fv ? [filterKey, fv] : null, cells: [lab.text, x.count, queries.get(x[idKey]) || 0] };
      }));
  }

  // Tool calls per navigator instance, from a grouped timeseries: the
  // instance id is what the navigator filter takes.
  function navigatorsTable(d) {
    const rows = seriesTotals(d).per.filter((r) => r.total > 0 && r.name !== "other" && r.name !== NIL);
    rows.sort((a, b) => b.total - a.total || a.name.localeCompare(b.name));
    panelTable("top-navigators", "Top navigator instances by tool calls", [{ name: "Navigator" }, { name: "Calls", num: true }],
      rows.map((r) => {
        const lab = label({ id: r.name, navigator_name: r.item.label }, "id", "navigator_name");
        labels["navigator_instance_id=" + r.name] = lab.text;
        return { key: r.name, label: lab, filter: ["navigator_instance_id", r.name], cells: [lab.text, r.total] };
      }));
  }

  function toolsTable(d) {
    const rows = seriesTotals(d).per.filter((r) => r.total > 0);
    rows.sort((a, b) => (a.name === "other") - (b.name === "other") || b.total - a.total || a.name.localeCompare(b.name));
    panelTable("top-tools", "Top tools by tool calls", [{ name: "Tool" }, { name: "Calls", num: true }],
      rows.map((r) => {
        const other = r.name === "other";
        const text = other ? "(all other tools)" : (r.item.tool_name || r.name);
        return { key: r.name, label: { text, title: r.name }, filter: other ? null : ["tool_name", r.name], cells: [text, r.total] };
      }));
  }

  function usersTable(d) {
    panelTable("top-users", "Top users by tool calls", [{ name: "User" }, { name: "Calls", num: true }],
      d.data.users.map((u) => ({
        key: u.user_email,
        label: { text: u.user_email || "(no e-mail)", title: u.user_email },
        filter: u.user_email ? ["user_email", u.user_email] : null,
        cells: [u.user_email || "(no e-mail)", u.tool_count],
      })));
  }

  // --- organizations and limits ---------------------------------------------

  const METRIC_NAMES = {
    tokens: "Tokens", input_tokens: "Input tokens", output_tokens: "Output tokens", messages: "Messages",
    cost_usd: "Cost", executions: "Executions", tool_calls: "Tool calls",
  };
  const NOT_METRICS = new Set(["extra_usage", "as_of", "staleness_ms"]);

  function orgLabel(id) {
    if (id === "other") return { text: "(other organizations)", title: "every organization not listed" };
    if (id === NIL) return { text: "(no organization)", title: id };
    return { text: labels["organization=" + id] || shortId(id), title: id };
  }

  function amount(v, metric) {
    if (v === null || v === undefined) return "–";
    if (v === "unlimited") return "unlimited";
    const n = Number(v);
    if (!Number.isFinite(n)) return String(v);
    return metric === "cost_usd" ? fmtUsd(n) : num.format(n);
  }

  // Usage per organization in the window (messages, tokens in total, input
  // and output, cost) and, from the usage counters, input and output tokens
  // of the current period.
  function orgsTable(exec, current) {
    const byOrg = new Map();
    for (const [metric, t] of Object.entries(exec)) {
      for (const r of t.per) {
        if (!byOrg.has(r.name)) byOrg.set(r.name, { tokens: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, messages: 0 });
        byOrg.get(r.name)[metric] = r.total;
        if (r.item.organization_name) labels["organization=" + r.name] = r.item.organization_name;
      }
    }
    const rows = [...byOrg.entries()].filter(([, v]) => v.tokens || v.cost_usd || v.messages);
    rows.sort((a, b) => (a[0] === "other") - (b[0] === "other") || b[1].cost_usd - a[1].cost_usd || b[1].tokens - a[1].tokens || a[0].localeCompare(b[0]));
    const cur = (id, k) => (current.has(id) && current.get(id) ? current.get(id).usage.tokens[k] : null);
    const box = $("orgs").querySelector("[data-role=body]");
    table(box, "Usage per organization", [
      { name: "Organization" },
      { name: "Messages", num: true },
      { name: "Tokens", num: true },
      { name: "Input tokens", num: true },
      { name: "Output tokens", num: true },
      { name: "Cost", num: true, fmt: fmtUsd },
      { name: "Input tokens, this month", num: true, fmt: (v) => (v === null ? "–" : num.format(v)) },
      { name: "Output tokens, this month", num: true, fmt: (v) => (v === null ? "–" : num.format(v)) },
    ], rows.map(([id, v]) => ({
      key: id,
      label: orgLabel(id),
      cells: [orgLabel(id).text, v.messages, v.tokens, v.input_tokens, v.output_tokens, v.cost_usd, cur(id, "input"), cur(id, "output")],
    })), $("orgs"));
  }

  function limitsMessage(text, cls) {
    const box = $("limits");
    box.textContent = "";
    delete box.dataset.rows;
    const p = document.createElement("p");
    p.className = cls || "muted";
    p.textContent = text;
    box.appendChild(p);
  }

  // The organizations whose limit status is shown: every organization a
  // limit names (the list needs an admin key) and every one with usage in
  // the window.
  async function limitOrgs(s, usageOrgs) {
    const orgs = new Set();
    let note = null;
    let limits = [];
    try {
      const l = await getJson("/v1/limits", s.key);
      limits = l.limits || [];
      for (const x of limits) if (x.organization_id) orgs.add(x.organization_id);
    } catch (e) {
      if (e.status === 403) {
        note = "Listing the limits needs an admin key (HTTP 403); showing the organizations with usage in this window.";
      } else if (e.status !== 401) {
        note = "Limits could not be listed: " + message(e);
      } else {
        throw e;
      }
    }
    for (const o of usageOrgs) if (o !== "other" && o !== NIL) orgs.add(o);
    return { orgs: [...orgs].slice(0, MAX_ORGS), note, more: orgs.size > MAX_ORGS };
  }

  // One organization's limit status: the limited metrics (from the
  // Organizations usage endpoint) and, per metric, used / limit / remaining
  // / reset of the deciding limit, from a plan-limit check for the smallest
  // amount (a question only: nothing is reserved or consumed).
  async function orgLimitStatus(org, s) {
    const usage = await getJson(`/api/organizations/${encodeURIComponent(org)}/usage`, s.key);
    const metrics = Object.keys(usage).filter((k) => !NOT_METRICS.has(k) && usage[k] && typeof usage[k] === "object");
    const out = [];
    for (const m of metrics) {
      const c = await postJson("/v1/usage/check", s.key, { organization_id: org, usage_type: m, tokens: m === "cost_usd" ? "0.000001" : 1 });
      out.push({ org, metric: m, utilization: usage[m].utilization, check: c });
    }
    return out;
  }

  function renderLimits(rows, s) {
    const box = $("limits");
    box.textContent = "";
    box.dataset.rows = String(rows.length);
    const t = document.createElement("table");
    t.className = "limits";
    const cap = document.createElement("caption");
    cap.className = "visually-hidden";
    cap.textContent = "Limit status per organization";
    t.appendChild(cap);
    const hr = t.createTHead().insertRow();
    for (const [name, isNum] of [["Organization"], ["Metric"], ["Used", 1], ["Limit", 1], ["Remaining", 1], ["Utilization"], ["Resets at"]]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      if (isNum) th.className = "num";
      hr.appendChild(th);
    }
    const tb = t.createTBody();
    for (const r of rows) {
      const c = r.check;
      const tr = tb.insertRow();
      tr.dataset.org = r.org;
      tr.dataset.metric = r.metric;
      tr.dataset.used = String(c.current_usage);
      tr.dataset.max = String(c.max_limit);
      tr.dataset.remaining = String(c.remaining);
      const lab = orgLabel(r.org);
      const o = tr.insertCell();
      o.textContent = lab.text;
      o.title = lab.title;
      tr.insertCell().textContent = METRIC_NAMES[r.metric] || r.metric;
      for (const v of [c.current_usage, c.max_limit, c.remaining]) {
        const td = tr.insertCell();
        td.className = "num";
        td.textContent = amount(v, r.metric);
      }
      const util = r.utilization === null || r.utilization === undefined ? 0 : r.utilization;
      const td = tr.insertCell();
      const meter = document.createElement("meter");
      meter.min = 0; meter.max = 100; meter.low = 80; meter.high = 95; meter.optimum = 0; meter.value = Math.min(100, util);
      meter.setAttribute("aria-label", `${METRIC_NAMES[r.metric] || r.metric} utilization`);
      td.appendChild(meter);
      td.appendChild(document.createTextNode(" " + num2.format(util) + " %"));
      tr.dataset.utilization = String(util);
      if (Number(c.remaining) <= 0) tr.className = "over";
      else if (c.soft_limit_reached) tr.className = "soft";
      const reset = tr.insertCell();
      reset.className = "resets";
      reset.dataset.resetsAt = c.resets_at || "";
      reset.textContent = fullTime(c.resets_at, s.tz);
    }
    box.appendChild(t);
  }

  async function loadOrgsAndLimits(s, exec, gen) {
    const usageOrgs = new Set();
    for (const t of Object.values(exec)) for (const r of t.per) if (r.total) usageOrgs.add(r.name);
    const { orgs, note, more } = await limitOrgs(s, usageOrgs);
    const current = new Map();
    const status = [];
    const failures = [];
    await Promise.all(orgs.map(async (org) => {
      const [cur, lim] = await Promise.allSettled([
        getJson(`/v1/api/usage/current?${qs({ organization_id: org })}`, s.key),
        orgLimitStatus(org, s),
      ]);
      current.set(org, cur.status === "fulfilled" ? cur.value : null);
      if (lim.status === "fulfilled") status.push(...lim.value); else failures.push(lim.reason);
    }));
    if (gen !== generation) return;
    orgsTable(exec, current);
    status.sort((a, b) => orgLabel(a.org).text.localeCompare(orgLabel(b.org).text) || a.org.localeCompare(b.org) || a.metric.localeCompare(b.metric));
    if (status.length > 0) renderLimits(status, s);
    else if (failures.length > 0) limitsMessage("Limit status: " + message(failures[0]), "error");
    else if (orgs.length === 0) limitsMessage("No organization has usage in this window.");
    else limitsMessage("No limits apply to these organizations.");
    const notes = [];
    if (note) notes.push(note);
    if (more) notes.push(`Showing the first ${MAX_ORGS} organizations.`);
    if (status.length > 0 && failures.length > 0) notes.push("Some organizations' limits could not be read: " + message(failures[0]));
    notes.push("Limits count all of an organization's usage: the page's filters do not apply here.");
    for (const n of notes) {
      const p = document.createElement("p");
      p.className = n === note && note.includes("403") ? "notice" : "muted";
      p.textContent = n;
      $("limits").appendChild(p);
    }
    $("limits").dataset.listed = note ? "usage" : "limits";
  }

  // --- filters --------------------------------------------------------------

  function addFilter(k, v, text) {
    filters[k] = v;
    if (text) labels[k + "=" + v] = text;
    writeFragment();
    renderChips();
    refresh();
  }

  function removeFilter(k) {
    delete filters[k];
    writeFragment();
    renderChips();
    refresh();
  }

  function renderChips() {
    const box = $("filters");
    box.textContent = "";
    const keys = Object.keys(FILTERS).filter((k) => filters[k]);
    box.dataset.count = String(keys.length);
    for (const k of keys) {
      const v = filters[k];
      const text = labels[k + "=" + v] || (PLAIN.has(k) ? v : shortId(v));
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.dataset.filter = k;
      chip.dataset.value = v;
      chip.title = `${k}=${v}`;
      chip.appendChild(document.createTextNode(`${FILTERS[k].noun}: ${text}`));
      const x = document.createElement("button");
      x.type = "button";
      x.className = "chip-remove";
      x.textContent = "×";
      x.setAttribute("aria-label", `Remove filter ${FILTERS[k].noun} ${text}`);
      x.addEventListener("click", () => removeFilter(k));
      chip.appendChild(x);
      box.appendChild(chip);
    }
    if (keys.length > 1) {
      const all = document.createElement("button");
      all.type = "button";
      all.className = "secondary clear";
      all.textContent = "Clear filters";
      all.addEventListener("click", () => { for (const k of keys) delete filters[k]; writeFragment(); renderChips(); refresh(); });
      box.appendChild(all);
    }
  }

  // --- refresh ------------------------------------------------------------

  function setStatus(text, kind) {
    const st = $("status");
    st.textContent = text;
    st.className = "status" + (kind ? " " + kind : "");
  }

  async function refresh(fromTimer) {
    const s = settings();
    if (!s.key) {
      document.body.dataset.state = "nokey";
      setStatus("Enter an API key to see usage.", "info");
      return;
    }
    if (fromTimer && running) return;
    running = true;
    const gen = ++generation;
    document.body.dataset.state = "loading";
    const fmtT = timeFormatter(s);
    const a = "/api/v1/analytics/";
    const graph = (path, acc) => {
      const sc = scoped(acc);
      return { ignored: sc.ignored, p: getJson(a + path + "?" + qs({ window: s.window, frequency: s.frequency, tz: s.tz, ...sc.params }), s.key) };
    };
    const top = (path, acc) => {
      const sc = scoped(acc);
      return { ignored: sc.ignored, p: getJson(a + path + "?" + qs({ window: s.window, tz: s.tz, limit: 10, ...sc.params }), s.key) };
    };
    const series = (metric, group, acc, n) => {
      const sc = scoped(acc);
      return { ignored: sc.ignored, p: getJson("/api/v1/query/timeseries?" + qs({ metric, group_by: group, top: n, window: s.window, step: s.frequency, tz: s.tz, ...sc.params }), s.key) };
    };
    const jobs = {
      tokens: series("tokens", "organization", ACCEPTS.execSeries, MAX_ORGS),
      input: series("input_tokens", "organization", ACCEPTS.execSeries, MAX_ORGS),
      output: series("output_tokens", "organization", ACCEPTS.execSeries, MAX_ORGS),
      cost: series("cost_usd", "organization", ACCEPTS.execSeries, MAX_ORGS),
      messages: series("messages", "organization", ACCEPTS.execSeries, MAX_ORGS),
      calls: graph("tool-calls-processed-graph", ACCEPTS.countGraph),
      queries: graph("queries-processed-graph", ACCEPTS.countGraph),
      errors: graph("error-rate-graph", ACCEPTS.graph),
      latency: graph("average-tool-call-latency-graph", ACCEPTS.graph),
      servers: top("top-servers", ACCEPTS.topServers),
      projects: top("top-projects", ACCEPTS.topProjects),
      navigators: series("tool_calls", "navigator", ACCEPTS.callSeries, 10),
      tools: series("tool_calls", "tool", ACCEPTS.callSeries, 10),
      users: top("users", ACCEPTS.users),
    };
    const names = Object.keys(jobs);
    const settled = await Promise.allSettled(names.map((n) => jobs[n].p));
    if (gen !== generation) return;
    const r = {};
    const errors = [];
    names.forEach((n, i) => { r[n] = settled[i]; if (settled[i].status === "rejected") errors.push(settled[i].reason); });
    const draw = (name, el, ok, fail) => {
      const x = r[name];
      markIgnored($(el), jobs[name].ignored);
      if (x.status === "fulfilled") {
        try { ok(x.value); } catch (e) { fail("Unexpected answer from the API."); console.error(e); }
      } else {
        // A rejected key is said once, in the status line.
        fail(x.reason.status === 401 ? "Not shown: key not accepted." : message(x.reason));
      }
    };
    const exec = {};
    const execPanel = (name, metric, cardId, chartId, title, fmt, cls) => draw(name, chartId, (d) => {
      const t = seriesTotals(d);
      exec[metric] = t;
      execChart(chartId, title, t, s, fmtT, fmt, cls);
      card(cardId, t.total, fmt === fmtUsd ? fmtUsd(t.total) : fmtCompact(t.total), `in the last ${s.window}`);
      markIgnored($(cardId), jobs[name].ignored);
    }, (m) => { chartError(chartId, m); cardError(cardId); });
    execPanel("tokens", "tokens", "card-tokens", "chart-tokens", "Tokens", (v) => num.format(v), "s1");
    execPanel("cost", "cost_usd", "card-cost", "chart-cost", "Cost", fmtUsd, "s2");
    // Input and output tokens: per organization, and on the tokens card.
    for (const [name, metric] of [["input", "input_tokens"], ["output", "output_tokens"]]) {
      draw(name, "card-tokens", (d) => { exec[metric] = seriesTotals(d); }, () => {});
    }
    if (exec.tokens && exec.input_tokens && exec.output_tokens) {
      const c = $("card-tokens");
      c.dataset.input = String(exec.input_tokens.total);
      c.dataset.output = String(exec.output_tokens.total);
      c.querySelector("[data-role=note]").textContent =
        `${fmtCompact(exec.input_tokens.total)} in · ${fmtCompact(exec.output_tokens.total)} out, last ${s.window}`;
    }
    draw("messages", "card-messages", (d) => {
      const t = seriesTotals(d);
      exec.messages = t;
      card("card-messages", t.total, fmtCompact(t.total), `in the last ${s.window}`);
    }, () => cardError("card-messages"));
    draw("calls", "chart-tool-calls", (d) => {
      const total = countChart("chart-tool-calls", "Tool calls", d, s, fmtT);
      card("card-calls", total, fmtCompact(total), `in the last ${s.window}`);
      markIgnored($("card-calls"), jobs.calls.ignored);
    }, (m) => { chartError("chart-tool-calls", m); cardError("card-calls"); });
    draw("queries", "chart-queries", (d) => countChart("chart-queries", "Queries", d, s, fmtT), (m) => chartError("chart-queries", m));
    draw("errors", "chart-error-rate", (d) => errorRateChart(d, s, fmtT), (m) => chartError("chart-error-rate", m));
    draw("latency", "chart-latency", (d) => latencyChart(d, s, fmtT), (m) => chartError("chart-latency", m));
    // Servers filter by server_id, the id top-servers lists.
    draw("servers", "top-servers", (d) => topTable("top-servers", "Server", d, "servers", "server_id", "server_name", "server_id", "server_id"), (m) => tableError("top-servers", m));
    draw("projects", "top-projects", (d) => topTable("top-projects", "Project", d, "projects", "project_id", "project_name", "project_id", "project_id"), (m) => tableError("top-projects", m));
    draw("navigators", "top-navigators", navigatorsTable, (m) => tableError("top-navigators", m));
    draw("tools", "top-tools", toolsTable, (m) => tableError("top-tools", m));
    draw("users", "top-users", usersTable, (m) => tableError("top-users", m));
    renderChips();

    const unauthorized = errors.find((e) => e.status === 401);
    if (unauthorized) {
      running = false;
      document.body.dataset.state = "unauthorized";
      setStatus(message(unauthorized), "error");
      limitsMessage("Not shown: key not accepted.", "error");
      $("key").focus();
      return;
    }
    try {
      if (exec.tokens && exec.cost_usd && exec.messages) await loadOrgsAndLimits(s, exec, gen);
      else limitsMessage("Not shown: usage per organization could not be read.", "error");
    } catch (e) {
      if (gen === generation) limitsMessage("Limit status: " + message(e), "error");
    }
    running = false;
    if (gen !== generation) return;
    if (errors.length > 0) {
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
    if ($("auto").checked) timer = setInterval(() => { if (!document.hidden) refresh(true); }, REFRESH_MS);
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
    renderChips();
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
    for (const id of ["window", "frequency", "tz"]) $(id).addEventListener("change", () => { writeFragment(); refresh(); });
    // A pasted or edited link: take its state.
    window.addEventListener("hashchange", () => { readFragment(); renderChips(); refresh(); });
    $("share").addEventListener("click", () => {
      const link = shareLink();
      $("share-box").hidden = false;
      $("share-link").value = link;
      $("share-link").select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(link).then(() => setStatus("Link copied (it does not contain the key).", "info"), () => {});
      }
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      $("key").value = "";
      $("key").placeholder = "am_...";
      setStatus("Key forgotten.", "info");
      document.body.dataset.state = "nokey";
    });
    $("auto").addEventListener("change", schedule);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(true); });
    schedule();
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
