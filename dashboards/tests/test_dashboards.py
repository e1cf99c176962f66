"""Static checks of the shipped Grafana dashboards, their provisioning and the
Prometheus alert rules against the services' source code.

A dashboard that asks for a route, a query parameter, a metric name or a
data source that does not exist shows "No data" or an error only when
someone looks at it; these tests catch that at build time:

* every Infinity (agentmeter-api) panel and variable URL matches a GET route
  registered in query-api/src (`.route("...")`), uses only query parameters
  that route reads (the OpenAPI document when it lists them, else the
  handlers' parameter struct), and only `metric` / `group_by` values the
  time-series endpoint knows;
* every `agentmeter_*` name in a Prometheus panel or alert rule is a metric
  the services register (ingest/src, query-api/src), histograms with their
  `_bucket` / `_sum` / `_count` series;
* the provisioning files parse, their data source uids are unique and are
  the ones the dashboards use, and the dashboard provider's folder is the
  one holding the dashboards (via the docker-compose volume mapping).

Run: .stack/venv/bin/python -m pytest dashboards/tests
"""

import json
import re
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
PROMETHEUS = ROOT / "dashboards" / "prometheus"
API_SRC = ROOT / "query-api" / "src"
INGEST_SRC = ROOT / "ingest" / "src"
INFINITY = "yesoreyeram-infinity-datasource"
SAMPLE_UUID = "11111111-1111-4111-8111-111111111111"
GRAFANA_BUILTINS = {"__from": "1700000000000", "__to": "1700086400000"}


# --- what the source registers ------------------------------------------------

def rust_files(*dirs):
    for d in dirs:
        yield from sorted(d.rglob("*.rs"))


def api_routes():
    """{path template: set of methods} the API serves: every operation of the
    OpenAPI document (the API registers its routes together with their
    entries, so the document lists them all) and the web UI's static files
    (the `.route(...)` calls left in query-api/src)."""
    routes = {}
    doc = json.loads((API_SRC / "openapi.json").read_text(encoding="utf-8"))
    for path, item in doc.get("paths", {}).items():
        routes.setdefault(path, set()).update(m.upper() for m in item if m in ("get", "post", "put", "delete", "patch"))
    for f in rust_files(API_SRC):
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r'\.route\(\s*"([^"]+)"\s*,\s*', text):
            # The handler expression runs to the end of the route call.
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            handlers = text[m.end():i]
            methods = {meth.upper() for meth in re.findall(r"\b(get|post|put|delete|patch)\(", handlers)}
            routes.setdefault(m.group(1), set()).update(methods)
    return routes


def route_regex(template):
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def match_route(routes, path):
    hits = [t for t in routes if route_regex(t).match(path)]
    # Prefer a literal route over a templated one, as axum does.
    hits.sort(key=lambda t: t.count("{"))
    return hits[0] if hits else None


def openapi_query_params():
    """{path: set of query parameter names} of GET operations the OpenAPI
    document describes with parameters."""
    doc = json.loads((API_SRC / "openapi.json").read_text(encoding="utf-8"))
    out = {}
    for path, item in doc.get("paths", {}).items():
        op = item.get("get")
        if not op:
            continue
        params = [p for p in op.get("parameters", []) + item.get("parameters", []) if "$ref" not in p]
        names = {p["name"] for p in params if p.get("in") == "query"}
        if names:
            out[path] = names
    return out


def raw_params_fields():
    """Fields of `RawParams`, the query parameters every analytics handler reads."""
    text = (API_SRC / "params.rs").read_text(encoding="utf-8")
    m = re.search(r"pub struct RawParams\s*\{(.*?)\n\}", text, re.S)
    assert m, "RawParams not found in query-api/src/params.rs"
    return set(re.findall(r"pub (\w+):", m.group(1)))


def usage_query_names():
    """Query parameters the usage handlers read from their HashMap."""
    names = set()
    for f in rust_files(API_SRC / "usage"):
        text = f.read_text(encoding="utf-8")
        names.update(re.findall(r'q\.get\("([a-z_]+)"\)', text))
        names.update(re.findall(r'query_uuid\(&q,\s*"([a-z_]+)"', text))
    return names


def allowed_query_params(template):
    documented = openapi_query_params().get(template)
    if documented:
        return documented
    if template.startswith("/api/v1/"):
        return raw_params_fields()
    return usage_query_names()


def timeseries_vocabulary():
    (path,) = API_SRC.rglob("queries/**/timeseries.rs")  # wherever the query modules are grouped
    text = path.read_text(encoding="utf-8")
    metrics = re.search(r'METRIC_NAMES: &str =\s*"([^"]+)"', text)
    groups = re.search(r'GROUP_BY_NAMES: &str =\s*"([^"]+)"', text)
    assert metrics and groups, "METRIC_NAMES / GROUP_BY_NAMES not found in queries/timeseries.rs"
    split = lambda s: {x.strip() for x in s.split(",")}
    return {"metric": split(metrics.group(1)), "group_by": split(groups.group(1)), "format": {"series", "table"}}


def registered_metrics():
    """Series names the services expose: every `"agentmeter_..."` literal in
    their source; histograms (declared within a few lines of a
    `histogram`/`HistogramOpts` mention) as `_bucket`, `_sum`, `_count`."""
    names = set()
    for f in rust_files(INGEST_SRC, API_SRC):
        lines = f.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            for name in re.findall(r'"(agentmeter_[a-z0-9_]+)"', line):
                context = " ".join(lines[max(0, i - 3): i + 1]).lower()
                if "histogram" in context:
                    names.update({name + "_bucket", name + "_sum", name + "_count"})
                else:
                    names.add(name)
    assert len(names) > 10, "metric registrations not found"
    return names


# --- what the dashboards ask for ------------------------------------------------

def dashboard_files():
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    return files


def load_dashboard(path):
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def ds_uid(ds):
    return ds.get("uid") if isinstance(ds, dict) else ds


def ds_type(ds):
    return ds.get("type") if isinstance(ds, dict) else None


def variable_samples(dash):
    """{name: [values to try]} for each dashboard variable."""
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        name, kind = v["name"], v.get("type")
        if kind == "query" and ds_type(v.get("datasource")) == INFINITY:
            q = v.get("query") or {}
            selector = q.get("root_selector", "") if isinstance(q, dict) else ""
            # A filter variable: values are "&<param>=<id>" fragments, "All" is allValue.
            frags = re.findall(r'"&([a-z_]+)="', selector)
            values = [f"&{p}={SAMPLE_UUID}" for p in frags] or [SAMPLE_UUID]
            if v.get("includeAll"):
                values.append(v.get("allValue") or "")
            out[name] = values
        elif kind == "custom":
            out[name] = [o["value"] for o in v.get("options", [])] or [x.strip() for x in v.get("query", "").split(",")]
        elif kind in ("textbox", "constant"):
            default = v.get("query") or ""
            out[name] = [default or (SAMPLE_UUID if name.endswith("_id") else "x")]
        else:
            out[name] = ["x"]
    return out


def expand(template, samples):
    """Every expansion of a URL template (one per value of each variable)."""
    results = [template]
    pattern = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")
    for _ in range(10):
        nxt = []
        for url in results:
            m = pattern.search(url)
            if not m:
                nxt.append(url)
                continue
            name = m.group(1) or m.group(2)
            if name in GRAFANA_BUILTINS:
                values = [GRAFANA_BUILTINS[name]]
            elif name in samples:
                values = samples[name]
            else:
                raise AssertionError(f"unknown variable ${name} in {template}")
            nxt.extend(url[: m.start()] + val + url[m.end():] for val in values)
        if nxt == results:
            break
        results = nxt
    return results


def infinity_queries(dash):
    """(where, query dict) of every Infinity panel target and variable query."""
    for p in all_panels(dash):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource")
            if ds_type(ds) == INFINITY or ds_uid(ds) == "agentmeter-api":
                yield f"panel {p.get('title')!r} target {t.get('refId')}", t
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query" and ds_type(v.get("datasource")) == INFINITY:
            yield f"variable {v['name']!r}", v["query"]


def prometheus_exprs(dash):
    for p in all_panels(dash):
        for t in p.get("targets", []):
            if "expr" in t:
                yield f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]


def check_infinity_url(where, query, samples, routes, problems):
    url = query.get("url", "")
    if query.get("source", "url") != "url":
        return
    if not url.startswith("/"):
        problems.append(f"{where}: URL {url!r} must be a path relative to the data source (the API base URL)")
        return
    method = (query.get("url_options") or {}).get("method", "GET").upper()
    extra = [(p["key"], p["value"]) for p in (query.get("url_options") or {}).get("params", [])]
    vocab = timeseries_vocabulary()
    for concrete in expand(url, samples):
        parts = urllib.parse.urlsplit(concrete)
        template = match_route(routes, parts.path)
        if template is None:
            problems.append(f"{where}: no route for {parts.path!r} (from {url!r})")
            continue
        if method not in routes[template]:
            problems.append(f"{where}: {template} has no {method} handler")
        allowed = allowed_query_params(template)
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + [
            (k, v) for k, vs in [(k, expand(v, samples)) for k, v in extra] for v in vs
        ]
        seen = set()
        for k, v in pairs:
            if k in seen:
                problems.append(f"{where}: parameter {k!r} repeated in {concrete!r} (the API rejects it)")
            seen.add(k)
            if k not in allowed:
                problems.append(f"{where}: {template} does not read query parameter {k!r} (reads: {sorted(allowed)})")
            elif v == "":
                problems.append(f"{where}: empty value for {k!r} in {concrete!r} (the API rejects it)")
            elif template == "/api/v1/query/timeseries" and k in vocab and v not in vocab[k]:
                problems.append(f"{where}: {k}={v!r} is not one of {sorted(vocab[k])}")


# --- tests ----------------------------------------------------------------------

def provisioned_datasources():
    doc = yaml.safe_load((PROVISIONING / "datasources" / "agentmeter.yml").read_text())
    return {d["uid"]: d for d in doc["datasources"]}


def test_source_parsers_find_what_they_look_for():
    routes = api_routes()
    assert "/api/v1/query/timeseries" in routes and "GET" in routes["/api/v1/query/timeseries"]
    assert "/" in routes, "the usage page route"
    assert {"window", "from", "to", "tz", "metric", "group_by"} <= raw_params_fields()
    assert "organization_id" in usage_query_names()
    assert "agentmeter_api_request_duration_seconds_bucket" in registered_metrics()
    assert "agentmeter_api_request_duration_seconds" not in registered_metrics()
    assert "tool_calls" in timeseries_vocabulary()["metric"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_is_well_formed(path):
    dash = load_dashboard(path)
    assert dash.get("uid") and dash.get("title"), "uid and title are required"
    assert len(dash["uid"]) <= 40, "Grafana uids are at most 40 characters"
    uids = provisioned_datasources()
    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in all_panels(dash):
        if p.get("type") == "row":
            continue
        assert p.get("title"), f"panel {p.get('id')} has no title"
        g = p.get("gridPos", {})
        assert {"x", "y", "w", "h"} <= set(g) and g["x"] + g["w"] <= 24, f"panel {p['title']!r}: bad gridPos {g}"
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
            if ds is None:
                continue
            assert ds_uid(ds) in uids, f"panel {p['title']!r} uses data source {ds_uid(ds)!r}, not provisioned"
            if ds_type(ds):
                assert ds_type(ds) == uids[ds_uid(ds)]["type"], f"panel {p['title']!r}: data source type mismatch"
        assert p.get("targets"), f"panel {p['title']!r} has no queries"
    for v in dash.get("templating", {}).get("list", []):
        if v.get("datasource"):
            assert ds_uid(v["datasource"]) in uids, f"variable {v['name']!r} uses an unknown data source"


def test_dashboard_uids_are_unique():
    uids = [load_dashboard(p)["uid"] for p in dashboard_files()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_infinity_panels_use_real_routes_and_parameters(path):
    dash = load_dashboard(path)
    routes = api_routes()
    samples = variable_samples(dash)
    problems = []
    for where, q in infinity_queries(dash):
        check_infinity_url(where, q, samples, routes, problems)
    assert not problems, "\n".join(dict.fromkeys(problems))


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_prometheus_panels_use_registered_metrics(path):
    registered = registered_metrics()
    problems = []
    for where, expr in prometheus_exprs(load_dashboard(path)):
        names = re.findall(r"\bagentmeter_[a-z0-9_]+", expr)
        if not names:
            problems.append(f"{where}: no agentmeter_* metric in {expr!r}")
        problems += [f"{where}: {n} is not registered by any service" for n in names if n not in registered]
    assert not problems, "\n".join(problems)


def test_alert_rules_use_registered_metrics():
    registered = registered_metrics()
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    problems, count = [], 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule.get("alert") and rule.get("expr"), f"rule without alert/expr in {group['name']}"
            names = re.findall(r"\bagentmeter_[a-z0-9_]+", str(rule["expr"]))
            count += len(names)
            problems += [f"alert {rule['alert']}: {n} is not registered by any service" for n in names if n not in registered]
    assert count > 0
    assert not problems, "\n".join(problems)


def test_prometheus_config_references_existing_rule_files():
    doc = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for f in doc.get("rule_files", []):
        assert (PROMETHEUS / f).is_file(), f"rule file {f} does not exist"
    assert doc.get("scrape_configs"), "no scrape configs"


def test_datasource_provisioning():
    doc = yaml.safe_load((PROVISIONING / "datasources" / "agentmeter.yml").read_text())
    assert doc["apiVersion"] == 1
    uids = [d["uid"] for d in doc["datasources"]]
    assert len(uids) == len(set(uids)), "data source uids must be unique"
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert by_uid["agentmeter-api"]["type"] == INFINITY
    assert by_uid["prometheus"]["type"] == "prometheus"
    for d in doc["datasources"]:
        assert d.get("name") and d.get("type") and d.get("url"), f"data source {d['uid']} incomplete"
    # Every provisioned data source is used by some dashboard.
    used = {ds_uid(p.get("datasource")) for path in dashboard_files() for p in all_panels(load_dashboard(path))}
    assert set(uids) <= used, f"unused data sources: {set(uids) - used}"


def compose_mounts():
    """{container path: repo path} of the grafana service's bind mounts."""
    out = {}
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for m in re.finditer(r"^\s*-\s*\./(dashboards/grafana/[^:\s]+):(/[^:\s]+)(?::ro)?\s*$", text, re.M):
        out[m.group(2)] = ROOT / m.group(1)
    return out


def test_dashboard_provider_points_at_the_dashboards():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "agentmeter.yml").read_text())
    assert doc["apiVersion"] == 1
    mounts = compose_mounts()
    assert mounts.get("/etc/grafana/provisioning") == PROVISIONING, "provisioning is not mounted where Grafana reads it"
    for prov in doc["providers"]:
        assert prov.get("name") and prov.get("folder"), "provider needs a name and a folder"
        assert prov.get("type") == "file"
        path = prov["options"]["path"]
        assert path in mounts, f"provider path {path} is not a mounted folder"
        folder = mounts[path]
        assert folder == DASHBOARDS and folder.is_dir()
        assert sorted(folder.glob("*.json")) == dashboard_files()
