"""docker-compose.yml agrees with the settings (no Docker engine here, so the file is read).

The variables the app reads come from parsing ``orderpipe/settings.py`` for ``env.<type>("NAME"``
calls, so a setting added later without a compose entry (or a README row) fails here.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devtools.servers import free_port, port_is_open

BASE_DIR = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker")
_ENV_CALL = re.compile(r"\benv\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"")
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def settings_variables() -> list[str]:
    text = (BASE_DIR / "orderpipe" / "settings.py").read_text(encoding="utf-8")
    return list(dict.fromkeys(_ENV_CALL.findall(text)))


def interpolate(value: Any, shell: dict[str, str] | None = None) -> str:
    """Compose's ``${X}``, ``${X:-default}``, ``${X:?error}`` against an (empty) shell env."""
    shell = shell or {}

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if shell.get(name):
            return shell[name]
        if op and op.endswith("?"):
            return f"<required:{name}>"
        return arg or ""

    return _INTERPOLATION.sub(one, str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text(encoding="utf-8"))


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def test_settings_parsing_finds_the_variables() -> None:
    found = settings_variables()
    for name in ("DEBUG", "SECRET_KEY", "REDIS_URL", "LOCALSTACK_URL", "LOG_LEVEL", "LOG_DIR"):
        assert name in found
    assert len(found) >= 20


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_setting_is_set_for_the_app_services(compose: dict[str, Any], service: str) -> None:
    env = service_env(compose, service)
    missing = [name for name in settings_variables() if name not in env]
    assert not missing, f"{service} lacks {missing}"
    assert env["DEBUG"] == "false"
    assert env["SECRET_KEY"] == "<required:SECRET_KEY>", "SECRET_KEY must be required, not baked"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_the_apis_need_a_token_in_compose_unless_opened_on_purpose(
    compose: dict[str, Any], service: str
) -> None:
    assert service_env(compose, service)["STATS_API_AUTH"] == "token"
    # Set in the shell (or .env), it is still the operator's choice.
    env = compose["services"][service]["environment"]
    assert interpolate(env["STATS_API_AUTH"], {"STATS_API_AUTH": "none"}) == "none"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_hosts_in_urls_are_compose_services(compose: dict[str, Any], service: str) -> None:
    env = service_env(compose, service)
    services = set(compose["services"])
    redis = urlsplit(env["REDIS_URL"])
    assert redis.hostname in services and redis.hostname == env["REDIS_HOST"]
    assert str(redis.port or 6379) == env["REDIS_PORT"]
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres" in services
    assert urlsplit(env["LOCALSTACK_URL"]).hostname == "localstack" in services
    db = urlsplit(env["DATABASE_URL"])
    postgres = service_env(compose, "postgres")
    assert db.username == postgres["POSTGRES_USER"]
    assert db.password == postgres["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == postgres["POSTGRES_DB"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_environment_passes_the_strict_settings(
    compose: dict[str, Any], service: str, tmp_path: Path
) -> None:
    """The values (after interpolation with defaults) parse, and Django's checks pass."""
    env = {k: v for k, v in os.environ.items() if k not in settings_variables()}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # pytest-django's test settings: not what ships
    env.update(service_env(compose, service))
    env.update(SECRET_KEY="x" * 60, LOG_DIR=str(tmp_path))  # /app/logs exists only in the image
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "check", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", (name, dependency)
    for app in APP_SERVICES:
        deps = services[app]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["localstack"]["condition"] == "service_healthy"


def test_processes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = " ".join(services["web"]["command"])
    assert web.startswith("gunicorn orderpipe.wsgi")
    assert "healthcheck" in services["web"]
    assert services["worker"]["command"] == ["python", "manage.py", "consume_orders"]
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert services["localstack"]["environment"]["SERVICES"] == "sqs"


@pytest.mark.integration
def test_web_command_serves_keep_alive_connections(
    compose: dict[str, Any], redis_server, tmp_path: Path
) -> None:
    """The web service's gunicorn command, as compose runs it (gthread workers, chosen by the
    API benchmark), answers several requests on one HTTP/1.1 connection."""
    port = free_port()
    command = [interpolate(arg) for arg in compose["services"]["web"]["command"]]
    command = [f"--bind=127.0.0.1:{port}" if a.startswith("--bind") else a for a in command]
    assert command[:2] == ["gunicorn", "orderpipe.wsgi"]
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DEBUG": "false",
        "SECRET_KEY": "compose-test-" + "k" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": redis_server.url,
        "LOG_DIR": str(tmp_path / "logs"),
    }
    binary = str(Path(sys.executable).parent / "gunicorn")
    server = subprocess.Popen(
        [binary, *command[1:]], cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_is_open(port):
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers, sockets = [], []
        for _ in range(3):
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
            sockets.append(connection.sock)  # None once the server closed it
        connection.close()
    finally:
        server.terminate()
        server.wait(30)
    assert answers == [(200, "keep-alive")] * 3
    assert sockets[0] is not None and all(s is sockets[0] for s in sockets)


def test_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_logs_volume_is_the_log_dir(compose: dict[str, Any]) -> None:
    assert "logs" in compose["volumes"]
    for app in APP_SERVICES:
        log_dir = service_env(compose, app)["LOG_DIR"]
        assert f"logs:{log_dir}" in compose["services"][app]["volumes"]
    for volume in ("redis-data", "postgres-data"):
        assert volume in compose["volumes"]


def test_dockerfile_matches(compose: dict[str, Any]) -> None:
    dockerfile = (BASE_DIR / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    assert "requirements/base.txt" in dockerfile
    assert "gunicorn" in dockerfile and "orderpipe.wsgi" in dockerfile
    log_dir = service_env(compose, "web")["LOG_DIR"]
    assert f"mkdir -p {log_dir}" in dockerfile  # writable by the non-root user
    gunicorn = (BASE_DIR / "requirements" / "base.txt").read_text(encoding="utf-8")
    assert "gunicorn==" in gunicorn
    ignored = (BASE_DIR / ".dockerignore").read_text(encoding="utf-8").split()
    for path in (".venv", ".env", ".localdata", ".git"):
        assert path in ignored


def test_readme_documents_every_setting() -> None:
    readme = (BASE_DIR / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", readme, re.MULTILINE))
    missing = [name for name in settings_variables() if name not in rows]
    assert not missing, f"README's variable table lacks {missing}"


def test_env_example_names_only_real_settings() -> None:
    known = set(settings_variables()) | {"WEB_PORT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    text = (BASE_DIR / ".env.example").read_text(encoding="utf-8")
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)
    assert names
    assert set(names) <= known, set(names) - known


def worker_healthcheck(compose: dict[str, Any]) -> str:
    """The worker's healthcheck as the shell runs it (compose turns ``$$`` into ``$``)."""
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    return test[1].replace("$$", "$")


def test_worker_healthcheck_judges_its_own_heartbeat(compose: dict[str, Any]) -> None:
    command = worker_healthcheck(compose)
    assert command.startswith("python manage.py pipeline_status ")
    assert '--consumer-host "$(hostname)"' in command
    health = compose["services"]["worker"]["healthcheck"]
    assert health["timeout"] == "15s"


@pytest.mark.django_db(transaction=True)
def test_worker_healthcheck_command_fails_for_a_hung_worker_beside_a_live_one(
    compose: dict[str, Any], store, make_queue, child_env
) -> None:
    """The healthcheck's own shell command, run here: this host plays the container."""
    import socket
    import time

    from stats.store import AggregateStore

    make_queue()
    command = worker_healthcheck(compose).replace("python ", f"{sys.executable} ", 1)

    def healthcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", command], cwd=BASE_DIR, env=child_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    def beat(consumer_id: str, age: float) -> None:
        stamper = AggregateStore(store.client, prefix=store.prefix, clock=lambda: time.time() - age)
        stamper.consumer_id = consumer_id
        stamper.heartbeat()

    own = f"{socket.gethostname()}:4242"
    beat(own, age=600)  # this container's worker hung ten minutes ago
    beat("another-container:1", age=0)  # while another one is alive
    hung = healthcheck()
    beat(own, age=0)
    alive = healthcheck()

    assert hung.returncode == 1, hung.stdout + hung.stderr
    stale = rf"consumer heartbeat stale on {re.escape(socket.gethostname())}: last seen 6\d\ds ago"
    assert re.search(stale, hung.stderr), hung.stderr
    assert alive.returncode == 0, alive.stdout + alive.stderr
