"""docker-compose.yml is checked without a Docker engine: its structure, that
every agentmeter service's command flags and environment variables are ones
the binary really accepts (read from the built binary's --help), and that the
API replicas, Valkey, the HAProxy load balancer (deploy/haproxy.cfg, checked
by `haproxy -c`) and Prometheus's scrape targets fit together.

Needs the debug binaries (`cargo build --bins`) and Debian's haproxy;
./dev/test installs haproxy and runs this after the build.
"""

import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
BINARIES = ["agentmeter-migrate", "agentmeter-ingest", "agentmeter-api", "agentmeter-loadgen"]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
# The services that run agentmeter-api, and the load balancer in front of them.
REPLICAS = sorted(name for name, s in SERVICES.items() if (s.get("command") or [None])[0] == "agentmeter-api")
LB = SERVICES["api"]


def help_text(binary):
    path = ROOT / "target" / "debug" / binary
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --bins` first")
    return subprocess.run([str(path), "--help"], check=True, capture_output=True, text=True).stdout


HELP = {}


def accepted(binary):
    if binary not in HELP:
        text = help_text(binary)
        flags = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))
        env = set(re.findall(r"\[env: ([A-Z0-9_]+)=?", text))
        HELP[binary] = (flags, env)
    return HELP[binary]


def test_every_service_of_the_design_is_there():
    expected = {"kafka", "clickhouse", "valkey", "migrate", "ingest", "api-1", "api-2", "api", "loadgen", "prometheus", "grafana"}
    assert expected <= set(SERVICES), expected - set(SERVICES)
    assert SERVICES["loadgen"].get("profiles") == ["demo"]
    assert SERVICES["migrate"].get("restart") == "no"


def test_images_are_pinned():
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned"


def test_dependencies_exist_and_wait_for_health():
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            condition = cond["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy, but it has no healthcheck"
    for name in ["kafka", "clickhouse", "valkey", "ingest", "api-1", "api-2", "api"]:
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
    # Nothing reads ClickHouse before the schema exists, nor Valkey before it answers.
    for name in ["ingest", *REPLICAS]:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in REPLICAS:
        assert SERVICES[name]["depends_on"]["valkey"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["migrate", "ingest", "api-1", "api-2", "loadgen"])
def test_commands_and_environment_match_the_binaries(name):
    service = SERVICES[name]
    command = service["command"]
    binary = command[0]
    assert binary in BINARIES, f"{name} runs {binary}"
    flags, env = accepted(binary)
    for arg in command[1:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in flags, f"{name}: {binary} has no flag {arg}"
    for var in service.get("environment") or {}:
        if var.startswith("AGENTMETER_"):
            assert var in env, f"{name}: {binary} does not read {var}"


def test_health_checks_use_real_endpoints_and_ports():
    for name in REPLICAS:
        api_env = SERVICES[name]["environment"]
        assert api_env["AGENTMETER_API_ADDR"].endswith(":8080")
        assert "localhost:8080/health" in " ".join(SERVICES[name]["healthcheck"]["test"])
    assert "localhost:8080/health" in " ".join(LB["healthcheck"]["test"])
    ingest_env = SERVICES["ingest"]["environment"]
    assert ingest_env["AGENTMETER_INGEST_METRICS_ADDR"].endswith(":9464")
    assert "localhost:9464/health" in " ".join(SERVICES["ingest"]["healthcheck"]["test"])


def test_prometheus_scrapes_every_replica_on_its_own():
    scrape = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]} for job in scrape["scrape_configs"]}
    assert jobs == {"agentmeter-ingest": {"ingest:9464"}, "agentmeter-api": {f"{name}:8080" for name in REPLICAS}}
    # Prometheus starts once every scraped service is up.
    assert set(SERVICES["prometheus"]["depends_on"]) >= {"ingest", *REPLICAS}


def test_two_api_replicas_share_valkey():
    assert REPLICAS == ["api-1", "api-2"]
    assert SERVICES["api-1"] == SERVICES["api-2"], "the replicas must be configured alike"
    assert SERVICES["valkey"]["image"].startswith("valkey/valkey:")
    for name in REPLICAS:
        assert SERVICES[name]["environment"]["AGENTMETER_VALKEY_URL"] == "redis://valkey:6379"
        assert "ports" not in SERVICES[name], f"{name} is reached through the load balancer only"


def haproxy_config():
    """(env var of the bind address, env vars of the server addresses) in deploy/haproxy.cfg."""
    text = HAPROXY_CFG.read_text()
    binds = re.findall(r'^\s*bind\s+"\$\{(\w+)\}"', text, re.M)
    servers = dict(re.findall(r'^\s*server\s+(\S+)\s+"\$\{(\w+)\}"', text, re.M))
    return binds, servers, text


def test_the_load_balancer_sends_round_robin_to_every_replica():
    assert LB["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in LB["volumes"]
    assert LB["ports"] == ["8080:8080"]
    binds, servers, text = haproxy_config()
    env = LB["environment"]
    assert binds == ["AGENTMETER_LB_ADDR"] and env["AGENTMETER_LB_ADDR"].endswith(":8080")
    # Each configured server is one replica, named as in compose, at the replica's port.
    assert {name: env[var] for name, var in servers.items()} == {name: f"{name}:8080" for name in REPLICAS}
    assert set(LB["depends_on"]) == set(REPLICAS)
    assert re.search(r"^\s*balance\s+roundrobin\s*$", text, re.M)
    assert re.search(r"^\s*option\s+httpchk\s+GET\s+/health\s*$", text, re.M)
    # Grafana's API data source goes through the load balancer too.
    sources = yaml.safe_load((ROOT / "dashboards/grafana/provisioning/datasources/agentmeter.yml").read_text())
    (api_source,) = [d for d in sources["datasources"] if d["uid"] == "agentmeter-api"]
    assert urllib.parse.urlsplit(api_source["url"]).netloc == "api:8080"


def test_haproxy_accepts_the_configuration():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is missing: install Debian's haproxy package (./dev/test does)")
    env = {**os.environ, **{k: str(v) for k, v in LB["environment"].items()}}
    r = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Configuration file is valid" in r.stdout
    # A missing address variable is an error, not a silently empty server.
    env.pop("AGENTMETER_API_2_ADDR")
    r = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True)
    assert r.returncode != 0, r.stdout + r.stderr


def test_mounted_files_exist_and_the_image_ships_every_binary():
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for binary in BINARIES:
        assert f"target/release/{binary}" in dockerfile, f"the image does not ship {binary}"
    assert "dev/api-keys.toml" in dockerfile
