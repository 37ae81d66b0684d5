"""URL routes: the admin, the stats API (stats.api.urls) and its OpenAPI schema."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("stats.api.urls")),
]
