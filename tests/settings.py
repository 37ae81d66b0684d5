"""Test settings: production settings plus what a test run needs (fixtures: root conftest)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("DEBUG", "false")
# With DEBUG off the APIs need a token; tests that check access set the mode they check, the
# default itself is checked in a fresh process (tests/test_settings.py).
os.environ.setdefault("STATS_API_AUTH", "none")
os.environ.setdefault("LOG_DIR", tempfile.mkdtemp(prefix="orderpipe-test-logs-"))

from orderpipe.settings import *  # noqa: F403
from orderpipe.settings import BASE_DIR, SQLITE_OPTIONS, env

SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
# Tests render pages without collectstatic: Django's finders serve the admin's files.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# TEST_DATABASE_URL points the suite at PostgreSQL (or another server); SQLite otherwise.
# The SQLite test database is a file, not memory, so consumer subprocesses can share it.
_test_db_url = os.environ.get("TEST_DATABASE_URL", "")
if _test_db_url:
    DATABASES = {"default": env.db("TEST_DATABASE_URL", _test_db_url)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "db.sqlite3"),
            "TEST": {
                "NAME": os.path.join(tempfile.gettempdir(), f"orderpipe-test-{os.getpid()}.sqlite3")
            },
            "OPTIONS": SQLITE_OPTIONS,
        }
    }
