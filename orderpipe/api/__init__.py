"""What the stats API (``stats.api``) and the orders API (``orders.api``) share.

One module per idea: who may read (``access``), how errors look and are documented
(``errors``), how ``?format=`` picks a renderer (``negotiation``), exact-money JSON
(``renderers``, ``fields``) and the rule for ids in URL paths (``ids``). Neither API imports
anything from the other.
"""
