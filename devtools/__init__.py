"""Development and test tooling, not part of the deployed service (the image leaves it out).

``servers``: the Redis/Valkey, Valkey cluster, moto and fauxqs server processes that
``make run``, the tests, the benchmarks and the chaos run start. ``stack``: the ``make run``
launcher.
"""
