from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class StatsConfig(AppConfig):
    name = "stats"
    verbose_name = "Statistics"

    def ready(self) -> None:
        # Every process (gunicorn workers, manage.py commands) refuses to start when the
        # APIs' access mode could let no client in, rather than answering 401 to everyone.
        from orderpipe.api.access import access_problem

        if (problem := access_problem()) is not None:
            raise ImproperlyConfigured(problem)
