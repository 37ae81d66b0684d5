"""Strict readers for environment variables.

django-environ casts leniently (``DEBUG=maybe`` is silently False, ``REDIS_PORT=abc`` fails
deep inside a traceback). A deployment should instead refuse to start with a message that
names the variable, so every typed setting goes through these helpers.

No message prints a password: a value that looks like a URL is shown with its password
replaced (``postgres://u:***@host/db``). A URL that parses but cannot work (a port that is not
a number, a Redis database that is not one) is refused here too, at start-up, rather than
failing later inside a client library with a traceback.
"""

from __future__ import annotations

import builtins
import enum
import re
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import environ
import redis.connection
from django.core.exceptions import ImproperlyConfigured

from orderpipe.money import currency_problem
from orderpipe.timeutils import zone_problem

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class _Missing(enum.Enum):
    """No default: the variable must be set (an enum member, so a type can say so)."""

    MISSING = enum.auto()


_MISSING = _Missing.MISSING
_T = TypeVar("_T")
MASK = "***"
# Query parameters that carry a credential (``?password=``) are masked like the userinfo.
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
# scheme://user: … @ up to the last @ (greedy), for URLs urlsplit cannot take apart.
_LOOSE_USERINFO = re.compile(r"^([^:/]*://[^:/@]*:).*@")


def redact_url(value: str) -> str:
    """``value`` with any password replaced by ``***``: in the userinfo
    (``postgres://u:***@host/db``) and in credential-like query parameters (``?password=``).

    A password that does not even split as one (an unescaped ``/`` in it, a broken host) is
    still masked: then everything from the user's ``:`` to the last ``@`` is.
    """
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        parts, password = None, None
    if parts is None or (password is None and "@" in value.partition("://")[2]):
        return _LOOSE_USERINFO.sub(rf"\g<1>{MASK}@", value)
    netloc, query = parts.netloc, parts.query
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    if query and _SECRET_PARAMETER.search(query):
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if _SECRET_PARAMETER.search(k) else v) for k, v in pairs], safe="*"
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return value  # nothing to hide: as written (urlunsplit would respell sqlite:////x)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def shown(value: object) -> str:
    """How an offending value appears in an error: ``repr``, URLs without their password."""
    if isinstance(value, str) and "://" in value:
        return repr(redact_url(value))
    return repr(value)


def _port_problem(value: str) -> str | None:
    """Why the host/port part of a URL cannot work (None when it can)."""
    try:
        port = urlsplit(value).port
    except ValueError as exc:  # "Port could not be cast to integer value as 'x'", IPv6 …
        return str(exc)
    if port == 0:
        return "port 0 is not a port a server listens on"
    return None


def redis_url_problem(value: str) -> str | None:
    """Why redis-py could not connect with ``value`` (None when it could), read with redis-py's
    own parser, plus what it silently ignores: a database number that is not an integer."""
    try:
        kwargs = redis.connection.parse_url(value)
    except ValueError as exc:
        return str(exc)
    if value.startswith("unix://"):
        return None  # a socket path; the database number can only be ?db=, checked above
    problem = _port_problem(value)
    if problem is None and "db" not in kwargs:
        path = urlsplit(value).path.strip("/")
        if path and not path.isdigit():
            problem = f"the database number {path!r} is not a whole number"
    return problem


def cluster_url_problem(value: str) -> str | None:
    """Why a Redis Cluster client could not use the Redis URL ``value`` (None when it could)."""
    if value.startswith("unix://"):
        return "a cluster is reached over TCP (redis:// or rediss://), not a unix socket"
    db = redis.connection.parse_url(value).get("db", 0)
    if int(db) != 0:
        return f"a cluster has only database 0, not {db}"
    return None


class StrictEnv:
    """Wraps one ``environ.Env`` and validates each value it hands out.

    Its readers are named after the types they return (``env.str``, ``env.int``, as
    django-environ's are), so inside the class the annotations spell ``builtins.str``.
    """

    def __init__(self, env: environ.Env | None = None) -> None:
        self.env = env or environ.Env()

    def _raw(self, name: builtins.str, default: _T | _Missing) -> builtins.str | _T:
        # Env.str's own call, whose annotation (unlike the code) refuses a None default.
        value: builtins.str | None = self.env.get_value(name, cast=str, default=None)
        if value is None:
            if default is _MISSING:
                raise ImproperlyConfigured(f"Set the {name} environment variable.")
            return default
        return value

    def str(self, name: builtins.str, default: builtins.str | _Missing = _MISSING) -> builtins.str:
        return self._raw(name, default)

    def bool(
        self, name: builtins.str, default: builtins.bool | _Missing = _MISSING
    ) -> builtins.bool:
        value = self._raw(name, default)
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(
            f"{name}={shown(value)} is not a boolean; use one of "
            f"{', '.join(sorted(TRUE_WORDS | FALSE_WORDS - {''}))}."
        )

    def int(
        self,
        name: builtins.str,
        default: builtins.int | _Missing = _MISSING,
        *,
        min_value: builtins.int | None = None,
        max_value: builtins.int | None = None,
    ) -> builtins.int:
        value = self._raw(name, default)
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip(), 10)
            except ValueError:
                raise ImproperlyConfigured(f"{name}={shown(value)} is not an integer.") from None
        if min_value is not None and number < min_value:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {min_value}.")
        if max_value is not None and number > max_value:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {max_value}.")
        return number

    def choice(
        self, name: builtins.str, choices: tuple[builtins.str, ...], default: builtins.str
    ) -> builtins.str:
        value = str(self._raw(name, default)).strip().lower()
        if value not in choices:
            raise ImproperlyConfigured(
                f"{name}={shown(value)} must be one of {', '.join(choices)}."
            )
        return value

    def list(
        self, name: builtins.str, default: builtins.list[builtins.str] | _Missing = _MISSING
    ) -> builtins.list[builtins.str]:
        value = self._raw(name, default)
        if isinstance(value, list):
            return value
        return [part.strip() for part in str(value).split(",") if part.strip()]

    def time_zone(self, name: builtins.str, default: builtins.str) -> ZoneInfo:
        """An IANA time zone (``Europe/London``), exactly as the IANA list spells it."""
        value = self.str(name, default).strip()
        problem = zone_problem(value)
        if problem is not None:
            raise ImproperlyConfigured(f"{name}={shown(value)} {problem}.")
        return ZoneInfo(value)

    def currency(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """An ISO 4217 currency code with a minor unit (``USD``; ``usd`` is read as ``USD``)."""
        value = self.str(name, default).strip()
        code = value.upper() if value.isascii() else value
        problem = currency_problem(code)
        if problem is not None:
            raise ImproperlyConfigured(f"{name}={shown(value)} {problem}.")
        return code

    def db(self, name: builtins.str, default: builtins.str) -> dict[builtins.str, Any]:
        """A ``DATABASES`` entry: django-environ's, whose values are of several types."""
        value = self.str(name, default)
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in environ.Env.DB_SCHEMES:
            raise ImproperlyConfigured(
                f"{name}={shown(value)} is not a database URL; use e.g. "
                "postgres://user:password@host:5432/name or sqlite:////absolute/path.sqlite3"
            )
        try:
            config: dict[builtins.str, Any] = environ.Env.db_url_config(value)
        except Exception as exc:  # django-environ raises several types for bad URLs
            raise ImproperlyConfigured(
                f"{name}={shown(value)} is not a database URL: {_without_password(exc, value)}"
            ) from None
        problem = None
        if "sqlite" not in config["ENGINE"]:
            problem = _port_problem(value)
            if problem is None and not config.get("NAME"):
                problem = "it names no database (the path after the host)"
        if problem is not None:
            raise ImproperlyConfigured(f"{name}={shown(value)} cannot work: {problem}.")
        return config

    def url(
        self, name: builtins.str, default: builtins.str, schemes: tuple[builtins.str, ...]
    ) -> builtins.str:
        """A URL with one of ``schemes`` (or empty), whose host and port can work."""
        return self._checked_url(name, self.str(name, default).strip(), schemes)

    def redis_url(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """``url`` for Redis, also checked with redis-py's own URL parser (what django-redis
        uses), so a URL it would refuse or misread stops start-up, not the first command."""
        # The default is built from REDIS_HOST and REDIS_PORT: say so when it is the culprit.
        is_set = self.env.get_value(name, cast=str, default=None) is not None
        origin = "" if is_set else " (from REDIS_HOST)"
        value = self._checked_url(
            name, self.str(name, default).strip(), ("redis", "rediss", "unix"), origin
        )
        problem = redis_url_problem(value)
        if problem is not None:
            raise ImproperlyConfigured(
                f"{name}={shown(value)}{origin} cannot work: {_without_password(problem, value)}."
            )
        return value

    @staticmethod
    def _checked_url(
        name: builtins.str,
        value: builtins.str,
        schemes: tuple[builtins.str, ...],
        origin: builtins.str = "",
    ) -> builtins.str:
        if value and value.split("://", 1)[0] not in schemes:
            raise ImproperlyConfigured(
                f"{name}={shown(value)}{origin} must start with one of "
                f"{', '.join(s + '://' for s in schemes)}."
            )
        if value and not value.startswith("unix://"):
            problem = _port_problem(value)
            if problem is None and not urlsplit(value).hostname:
                problem = "it names no host"
            if problem is not None:
                raise ImproperlyConfigured(
                    f"{name}={shown(value)}{origin} cannot work: "
                    f"{_without_password(problem, value)}."
                )
        return value


def _without_password(error: object, url: str) -> str:
    """A library's error text about ``url``, without the password in case it quotes it."""
    text = str(error)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(password, MASK) if password else text
    return text.rstrip(".")  # the caller ends the sentence
