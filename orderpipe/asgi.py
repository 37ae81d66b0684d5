"""ASGI entry point."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderpipe.settings")

application = get_asgi_application()

# Imported once the apps are loaded; logged once per web process start, never per request.
from orderpipe.api.access import log_access_mode  # noqa: E402

log_access_mode()
