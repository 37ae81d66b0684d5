"""Protection of both APIs, switched by settings at request time.

``STATS_API_AUTH`` (none | token | session; token unless DEBUG) and ``STATS_THROTTLE_RATE``
are read per request rather than frozen into class attributes at import, so one deployment
flag (or a test's ``settings`` fixture) changes behaviour without touching the views. With
authentication on, reading needs the ``stats.view_stats`` permission (``stats.models``): any
account, a shop customer's say, must not read every user's spend. An open API is a decision,
so it is logged at every start (``log_access_mode``), and a mode that could let no one in
stops start-up (``access_problem``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from orderpipe.api.negotiation import FormatParamMixin
from stats.models import VIEW_STATS

if TYPE_CHECKING:
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

_AUTHENTICATORS: dict[str, tuple[type[BaseAuthentication], ...]] = {
    "none": (),
    "token": (TokenAuthentication,),
    "session": (SessionAuthentication, TokenAuthentication),
}


# What each mode needs installed to let anyone in: tokens are rows of DRF's authtoken app
# (created with ``manage.py drf_create_token USER`` or in its admin), sessions need Django's.
# Session mode accepts tokens too, so it needs both.
_NEEDED_APPS: dict[str, tuple[str, ...]] = {
    "none": (),
    "token": ("rest_framework.authtoken",),
    "session": ("django.contrib.sessions", "rest_framework.authtoken"),
}


def authenticators_for_settings() -> list[BaseAuthentication]:
    """No authenticator at all when auth is off: no session or token lookup per request."""
    return [cls() for cls in _AUTHENTICATORS[settings.STATS_API_AUTH]]


def access_problem() -> str | None:
    """Why ``STATS_API_AUTH`` could let no one in (None when it can): then the APIs would
    answer 401 to every client, so start-up is refused instead (``stats.apps``)."""
    mode = settings.STATS_API_AUTH
    missing = [app for app in _NEEDED_APPS[mode] if app not in settings.INSTALLED_APPS]
    if not missing:
        return None
    return (
        f"STATS_API_AUTH={mode} needs {' and '.join(missing)} in INSTALLED_APPS: no client "
        "could get in without it (API tokens are created with `manage.py drf_create_token "
        "USER`); add it, or set STATS_API_AUTH=none to open the APIs on purpose"
    )


def log_access_mode() -> None:
    """Say once per process start (web and consumer) who may read the APIs and /metrics: a
    WARNING when anyone may, so an open deployment is seen in the log, not found later."""
    mode = settings.STATS_API_AUTH
    if mode == "none":
        logger.warning(
            "STATS_API_AUTH=none: the stats and orders APIs and /metrics are open to anyone who "
            "can reach this site, every user's orders and spend included; set "
            "STATS_API_AUTH=token (or session) to require the %s permission",
            VIEW_STATS,
        )
    elif mode == "token":
        logger.info(
            "STATS_API_AUTH=token: the stats and orders APIs and /metrics need "
            "`Authorization: Token <key>` of an account holding %s; create a key with "
            "`python manage.py drf_create_token USER`",
            VIEW_STATS,
        )
    else:
        logger.info(
            "STATS_API_AUTH=session: the stats and orders APIs and /metrics need a login "
            "(/api-auth/login/ or the admin) or a token of an account holding %s",
            VIEW_STATS,
        )


class StatsAccess(BasePermission):
    """Everyone when ``STATS_API_AUTH=none``; otherwise an authenticated user holding
    ``stats.view_stats`` (superusers hold every permission).

    The one rule for every endpoint that exposes orders or revenue: put it in a view's
    ``permission_classes``. DRF answers 401 (token) or 403 (session) to an anonymous request,
    and 403 with ``message`` to an account without the permission.
    """

    message = f"Reading statistics needs the {VIEW_STATS} permission."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if settings.STATS_API_AUTH == "none":
            return True
        # None, not AnonymousUser, without credentials: UNAUTHENTICATED_USER is None.
        user: User | AnonymousUser | None = request.user
        return bool(user is not None and user.is_authenticated and user.has_perm(VIEW_STATS))


class StatsRateThrottle(SimpleRateThrottle):
    """``STATS_THROTTLE_RATE`` (e.g. ``100/minute``) per user, or per client IP when anonymous.

    Counters live in the default cache (Redis), so all gunicorn workers share them. When that
    cache is unreachable the request is let through: the endpoint answers 503 on its own, and
    a throttle must not turn an outage into a 500.
    """

    scope = "stats"

    def get_rate(self) -> str | None:
        return settings.STATS_THROTTLE_RATE or None

    def get_cache_key(self, request: Request, view: APIView) -> str:
        user = getattr(request, "user", None)
        ident = user.pk if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: APIView) -> bool:
        # SimpleRateThrottle parsed the rate in __init__; re-read it so settings changes apply.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.cache = cache
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # django-redis wraps every Redis failure differently
            logger.warning("throttle cache unavailable, request let through: %s", exc)
            return True


class ProtectedAPIMixin(FormatParamMixin):
    """The access rules of every endpoint that exposes orders or revenue (stats and orders
    APIs alike): authentication and ``stats.view_stats`` when STATS_API_AUTH is token or
    session; throttled by STATS_THROTTLE_RATE when it is set."""

    permission_classes = [StatsAccess]
    throttle_classes = [StatsRateThrottle]

    def get_authenticators(self) -> list[BaseAuthentication]:
        return authenticators_for_settings()

    def get_throttles(self) -> list[BaseThrottle]:
        # No throttle object per request while STATS_THROTTLE_RATE is unset (the default).
        return super().get_throttles() if settings.STATS_THROTTLE_RATE else []
