"""docker-compose.yml, deploy/Dockerfile and deploy/postlane.toml are
consistent with each other and with the code (no Docker engine needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from postlane import configfile
from processors.registry import PROCESSORS as REGISTERED
from schemas import OutgoingServerConfigured, SettingsChanged

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
EXAMPLE_CONFIG = ROOT / "deploy" / "postlane.toml"
PROCESSORS = tuple(REGISTERED)  # every processor (processors/registry.py)

SETTINGS_KEYS = {"default_from", "catchall_domain", "bounce_alias", "catchall_alias",
                 "allowed_domains", "loop_minutes", "loop_threshold", "loop_allowed_senders"}
SERVER_KEYS = {
    "name", "host", "port", "security", "username", "password_env", "password_file",
    "sender", "from_filter", "priority", "active", "kind", "tenant", "allow_self_signed",
    "archive_bcc", "reply_to", "daily_limit", "timeout", "rate",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_CONFIG.read_text())


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def test_processor_services_share_one_image(services: dict[str, Any]) -> None:
    app_services = [*PROCESSORS, "config"]
    for name in app_services:
        assert name in services, f"service {name} missing"
    first = services["router"]
    assert first["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / first["build"]["context"] / first["build"]["dockerfile"]).is_file()
    for name in app_services:
        svc = services[name]
        assert svc["image"] == first["image"], name
        assert svc["build"] == first["build"], name


def test_processor_commands(services: dict[str, Any]) -> None:
    for name in PROCESSORS:
        # entrypoint is `postlane` (Dockerfile), so the command is its arguments
        assert "entrypoint" not in services[name]
        assert argv(services[name]) == ["worker", name]


def test_dockerfile_entrypoint_and_base() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["postlane"\]', text, re.M)
    assert "COPY pyproject.toml" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["postlane"] == "postlane.cli:main"
    # every package setuptools is told to include is copied into the image
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package}/ ", text, re.M), package


def test_environment(services: dict[str, Any]) -> None:
    for name in [*PROCESSORS, "config"]:
        e = env(services[name])
        assert e["POSTLANE_BROKER"] == "kafka://kafka:9092", name
        assert e["POSTLANE_PARTITIONS"] == "8", name


def test_delivery_is_scalable(services: dict[str, Any]) -> None:
    delivery = services["delivery"]
    # a fixed name or host port would stop `docker compose up --scale delivery=5`
    assert "container_name" not in delivery
    assert "ports" not in delivery
    assert "hostname" not in delivery


def test_kafka_is_kraft_single_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{e['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"].split(",")
    listeners = dict(
        item.split(":", 1) for item in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for listener in e["KAFKA_LISTENERS"].split(","):
        assert listener.split("://")[0] in listeners
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka
    assert any(v.endswith(":" + e["KAFKA_LOG_DIRS"]) for v in kafka["volumes"])
    # processors start on a healthy broker and after the config is applied
    for name in PROCESSORS:
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["config"]["condition"] == "service_completed_successfully"


def test_config_one_shot(services: dict[str, Any]) -> None:
    config = services["config"]
    assert argv(config) == ["config", "apply", "/etc/postlane/postlane.toml"]
    assert str(config.get("restart", "no")) == "no"
    assert config["depends_on"]["kafka"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in config["volumes"]}
    source = mounts["/etc/postlane/postlane.toml"]
    assert (ROOT / source).resolve() == EXAMPLE_CONFIG


def test_mail_catcher(services: dict[str, Any], example: dict[str, Any]) -> None:
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert any(str(p).endswith(":8025") for p in services["mailpit"]["ports"])
    targets = {(s["host"], s["port"]) for s in example["servers"] if s.get("active", True)}
    assert targets == {("mailpit", 1025)}


def test_example_config_has_the_contract_keys(example: dict[str, Any]) -> None:
    assert set(example) == {"settings", "servers", "tenants", "domains"}
    settings = example["settings"]
    assert set(settings) == SETTINGS_KEYS
    assert settings["default_from"] == "notifications"
    assert settings["catchall_domain"] == "example.com"
    assert example["servers"], "at least one server"
    for server in example["servers"]:
        assert set(server) <= SERVER_KEYS, set(server) - SERVER_KEYS
        assert {"name", "host", "port", "security"} <= set(server)
        assert server["security"] == "none"


def test_example_config_makes_valid_events(example: dict[str, Any]) -> None:
    # the keys are the event fields, so each table becomes a valid event
    SettingsChanged(**example["settings"])
    for server in example["servers"]:
        OutgoingServerConfigured(**server)


def test_contract_keys_match_the_event_fields() -> None:
    base = {"type", "schema", "event_id", "occurred_at"}
    assert set(OutgoingServerConfigured._options.fields) - base == SERVER_KEYS
    assert set(SettingsChanged._options.fields) - base == SETTINGS_KEYS


def _subcommand_names(cmd: Any) -> set[str] | None:
    """Names a click command accepts as its first word: a group's
    subcommands, or the choices of its first argument; None if open."""
    import click

    if isinstance(cmd, click.Group):
        return set(cmd.commands)
    for param in cmd.params:
        if isinstance(param, click.Argument):
            return set(param.type.choices) if isinstance(param.type, click.Choice) else None
    return None


@pytest.mark.parametrize(
    ("group", "names"), [("worker", PROCESSORS), ("config", ("apply",))]
)
def test_compose_commands_exist_in_the_cli(group: str, names: tuple[str, ...]) -> None:
    from postlane.cli import main

    assert group in main.commands, f"`postlane {group}` is missing"
    accepted = _subcommand_names(main.commands[group])
    if accepted is None and group == "worker":
        # `postlane worker NAME...` takes names from the processor registry
        accepted = set(REGISTERED)
    assert accepted is not None
    assert set(names) <= accepted, set(names) - accepted


def test_example_config_loads_with_the_config_file_reader() -> None:
    desired = configfile.load(str(EXAMPLE_CONFIG))
    assert desired.settings.catchall_domain == "example.com"
    assert [(s.name, s.host, s.port, s.security) for s in desired.servers] == [
        ("mailpit", "mailpit", 1025, "none")
    ]


def test_every_worker_serves_metrics_on_the_network(services: dict[str, Any]) -> None:
    workers = [n for n, svc in services.items() if "command" in svc and argv(svc)[:1] == ["worker"]]
    assert set(PROCESSORS) <= set(workers)
    for name in workers:
        e = env(services[name])
        assert (e["POSTLANE_METRICS_HOST"], e["POSTLANE_METRICS_PORT"]) == ("0.0.0.0",
                                                                           "9642"), name
        assert "9642" in [str(p) for p in services[name].get("expose", [])], name
    assert re.search(r"^EXPOSE 9642$", DOCKERFILE.read_text(), re.M)
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    sd = scrape["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["port"] == 9642 and set(sd["names"]) == set(workers)
