#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderpipe.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        # Import the settings now: a malformed environment variable is a one-line operator
        # error naming the variable, not a traceback from deep inside Django's start-up.
        settings.INSTALLED_APPS  # noqa: B018
        # So is a configuration an app refuses when it loads (stats: an access mode that
        # could let no one in) or a command refuses as it starts.
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"Configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
