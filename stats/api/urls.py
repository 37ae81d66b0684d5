"""Stats API routes: exact paths without a trailing slash, plus the OpenAPI schema and docs.

Swagger UI's assets come from drf-spectacular-sidecar and are served here (not from a CDN, not
through ``collectstatic``), so /api/docs works offline and under gunicorn with DEBUG off.
``/metrics`` (``MetricsViewSet``) is routed in ``orderpipe/urls.py``, which hands it the
orders app's count of waiting events.
"""

from __future__ import annotations

from pathlib import Path

import drf_spectacular_sidecar
from django.urls import path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from stats.api.views import (
    ApiRootView,
    HealthViewSet,
    ProductStatsViewSet,
    StatsViewSet,
    UserStatsViewSet,
)

SWAGGER_UI_ASSETS = (
    Path(drf_spectacular_sidecar.__file__).parent
    / "static"
    / "drf_spectacular_sidecar"
    / "swagger-ui-dist"
)

router = SimpleRouter(trailing_slash=False)
router.register("users", UserStatsViewSet, basename="user")
router.register("stats", StatsViewSet, basename="stats")
router.register("products", ProductStatsViewSet, basename="product")

urlpatterns = [
    path("", ApiRootView.as_view(), name="api-root"),
    *router.urls,
    # Single-object endpoints: explicit routes, as a router would call them "list" views.
    path("health", HealthViewSet.as_view({"get": "check"}), name="health"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(
        r"^api/docs/assets/(?P<path>[\w.-]+)$",
        serve,
        {"document_root": SWAGGER_UI_ASSETS},
        name="docs-assets",
    ),
]
