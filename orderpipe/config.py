"""Strict readers for environment variables.

django-environ casts leniently (``DEBUG=maybe`` is silently False, ``REDIS_PORT=abc`` fails
deep inside a traceback). A deployment should instead refuse to start with a message that
names the variable, so every typed setting goes through these helpers.
"""

from __future__ import annotations

import environ
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

_MISSING = object()


class StrictEnv:
    """Wraps one ``environ.Env`` and validates each value it hands out."""

    def __init__(self, env: environ.Env | None = None) -> None:
        self.env = env or environ.Env()

    def _raw(self, name: str, default: object) -> object:
        value = self.env.str(name, default=None)
        if value is None:
            if default is _MISSING:
                raise ImproperlyConfigured(f"Set the {name} environment variable.")
            return default
        return value

    def str(self, name: str, default: object = _MISSING) -> str:
        return self._raw(name, default)  # type: ignore[return-value]

    def bool(self, name: str, default: bool | object = _MISSING) -> bool:
        value = self._raw(name, default)
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean; use one of "
            f"{', '.join(sorted(TRUE_WORDS | FALSE_WORDS - {''}))}."
        )

    def int(
        self,
        name: str,
        default: int | object = _MISSING,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
    ) -> int:
        value = self._raw(name, default)
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip(), 10)
            except ValueError:
                raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
        if min_value is not None and number < min_value:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {min_value}.")
        if max_value is not None and number > max_value:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {max_value}.")
        return number

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self._raw(name, default)).strip().lower()
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}.")
        return value

    def list(self, name: str, default: list[str] | object = _MISSING) -> list[str]:
        value = self._raw(name, default)
        if isinstance(value, list):
            return value
        return [part.strip() for part in str(value).split(",") if part.strip()]

    def db(self, name: str, default: str) -> dict:
        value = self.str(name, default)
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in environ.Env.DB_SCHEMES:
            raise ImproperlyConfigured(
                f"{name}={value!r} is not a database URL; use e.g. "
                "postgres://user:password@host:5432/name or sqlite:////absolute/path.sqlite3"
            )
        try:
            return environ.Env.db_url_config(value)
        except Exception as exc:  # django-environ raises several types for bad URLs
            raise ImproperlyConfigured(f"{name}={value!r} is not a database URL: {exc}") from None

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.str(name, default).strip()
        if value and value.split("://", 1)[0] not in schemes:
            raise ImproperlyConfigured(
                f"{name}={value!r} must start with one of {', '.join(s + '://' for s in schemes)}."
            )
        return value
