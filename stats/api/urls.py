"""Stats API routes (filled in by the stats API)."""

from __future__ import annotations

urlpatterns: list = []
