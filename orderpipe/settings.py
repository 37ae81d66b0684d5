"""orderpipe settings: every value comes from the environment (see the README's table).

One ``environ.Env`` reads an optional ``.env`` file; ``orderpipe.config.StrictEnv`` turns a
malformed value into a start-up error that names the variable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from orderpipe.config import StrictEnv, cluster_url_problem, shown
from orderpipe.money import DEFAULT_CURRENCY

# Django classes the type hints subscript (ModelAdmin[AcceptedOrder]) accept it at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

_environ = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(str(BASE_DIR / ".env"))
env = StrictEnv(_environ)

# --- Core -------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set the SECRET_KEY environment variable (or DEBUG=true locally)."
        )
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105 - DEBUG only
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # PostgreSQL triggers that refuse changes to ledger rows (orders/append_only.py).
    "pgtrigger",
    "orders",
    "stats",
]

MIDDLEWARE = [
    "orderpipe.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the browsable API's static files under gunicorn (no nginx needed).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's own session, user and messages middlewares, run only for the admin and DRF's
    # login pages (BROWSER_SESSION_PATHS), or everywhere with STATS_API_AUTH=session.
    "orderpipe.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "orderpipe.middleware.AuthenticationMiddleware",
    "orderpipe.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
BROWSER_SESSION_PATHS = ("/admin", "/api-auth/")

ROOT_URLCONF = "orderpipe.urls"
WSGI_APPLICATION = "orderpipe.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "orderpipe" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite file by default, PostgreSQL through DATABASE_URL -----------------------
DATABASES = {"default": env.db("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", 60, min_value=0))
# A reused connection the server has dropped (idle timeout, restart) is replaced, not failed on.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# SQLite (make run): write-ahead logging, so a reader (rebuild_stats' snapshot, the admin)
# never blocks a consumer's commit, and one fsync per commit instead of the rollback
# journal's several; synchronous stays FULL, so a committed ledger row survives a power loss.
SQLITE_OPTIONS = {"init_command": "PRAGMA journal_mode=WAL", "timeout": 20}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Redis (django-redis). Counts here are the source of truth, not a cache: errors propagate.
REDIS_HOST = env.str("REDIS_HOST", "localhost")
REDIS_PORT = env.int("REDIS_PORT", 6379, min_value=1, max_value=65535)
REDIS_URL = env.redis_url("REDIS_URL", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", "orderpipe")
REDIS_SOCKET_TIMEOUT = env.int("REDIS_SOCKET_TIMEOUT", 5, min_value=1)
# Redis Cluster (or ElastiCache Serverless): REDIS_URL names any one node, the client finds
# the others. REDIS_SHARDS spreads the aggregates over that many hash tags (stats/store/keys.py).
REDIS_CLUSTER = env.bool("REDIS_CLUSTER", False)
# At most 256: every API read sends one command per shard (plus one for its generation) and
# merges them (a year of /stats/by-date reads 365 fields from each shard: measured on one
# local node, about 50 ms at 256 shards, 0.9 s at 4096), and a batch costs one script call per
# shard it touches. 256 is still four shards for each of 64 primaries.
REDIS_SHARDS_MAX = 256
REDIS_SHARDS = env.int("REDIS_SHARDS", 1, min_value=1, max_value=REDIS_SHARDS_MAX)
if REDIS_CLUSTER and (_problem := cluster_url_problem(REDIS_URL)):
    raise ImproperlyConfigured(
        f"REDIS_URL={shown(REDIS_URL)} cannot work with REDIS_CLUSTER=true: {_problem}."
    )
CACHES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "CONNECTION_POOL_KWARGS": {"max_connections": 64, "health_check_interval": 30},
            # No IGNORE_EXCEPTIONS: a Redis outage must be seen, never read as "zero orders".
        },
        "KEY_PREFIX": REDIS_KEY_PREFIX,
    }
}
# django-redis with a RedisCluster underneath (orderpipe/redis_cluster.py); the tests' cluster
# fixture uses the same two classes.
REDIS_CLUSTER_CACHE_OPTIONS = {
    "CLIENT_CLASS": "orderpipe.redis_cluster.ClusterClient",
    "CONNECTION_FACTORY": "orderpipe.redis_cluster.ClusterConnectionFactory",
}
if REDIS_CLUSTER:
    CACHES["default"]["OPTIONS"].update(REDIS_CLUSTER_CACHE_OPTIONS)

# --- SQS ------------------------------------------------------------------------------------
LOCALSTACK_URL = env.url("LOCALSTACK_URL", "", ("http", "https"))
AWS_REGION = env.str("AWS_REGION", "us-east-1")
QUEUE_NAME = env.str("QUEUE_NAME", "orders")
SQS_VISIBILITY_TIMEOUT = env.int("SQS_VISIBILITY_TIMEOUT", 30, min_value=1, max_value=43200)
SQS_MAX_RECEIVE_COUNT = env.int("SQS_MAX_RECEIVE_COUNT", 5, min_value=1, max_value=1000)

# --- Ingestion ------------------------------------------------------------------------------
# 15 days: longer than SQS's 14-day maximum retention, so a redelivery always finds its mark.
ORDER_DEDUP_TTL = env.int("ORDER_DEDUP_TTL", 15 * 24 * 3600, min_value=0)

# --- Personal data --------------------------------------------------------------------------
# Body fields the ledger keeps besides what the figures need (ids, value, time, items); none by
# default, so shipping_address, payment_method and the like are never stored there.
LEDGER_EXTRA_FIELDS = env.list("LEDGER_EXTRA_FIELDS", [])
# Days a rejected message keeps its personal fields; prune_rejected (run it daily) removes them.
REJECTED_RETENTION_DAYS = env.int("REJECTED_RETENTION_DAYS", 30, min_value=1, max_value=3650)

# --- Events --------------------------------------------------------------------------------
# Days a refund or cancellation may wait for its order before the admin and pipeline_status
# show it as an orphan (waiting for an order that never came); it is still recorded if the
# order comes later. 14: SQS keeps a message at most that long.
ORPHAN_EVENT_DAYS = env.int("ORPHAN_EVENT_DAYS", 14, min_value=1, max_value=3650)

# --- The shop's calendar and money -----------------------------------------------------------
# An IANA name (a ZoneInfo here): the zone whose calendar days and hours the statistics count.
STATS_TIME_ZONE = env.time_zone("STATS_TIME_ZONE", "UTC")
# An ISO 4217 code with a minor unit: the one currency orders and events are accepted in and
# every amount is counted in (integer minor units, orderpipe.money).
STATS_CURRENCY = env.currency("STATS_CURRENCY", DEFAULT_CURRENCY)

# --- Stats API ------------------------------------------------------------------------------
STATS_MAX_RANGE_DAYS = env.int("STATS_MAX_RANGE_DAYS", 366, min_value=1, max_value=3660)
# Who may read the stats and orders APIs (and /metrics): with DEBUG off an account holding
# stats.view_stats unless set otherwise; "none" opens them to anyone who can reach the site,
# which the web and consumer processes log as a WARNING at every start (orderpipe.api.access).
STATS_API_AUTH = env.choice(
    "STATS_API_AUTH", ("none", "token", "session"), "none" if DEBUG else "token"
)
STATS_THROTTLE_RATE = env.str("STATS_THROTTLE_RATE", "").strip()  # "100/minute"; empty = off
if STATS_THROTTLE_RATE and not re.fullmatch(
    r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", STATS_THROTTLE_RATE
):
    raise ImproperlyConfigured(
        f"STATS_THROTTLE_RATE={STATS_THROTTLE_RATE!r} must look like 100/minute "
        "(a count, then / and second, minute, hour or day), or be empty for no throttling."
    )

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_RENDERER_CLASSES": [
        # Money leaves as exact JSON numbers (DRF's own JSONRenderer would make floats).
        "orderpipe.api.renderers.ExactJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "orderpipe.api.errors.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "orderpipe.api.negotiation.FormatFirstNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "orderpipe stats API",
    "DESCRIPTION": (
        "Order statistics aggregated from an SQS order stream into Redis, and the orders"
        " themselves: the ledger of accepted orders and the rejected messages."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the drf-spectacular-sidecar package, served by stats.api.urls: no CDN.
    "SWAGGER_UI_DIST": "/api/docs/assets",
    "SWAGGER_UI_FAVICON_HREF": "/api/docs/assets/favicon-32x32.png",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": ["healthy", "unhealthy"],
        "DependencyStateEnum": ["connected", "unavailable"],
        "OrderStatusEnum": "orders.event_rules.ORDER_STATUSES",
        "EventKindEnum": "orders.models.OrderEvent.Kind",
    },
}

# --- Security (python manage.py check --deploy is clean when DEBUG is off) -----------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", not DEBUG)
# A scraper may fetch /metrics over plain HTTP only while it needs no credentials: a token
# must never travel unencrypted.
SECURE_REDIRECT_EXEMPT = [r"^health$"] + ([r"^metrics$"] if STATS_API_AUTH == "none" else [])
# Trust X-Forwarded-Proto only behind a proxy that sets it (and drops a client's own);
# otherwise any client could claim HTTPS.
USE_X_FORWARDED_PROTO = env.bool("USE_X_FORWARDED_PROTO", False)
if USE_X_FORWARDED_PROTO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Proxies in front of the app: the throttle identifies a client by the X-Forwarded-For entry
# this many hops back; 0 means the socket's address (a client cannot forge it).
NUM_PROXIES = env.int("NUM_PROXIES", 0, min_value=0, max_value=10)
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging: console + LOG_DIR/YYYY-MM-DD.log (one file per UTC day) --------------------------
LOG_LEVEL = env.choice(
    "LOG_LEVEL", ("debug", "info", "warning", "error", "critical"), "info"
).upper()
LOG_DIR = Path(env.str("LOG_DIR", str(BASE_DIR / "logs")))
if not LOG_DIR.is_absolute():
    LOG_DIR = BASE_DIR / LOG_DIR
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"standard": {"()": "orderpipe.logging.UTCFormatter", "format": LOG_FORMAT}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "standard"},
        "daily_file": {
            "()": "orderpipe.logging.DailyFileHandler",
            "directory": str(LOG_DIR),
            "formatter": "standard",
        },
    },
    "root": {"handlers": ["console", "daily_file"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": LOG_LEVEL if LOG_LEVEL != "DEBUG" else "INFO"},
        # Our request-log middleware already logs each request once; silence the duplicate.
        "django.server": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
