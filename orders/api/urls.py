"""Orders API routes: ids may hold any character (percent-encoded, ``/`` as ``%2F``).

A regex rather than a converter, so an over-long id reaches the view and is a 400 naming the
parameter, not the resolver's 404; ``[\\s\\S]`` (any character) rather than ``.``, which
stops at a newline. No trailing slash, like the stats API.
"""

from __future__ import annotations

from django.urls import re_path

from orders.api.views import OrderDetailView, UserOrdersView

urlpatterns = [
    re_path(r"^orders/(?P<order_id>[\s\S]+)$", OrderDetailView.as_view(), name="order"),
    re_path(r"^users/(?P<user_id>[\s\S]+)/orders$", UserOrdersView.as_view(), name="user-orders"),
]
