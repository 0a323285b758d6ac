"""docker-compose.yml (not run here: no Docker engine): what each service must say to work."""

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def reserves_a_gpu(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return any("gpu" in device.get("capabilities", []) for device in devices.get("devices", []))


def test_a_service_that_reserves_a_gpu_runs_the_model_on_it():
    gpu = {name: s for name, s in services().items() if reserves_a_gpu(s)}
    assert list(gpu) == ["worker-gpu"]
    environment = gpu["worker-gpu"]["environment"]
    assert environment["MASKLOOP_DEVICE"] == "cuda"  # the setting's default is cpu
    assert environment["DATABASE_URL"].startswith("postgres://")  # the shared env merged in


def test_the_maskloop_services_share_one_environment_and_beat_uses_the_database_scheduler():
    maskloop = {n: s for n, s in services().items() if s.get("image") == "maskloop:latest"}
    assert set(maskloop) == {"web", "worker-cpu", "worker-gpu", "beat"}
    for name, service in maskloop.items():
        assert service["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0", name
    assert "--schedule" not in maskloop["beat"]["command"]  # DatabaseScheduler keeps no file


def test_the_web_healthcheck_asks_readyz_and_each_worker_answers_a_ping_to_its_own_name():
    all_services = services()
    web_check = " ".join(all_services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in web_check  # config.health: 503 until ready
    for name, prefix in (("worker-cpu", "cpu@"), ("worker-gpu", "gpu@")):
        service = all_services[name]
        command = service["command"]
        node = command[command.index("--hostname") + 1]
        assert node == f"{prefix}%h", name
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL", name
        # $$ is compose's escape: the shell in the container expands $HOSTNAME, as Celery's %h.
        assert f"inspect ping -d {prefix}$$HOSTNAME" in check[1], name
