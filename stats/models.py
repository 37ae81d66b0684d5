"""The stats app's permissions. The statistics themselves live in Redis (``stats.store``).

``stats.view_stats`` guards reading revenue and order counts (the stats API when
``STATS_API_AUTH`` is token or session, and the staff dashboard): an account alone, a shop
customer's say, is not enough. Django keeps permissions per model, so a model without a table
owns it; grant it to groups in the admin (superusers have every permission).
"""

from __future__ import annotations

from django.db import models

VIEW_STATS = "stats.view_stats"


class StatsPermission(models.Model):
    """No table, no rows: only the owner of the stats app's custom permissions."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_stats", "Can view order statistics and revenue")]
        verbose_name = "statistics"
        verbose_name_plural = "statistics"

    def __str__(self) -> str:
        return "statistics"
