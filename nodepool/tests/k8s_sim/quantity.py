"""Resource quantities (``500m``, ``2Gi``, ``1e3``) parsed and written back
in the canonical form the API server stores.

The server never echoes a quantity as sent: ``cpu: 2`` comes back as
``"2"``, ``1024Mi`` as ``"1Gi"``, ``0.5`` as ``"500m"``, ``2.00`` as
``"2"``.  A driver comparing what it asked for with what it reads back must
cope with that, so the simulator does the same.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, localcontext

from nodepool.tests.k8s_sim.errors import ApiError

# The API server's own wording, regular expression included.
QUANTITY_ERROR = ("quantities must match the regular expression "
                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")

_NUMBER = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL.items()}
_EXPONENT = re.compile(r"^[eE]([+-]?[0-9]+)$")


class Quantity:
    """A parsed quantity: exact value plus the format it was written in."""

    def __init__(self, value: Decimal, fmt: str) -> None:
        self.value = value
        self.fmt = fmt  # "BinarySI", "DecimalSI" or "DecimalExponent"

    def canonical(self) -> str:
        return _canonical(self.value, self.fmt)


def parse(text: object) -> Quantity:
    """Parse a JSON value (string or number) as a quantity; 400 if it is none."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ApiError(400, QUANTITY_ERROR)
    raw = str(text) if not isinstance(text, float) else repr(text)
    match = _NUMBER.match(raw.strip())
    if not match:
        raise ApiError(400, QUANTITY_ERROR)
    number, suffix = match.groups()
    with localcontext() as ctx:
        ctx.prec = 60
        value = Decimal(number)
        if suffix in _BINARY:
            return Quantity(value * (Decimal(1024) ** _BINARY[suffix]), "BinarySI")
        if suffix in _DECIMAL:
            return Quantity(value.scaleb(_DECIMAL[suffix]), "DecimalSI")
        exp = _EXPONENT.match(suffix)
        if exp:
            return Quantity(value.scaleb(int(exp.group(1))), "DecimalExponent")
    raise ApiError(400, QUANTITY_ERROR)


def canonicalize(value: object) -> str:
    return parse(value).canonical()


def _canonical(value: Decimal, fmt: str) -> str:
    with localcontext() as ctx:
        ctx.prec = 60
        # Anything finer than nano-units is rounded up, as the server does.
        value = value.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)
        if value == 0:
            return "0"
        if fmt == "BinarySI" and (abs(value) < 1024 or value != value.to_integral_value()):
            fmt = "DecimalSI"
        if fmt == "BinarySI":
            for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
                unit = Decimal(1024) ** power
                if value % unit == 0:
                    return f"{_plain(value / unit)}{suffix}"
            return _plain(value)
        for exp in range(18, -12, -3):
            mantissa = value.scaleb(-exp)
            if mantissa == mantissa.to_integral_value():
                if fmt == "DecimalExponent":
                    return _plain(mantissa) + (f"e{exp}" if exp else "")
                return _plain(mantissa) + _DECIMAL_SUFFIX[exp]
        return _plain(value)


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
