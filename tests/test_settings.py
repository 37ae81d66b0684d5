"""Settings start-up behaviour, checked in fresh processes with a crafted environment.

Settings are read once at import, so every case runs ``manage.py`` in a subprocess. Each case
sets every variable it depends on explicitly (an empty value counts as set), so a developer's
``.env`` file, which never overrides the real environment, cannot change the outcome.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

# Variables the settings read; cleared so the caller's shell cannot leak into a case.
SETTINGS_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "CONN_MAX_AGE",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "REDIS_SOCKET_TIMEOUT",
    "REDIS_CLUSTER",
    "REDIS_SHARDS",
    "LOCALSTACK_URL",
    "AWS_REGION",
    "QUEUE_NAME",
    "SQS_VISIBILITY_TIMEOUT",
    "SQS_MAX_RECEIVE_COUNT",
    "ORDER_DEDUP_TTL",
    "LEDGER_EXTRA_FIELDS",
    "REJECTED_RETENTION_DAYS",
    "ORPHAN_EVENT_DAYS",
    "STATS_TIME_ZONE",
    "STATS_CURRENCY",
    "STATS_MAX_RANGE_DAYS",
    "STATS_API_AUTH",
    "STATS_THROTTLE_RATE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "LOG_LEVEL",
    "LOG_DIR",
)


def last_line(text: str) -> str:
    """``shell -c`` may print a banner (auto-imported objects) before the code's output."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    base.update(
        DEBUG="true",
        SECRET_KEY="",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_DIR=str(tmp_path / "logs"),
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env() -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "orders.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://orders.example.com",
    }


def assert_clean_config_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"REDIS_PORT": "abc"}, "REDIS_PORT='abc' is not an integer"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT=70000 is above the maximum 65535"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' must be one of"),
        ({"ORDER_DEDUP_TTL": "-1"}, "ORDER_DEDUP_TTL=-1 is below the minimum 0"),
        ({"REJECTED_RETENTION_DAYS": "0"}, "REJECTED_RETENTION_DAYS=0 is below the minimum 1"),
        ({"ORPHAN_EVENT_DAYS": "0"}, "ORPHAN_EVENT_DAYS=0 is below the minimum 1"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER='maybe' is not a boolean"),
        ({"REDIS_SHARDS": "0"}, "REDIS_SHARDS=0 is below the minimum 1"),
        ({"REDIS_SHARDS": "257"}, "REDIS_SHARDS=257 is above the maximum 256"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL='http://cache:6379' must start with"),
        ({"LOCALSTACK_URL": "localstack:4566"}, "LOCALSTACK_URL='localstack:4566' must start"),
        pytest.param(
            {"DATABASE_URL": "nonsense://x"},
            "DATABASE_URL='nonsense://x'",
        ),
        pytest.param(
            {"STATS_TIME_ZONE": "Mars/Olympus_Mons"},
            "STATS_TIME_ZONE='Mars/Olympus_Mons' is not an IANA time zone name (case counts: "
            "UTC, Europe/London, America/New_York, Asia/Kolkata).",
            id="unknown-zone",
        ),
        pytest.param(
            {"STATS_TIME_ZONE": "america/new_york"},
            "STATS_TIME_ZONE='america/new_york' is not an IANA time zone name",
            id="zone-in-the-wrong-case",
        ),
        pytest.param(
            {"STATS_TIME_ZONE": "localtime"},
            "STATS_TIME_ZONE='localtime' is not an IANA time zone name",
            id="the-machines-zone",
        ),
        pytest.param(
            {"STATS_CURRENCY": "XYZ"},
            "STATS_CURRENCY='XYZ' is not an ISO 4217 currency code (three capital letters, "
            "e.g. USD, EUR, JPY).",
            id="unknown-currency",
        ),
        pytest.param(
            {"STATS_CURRENCY": "XAU"},
            "STATS_CURRENCY='XAU' has no minor unit in ISO 4217 (a precious metal, a fund or a "
            "testing code), so amounts in it cannot be counted in minor units.",
            id="currency-without-minor-unit",
        ),
    ],
)
def test_malformed_value_is_a_one_line_error_naming_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    assert_clean_config_error(manage(tmp_path, "check", **env), expected)


def test_the_ledger_keeps_no_extra_field_unless_listed(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings; "
        "print(settings.LEDGER_EXTRA_FIELDS, settings.REJECTED_RETENTION_DAYS)"
    )
    default = manage(tmp_path, "shell", "-c", code)
    listed = manage(
        tmp_path, "shell", "-c", code,
        LEDGER_EXTRA_FIELDS=" channel, coupon_code ,", REJECTED_RETENTION_DAYS="7",
    )  # fmt: skip
    assert last_line(default.stdout) == "[] 30", default.stderr
    assert last_line(listed.stdout) == "['channel', 'coupon_code'] 7", listed.stderr


def test_missing_secret_key_refuses_to_start_when_debug_is_off(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", DEBUG="false", SECRET_KEY="", ALLOWED_HOSTS="x.example")
    assert_clean_config_error(result, "Set the SECRET_KEY environment variable")


def test_debug_is_off_unless_set(tmp_path: Path) -> None:
    env = production_env()
    result = manage(
        tmp_path, "shell", "-c", "from django.conf import settings; print(settings.DEBUG)", **env
    )
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == "False"
    # Unset DEBUG (not even an empty value) must mean off as well.
    dotenv = BASE_DIR / ".env"
    if dotenv.is_file() and "DEBUG" in dotenv.read_text(errors="replace"):
        pytest.skip("the local .env file sets DEBUG")
    script = (
        "import os; os.environ.pop('DEBUG', None); "
        "from django.conf import settings; print(settings.DEBUG)"
    )
    base = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    base.update({k: v for k, v in env.items() if k != "DEBUG"})
    base.update(DJANGO_SETTINGS_MODULE="orderpipe.settings", LOG_DIR=str(tmp_path / "logs"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=base, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_check_deploy_is_clean_with_production_variables(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_short_secret_key(tmp_path: Path) -> None:
    """Guards the test above against passing vacuously (e.g. if the deploy checks never ran)."""
    env = production_env() | {"SECRET_KEY": "short"}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_redis_url_overrides_host_and_port(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.CACHES['default']['LOCATION'])"
    result = manage(tmp_path, "shell", "-c", code, REDIS_HOST="cache", REDIS_PORT="7000")
    assert last_line(result.stdout) == "redis://cache:7000/0", result.stderr
    result = manage(
        tmp_path, "shell", "-c", code, REDIS_HOST="cache", REDIS_URL="redis://other:1/3"
    )
    assert last_line(result.stdout) == "redis://other:1/3", result.stderr


def test_redis_errors_are_not_swallowed(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.CACHES['default']['OPTIONS'])"
    result = manage(tmp_path, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert "IGNORE_EXCEPTIONS" not in result.stdout


def test_redis_cluster_puts_django_redis_on_the_cluster_classes(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings; o = settings.CACHES['default']['OPTIONS']; "
        "print(o['CLIENT_CLASS'], o['CONNECTION_FACTORY'], settings.REDIS_SHARDS)"
    )
    on = manage(tmp_path, "shell", "-c", code, REDIS_CLUSTER="yes", REDIS_SHARDS="8")
    off = manage(tmp_path, "shell", "-c", code.replace("o['CONNECTION_FACTORY']", "'-'"))

    assert last_line(on.stdout) == (
        "orderpipe.redis_cluster.ClusterClient orderpipe.redis_cluster.ClusterConnectionFactory 8"
    ), on.stderr
    assert last_line(off.stdout) == "django_redis.client.DefaultClient - 1", off.stderr


# --- URLs: no password in any message; a URL that cannot work stops start-up ------------------
@pytest.mark.parametrize(
    ("env", "line"),
    [
        pytest.param(
            {"DATABASE_URL": "postgres://u:secret@db:notaport/orders"},
            "DATABASE_URL='postgres://u:***@db:notaport/orders' is not a database URL: "
            "Port could not be cast to integer value as 'notaport'",
            id="database-port",
        ),
        pytest.param(
            {"DATABASE_URL": "nonsense://u:secret@db/orders"},
            "DATABASE_URL='nonsense://u:***@db/orders' is not a database URL; use e.g. "
            "postgres://user:password@host:5432/name or sqlite:////absolute/path.sqlite3",
            id="database-scheme",
        ),
        pytest.param(
            {"DATABASE_URL": "postgres://u:se/cr@et@db:5432/orders"},
            "DATABASE_URL='postgres://u:***@db:5432/orders' is not a database URL: "
            "Port could not be cast to integer value as 'se'",
            id="database-password-with-a-slash",
        ),
        pytest.param(
            {"DATABASE_URL": "postgres://u:secret@db:5432/"},
            "DATABASE_URL='postgres://u:***@db:5432/' cannot work: it names no database "
            "(the path after the host).",
            id="database-no-name",
        ),
        pytest.param(
            {"DATABASE_URL": "postgres://u:secret@db:0/orders"},
            "DATABASE_URL='postgres://u:***@db:0/orders' cannot work: port 0 is not a port a "
            "server listens on.",
            id="database-port-0",
        ),
        pytest.param(
            {"REDIS_URL": "redis://127.0.0.1:notaport/0"},
            "REDIS_URL='redis://127.0.0.1:notaport/0' cannot work: Port could not be cast to "
            "integer value as 'notaport'.",
            id="redis-port",
        ),
        pytest.param(
            {"REDIS_URL": "redis://:secret@cache:70000/0"},
            "REDIS_URL='redis://:***@cache:70000/0' cannot work: Port out of range 0-65535.",
            id="redis-port-range",
        ),
        pytest.param(
            {"REDIS_URL": "redis://cache:6379/first"},
            "REDIS_URL='redis://cache:6379/first' cannot work: the database number 'first' is "
            "not a whole number.",
            id="redis-db-number",
        ),
        pytest.param(
            {"REDIS_URL": "redis://cache:6379/0?db=x&password=secret"},
            "REDIS_URL='redis://cache:6379/0?db=x&password=***' cannot work: Invalid value for "
            "'db' in connection URL.",
            id="redis-query",
        ),
        pytest.param(
            {"REDIS_URL": "http://:secret@cache:6379"},
            "REDIS_URL='http://:***@cache:6379' must start with one of redis://, rediss://, "
            "unix://.",
            id="redis-scheme",
        ),
        pytest.param(
            {"REDIS_URL": "", "REDIS_HOST": "cache:7000"},
            "REDIS_URL='redis://cache:7000:6379/0' (from REDIS_HOST) cannot work: Port could "
            "not be cast to integer value as '7000:6379'.",
            id="redis-host",
        ),
        pytest.param(
            {"REDIS_CLUSTER": "true", "REDIS_URL": "redis://:secret@cache:6379/3"},
            "REDIS_URL='redis://:***@cache:6379/3' cannot work with REDIS_CLUSTER=true: a "
            "cluster has only database 0, not 3.",
            id="cluster-db",
        ),
        pytest.param(
            {"REDIS_CLUSTER": "true", "REDIS_URL": "unix:///run/redis.sock"},
            "REDIS_URL='unix:///run/redis.sock' cannot work with REDIS_CLUSTER=true: a cluster "
            "is reached over TCP (redis:// or rediss://), not a unix socket.",
            id="cluster-unix",
        ),
        pytest.param(
            {"LOCALSTACK_URL": "http://u:secret@localstack:port"},
            "LOCALSTACK_URL='http://u:***@localstack:port' cannot work: Port could not be cast "
            "to integer value as 'port'.",
            id="localstack-port",
        ),
        pytest.param(
            {"LOCALSTACK_URL": "http:///queue"},
            "LOCALSTACK_URL='http:///queue' cannot work: it names no host.",
            id="localstack-host",
        ),
    ],
)
def test_a_url_error_is_one_line_naming_the_variable_without_the_password(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    result = manage(tmp_path, "check", **env)

    assert result.returncode == 2
    assert result.stderr.strip() == f"Configuration error: {line}"
    assert "secret" not in result.stdout + result.stderr


def test_working_urls_pass(tmp_path: Path) -> None:
    result = manage(
        tmp_path,
        "check",
        REDIS_URL="rediss://:secret@cache.example:6380/2",
        LOCALSTACK_URL="https://sqs.example:4566",
    )
    assert result.returncode == 0, result.stderr
    result = manage(tmp_path, "check", REDIS_URL="unix:///run/redis.sock?db=1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("mode", "redirected"), [("none", False), ("token", True)])
def test_metrics_is_exempt_from_the_https_redirect_only_without_auth(
    tmp_path: Path, mode: str, redirected: bool
) -> None:
    """A token must not travel over plain HTTP: /metrics is redirected once it needs one."""
    from devtools.servers import free_port

    code = (
        "from django.test import Client; c = Client(); "
        "print([c.get(p).status_code == 301 for p in ('/metrics', '/health', '/stats/global')])"
    )
    env = production_env() | {
        "STATS_API_AUTH": mode,
        "SECURE_SSL_REDIRECT": "true",
        "ALLOWED_HOSTS": "testserver",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody: unredirected reads are 503s
        "REDIS_SOCKET_TIMEOUT": "1",
    }
    result = manage(tmp_path, "shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == str([redirected, False, True])


def test_the_zone_and_currency_are_read_and_the_validator_takes_the_currency(
    tmp_path: Path,
) -> None:
    code = (
        "from django.conf import settings; from orders import validation; "
        "print(repr(settings.STATS_TIME_ZONE), settings.STATS_CURRENCY, validation.CURRENCY)"
    )
    result = manage(
        tmp_path, "shell", "-c", code, STATS_TIME_ZONE=" Asia/Kolkata ", STATS_CURRENCY=" kwd "
    )
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == "zoneinfo.ZoneInfo(key='Asia/Kolkata') KWD KWD"


def test_the_zone_is_utc_and_the_currency_usd_unless_set(tmp_path: Path) -> None:
    dotenv = BASE_DIR / ".env"
    if dotenv.is_file() and "STATS_" in dotenv.read_text(errors="replace"):
        pytest.skip("the local .env file sets STATS_ variables")
    code = (
        "from django.conf import settings; "
        "print(settings.STATS_TIME_ZONE.key, settings.STATS_CURRENCY)"
    )
    result = manage(tmp_path, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == "UTC USD"


def test_redis_shards_may_be_256(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.REDIS_SHARDS)"
    result = manage(tmp_path, "shell", "-c", code, REDIS_SHARDS="256")
    assert last_line(result.stdout) == "256", result.stderr


# --- Who may read the APIs: token unless DEBUG; none on purpose, with a WARNING ---------------
@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"DEBUG": "false"}, "token"),
        ({"DEBUG": "false", "STATS_API_AUTH": "none"}, "none"),  # on purpose
        ({"DEBUG": "false", "STATS_API_AUTH": "session"}, "session"),
        ({"DEBUG": "true"}, "none"),  # make run, which sets DEBUG=true for its children
        ({"DEBUG": "true", "STATS_API_AUTH": "token"}, "token"),
    ],
)
def test_the_apis_need_a_token_unless_debug(tmp_path: Path, env: dict[str, str], mode: str) -> None:
    code = "from django.conf import settings; print(settings.STATS_API_AUTH)"
    if env["DEBUG"] == "false":
        env = production_env() | env
    result = manage(tmp_path, "shell", "-c", code, **env)
    assert last_line(result.stdout) == mode, result.stderr


@pytest.mark.parametrize("mode", ["token", "session"])
def test_an_access_mode_no_one_can_get_through_refuses_to_start(tmp_path: Path, mode: str) -> None:
    """Tokens are rows of DRF's authtoken app: settings without it could only answer 401."""
    (tmp_path / "no_tokens.py").write_text(
        "from orderpipe.settings import *  # noqa\n"
        "INSTALLED_APPS = [a for a in INSTALLED_APPS if a != 'rest_framework.authtoken']\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "no_tokens", "PYTHONPATH": str(tmp_path)}

    refused = manage(tmp_path, "check", STATS_API_AUTH=mode, **env)
    opened = manage(tmp_path, "check", STATS_API_AUTH="none", **env)

    assert_clean_config_error(
        refused,
        f"Configuration error: STATS_API_AUTH={mode} needs rest_framework.authtoken in "
        "INSTALLED_APPS: no client could get in without it (API tokens are created with "
        "`manage.py drf_create_token USER`); add it, or set STATS_API_AUTH=none to open the "
        "APIs on purpose",
    )
    assert opened.returncode == 0, opened.stderr


WEB_START = (
    "import orderpipe.wsgi; from django.test import Client; c = Client(); "
    "print([c.get('/', secure=True).status_code for _ in range(3)])"
)


@pytest.mark.parametrize(
    ("mode", "level", "says"),
    [
        ("none", "WARNING", "STATS_API_AUTH=none: the stats and orders APIs and /metrics are "
         "open to anyone who can reach this site, every user's orders and spend included; set "
         "STATS_API_AUTH=token (or session) to require the stats.view_stats permission"),
        ("token", "INFO", "STATS_API_AUTH=token: the stats and orders APIs and /metrics need "
         "`Authorization: Token <key>` of an account holding stats.view_stats; create a key "
         "with `python manage.py drf_create_token USER`"),
        ("session", "INFO", "STATS_API_AUTH=session: the stats and orders APIs and /metrics "
         "need a login (/api-auth/login/ or the admin) or a token of an account holding "
         "stats.view_stats"),
    ],
)  # fmt: skip
def test_a_web_process_says_who_may_read_the_apis_once_at_start(
    tmp_path: Path, mode: str, level: str, says: str
) -> None:
    env = production_env() | {"STATS_API_AUTH": mode, "ALLOWED_HOSTS": "testserver"}
    result = manage(tmp_path, "shell", "-c", WEB_START, **env)

    assert last_line(result.stdout) == "[200, 200, 200]", result.stderr
    lines = [line for line in result.stderr.splitlines() if "STATS_API_AUTH" in line]
    assert [line.split(" ", 2)[1:] for line in lines] == [
        [level, f"orderpipe.api.access {says}"]
    ], result.stderr
