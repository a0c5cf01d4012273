"""deploy/ and docker-compose.yml, checked by the tools that will read them (issue 20 items 13, 14).

promtool (Debian package ``prometheus``) checks and unit-tests the alert rules where it is installed;
tests/api/test_ops_metrics.py checks, in any case, that every metric they name is exported by a real
scrape. The compose file is parsed here, and given to ``docker compose config`` (v2) and Debian's
``docker-compose config`` (1.29) where they are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from privacy_service.worker import STOP_GRACE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
COMPOSE = ROOT / "docker-compose.yml"
PROMTOOL = shutil.which("promtool")
# `make test` installs promtool where it can; in CI a missing promtool is a failure, not a silent skip.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="promtool not installed (apt-get install prometheus)",
)


def tool(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    result = tool(str(PROMTOOL), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_tests_fire_each_alert_when_it_should() -> None:
    result = tool(str(PROMTOOL), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_checks_the_example_scrape_config(tmp_path: Path) -> None:
    """The example names a key file that only a real deployment has: point it at a stand-in."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    key = tmp_path / "privacy-service.key"
    key.write_text("psk_stand-in\n")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "privacy-service"  # what the rules select
    job["authorization"]["credentials_file"] = str(key)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = tool(str(PROMTOOL), "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def test_the_compose_file_suits_compose_v2_and_docker_compose_1_29() -> None:
    document = compose()
    assert "name" not in document, "docker-compose 1.29 rejects a top-level name:"
    # 1.29 reads a file without a version as the legacy v1 format; v2 ignores the member.
    assert document["version"] == "3.8"
    services = document["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    check = worker["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"] == ["CMD", "privacy-service", "worker", "--check"]
    # The heartbeat lives in the temp directory, a tmpfs here (the root file system is read-only).
    assert "/tmp" in worker.get("tmpfs", [])  # noqa: S108 - a container path, not a temp file
    assert worker.get("read_only") is True
    # Room for a job in flight to finish on SIGTERM before Docker kills the worker.
    grace = worker["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace.removesuffix("s")) > STOP_GRACE_SECONDS


def _compose_commands() -> list[list[str]]:
    found = []
    if shutil.which("docker-compose"):
        found.append(["docker-compose"])
    docker = shutil.which("docker")
    if docker and tool(docker, "compose", "version").returncode == 0:
        found.append([docker, "compose"])
    return found


@pytest.mark.skipif(not _compose_commands(), reason="neither docker compose (v2) nor docker-compose is installed")
@pytest.mark.parametrize("command", _compose_commands(), ids=lambda argv: " ".join(Path(part).name for part in argv))
def test_compose_accepts_the_file(command: list[str], tmp_path: Path) -> None:
    # A copy in an empty folder: no .env beside it, the project name from the folder.
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    result = tool(*command, "config", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = tool(*command, "config", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "privacy-service", "worker", "--check"]
