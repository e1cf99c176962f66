"""docker-compose.yml is checked without a Docker engine: its structure, and
that every agentmeter service's command flags and environment variables are
ones the binary really accepts (read from the built binary's --help).

Needs the debug binaries (`cargo build --bins`); ./dev/test runs this after
the build.
"""

import pathlib
import re
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
BINARIES = ["agentmeter-migrate", "agentmeter-ingest", "agentmeter-api", "agentmeter-loadgen"]


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
    expected = {"kafka", "clickhouse", "migrate", "ingest", "api", "loadgen", "prometheus", "grafana"}
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
    for name in ["kafka", "clickhouse", "ingest", "api"]:
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
    # Nothing reads ClickHouse before the schema exists.
    for name in ["ingest", "api"]:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", "ingest", "api", "loadgen"])
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
    api_env = SERVICES["api"]["environment"]
    assert api_env["AGENTMETER_API_ADDR"].endswith(":8080")
    assert "localhost:8080/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    ingest_env = SERVICES["ingest"]["environment"]
    assert ingest_env["AGENTMETER_INGEST_METRICS_ADDR"].endswith(":9464")
    assert "localhost:9464/health" in " ".join(SERVICES["ingest"]["healthcheck"]["test"])
    scrape = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"ingest:9464", "api:8080"}


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
