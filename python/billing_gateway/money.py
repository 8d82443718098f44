"""Money as integer micro-units (1 unit of currency = 1_000_000), converted exactly."""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import InvalidAmount

__all__ = ["MICROS_PER_UNIT", "from_micros", "to_micros"]

MICROS_PER_UNIT = 1_000_000
_MAX_MICROS = 2**63 - 1  # amounts are held in 64-bit integers
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,6})?")
"""The JSON number grammar, the one the event parser reads amounts with (plus a sign)."""


def to_micros(value: Decimal | str | int | float) -> int:
    """Converts an amount in whole units to micro-units, exactly.

    ``"0.25"`` -> ``250_000``; an ``int`` means whole units (``2`` -> ``2_000_000``).
    A ``float`` is read as the shortest decimal that prints as it (``0.1`` -> ``100_000``).
    A ``str`` is a plain ASCII decimal as in events (``-``, digits, ``.digits``, an exponent
    of at most 6 digits): no spaces, ``_``, ``+`` or non-ASCII digits.
    More than 6 significant decimal places, NaN, infinity, a non-numeric string or an
    amount beyond 64-bit micro-units raise :class:`InvalidAmount`; nothing is ever rounded.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int | float):
        raise TypeError(f"amount must be a Decimal, str, int or float, not {type(value).__name__}")
    if isinstance(value, int):
        return _in_range(value * MICROS_PER_UNIT, value)
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise InvalidAmount(f"not a decimal number: {value!r}")
        number = Decimal(value)
    else:
        number = Decimal(repr(value)) if isinstance(value, float) else value
    if not number.is_finite():
        raise InvalidAmount(f"amount must be finite, got {value!r}")
    if number.is_zero():
        return 0
    # Exact integer arithmetic on the digits (Decimal operations would round to the
    # context), bounded before any big power of ten is computed.
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite numbers have an integer exponent
    coefficient = "".join(map(str, digits))
    significant = coefficient.rstrip("0")
    exponent += len(coefficient) - len(significant)
    if exponent < -6:
        raise InvalidAmount(f"more than 6 decimal places: {value!r}")
    if len(significant) + exponent + 6 > 19:  # at least 10**19 micro-units
        raise InvalidAmount(f"amount {value!r} is too large for 64-bit micro-units")
    micros = int(significant) * 10 ** (exponent + 6)
    return _in_range(-micros if sign else micros, value)


def _in_range(micros: int, value: object) -> int:
    if abs(micros) > _MAX_MICROS:
        raise InvalidAmount(f"amount {value!r} is too large for 64-bit micro-units")
    return micros


def from_micros(micros: int) -> Decimal:
    """Converts micro-units to a ``Decimal`` of whole units: ``250_000`` -> ``Decimal("0.25")``."""
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micros must be an int, not {type(micros).__name__}")
    return Decimal(micros_text(micros))


def micros_text(micros: int) -> str:
    """``str(from_micros(micros))`` without the ``Decimal`` (a response header's figure)."""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    sign = "-" if micros < 0 else ""
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")
