"""URL routes: the admin, the orders API (orders.api.urls), the stats API (stats.api.urls) and
the OpenAPI schema.

Unknown paths and unhandled errors answer JSON (``{"detail": ...}``) like the API itself, so a
client of the API never has to parse an HTML error page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView

from orders.admin import rejects_panel
from orders.api.metrics import waiting_events
from stats.api.views import MetricsViewSet
from stats.dashboard import dashboard


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def json_server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)


handler404 = json_not_found
handler500 = json_server_error

urlpatterns = [
    # The stats dashboard, with the orders app's rejects below its figures.
    path("admin/dashboard/", dashboard(rejects_panel), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    # APPEND_SLASH is off (the API's paths have none), so the admin's bare path redirects here.
    path("admin", RedirectView.as_view(url="/admin/", permanent=True)),
    # Log in / out links of the browsable API (used when STATS_API_AUTH=session).
    path("api-auth/", include("rest_framework.urls")),
    # /metrics, with the orders app's count of events waiting for their order.
    path(
        "metrics",
        MetricsViewSet.as_view({"get": "scrape"}, waiting_events=waiting_events),
        name="metrics",
    ),
    path("", include("orders.api.urls")),
    path("", include("stats.api.urls")),
]
