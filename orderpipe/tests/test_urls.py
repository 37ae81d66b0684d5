"""The project's routes (``orderpipe/urls.py``) beyond the apps' own."""

from __future__ import annotations

from rest_framework.test import APIClient


def test_bare_admin_path_redirects_to_the_admin(api: APIClient) -> None:
    response = api.get("/admin")
    assert (response.status_code, response["Location"]) == (301, "/admin/")
