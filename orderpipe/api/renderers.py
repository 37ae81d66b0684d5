"""JSON whose money is exact to the cent: the default renderer of both APIs.

DRF's ``JSONEncoder`` turns a ``Decimal`` into a ``float`` (or a string), so 1000000000010.99
would come out as 1000000000010.9900 at best and 1000000000011.0 at worst. ``ExactJSONRenderer``
encodes with simplejson instead, whose C encoder writes a ``Decimal`` as its own digits
(``use_decimal``); everything else DRF knows (dates, lazy strings, ...) still goes through DRF's
encoder, and indenting for the browsable API, strict NaN handling and the U+2028/U+2029
escaping stay as in DRF's ``JSONRenderer``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import simplejson
from rest_framework.compat import INDENT_SEPARATORS, LONG_SEPARATORS, SHORT_SEPARATORS
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

# DRF's conversions (datetime with "Z", lazy strings, UUID, ...) for what simplejson lacks.
_drf_default = JSONEncoder().default


@functools.cache
def _exact_encoder(
    indent: int | None, separators: tuple[str, str], ensure_ascii: bool, allow_nan: bool
) -> simplejson.JSONEncoder:
    """One encoder per option set: ``encode`` keeps no state between calls (thread-safe)."""
    return simplejson.JSONEncoder(
        use_decimal=True,
        # Like the stdlib's json: a namedtuple is an array, not an object.
        namedtuple_as_object=False,
        # Bodies are trees the views build; skipping the cycle bookkeeping saves a fifth of
        # the encoding, and a cyclic structure would still fail (RecursionError), not loop.
        check_circular=False,
        default=_drf_default,
        indent=indent,
        separators=separators,
        ensure_ascii=ensure_ascii,
        allow_nan=allow_nan,
    )


class ExactJSONRenderer(JSONRenderer):
    """Emits ``Decimal`` values as exact JSON numbers (299.99, never 299.98999)."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        indent = self.get_indent(accepted_media_type or "", renderer_context or {})
        if indent is None:
            separators = SHORT_SEPARATORS if self.compact else LONG_SEPARATORS
        else:
            separators = INDENT_SEPARATORS
        encoder = _exact_encoder(indent, separators, self.ensure_ascii, not self.strict)
        text = encoder.encode(data)
        # As DRF does: U+2028/U+2029 escaped, so the output is also valid JavaScript.
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def dumps_exact(data: Any) -> str:
    """Exact-money JSON text of ``data`` outside a DRF response (benchmarks, logs)."""
    return ExactJSONRenderer().render(data).decode()
