from decimal import Decimal

import pytest
from billing_gateway import InvalidAmount, from_micros, to_micros


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.25", 250_000),
        (Decimal("0.25"), 250_000),
        (2, 2_000_000),
        ("100.00", 100_000_000),
        ("0.000001", 1),
        (0.1, 100_000),
        (0.25, 250_000),
        ("1e2", 100_000_000),
        ("1.0000000", 1_000_000),
        ("-1.5", -1_500_000),
        ("0", 0),
        (Decimal("0E-20"), 0),
        ("123456789012.345678", 123_456_789_012_345_678),
    ],
)
def test_to_micros_exact(value: Decimal | str | int | float, expected: int) -> None:
    assert to_micros(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0.0000001",
        "1.1234567",
        Decimal("0.0000005"),
        "NaN",
        "sNaN",
        "inf",
        "-Infinity",
        float("nan"),
        float("inf"),
        "abc",
        "",
        "1,5",
        0.1234567,
        "1e30",
        10**20,
        # More digits than Decimal's default 28-digit context: must not be rounded.
        "1234567890123456789012.1234567",
    ],
)
def test_to_micros_rejects(value: Decimal | str | int | float) -> None:
    with pytest.raises(InvalidAmount):
        to_micros(value)


def test_invalid_amount_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="6 decimal places"):
        to_micros("0.0000001")


@pytest.mark.parametrize("value", [None, True, [1], b"1"])
def test_to_micros_type_errors(value: object) -> None:
    with pytest.raises(TypeError):
        to_micros(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micros", "expected"),
    [
        (250_000, "0.25"),
        (2_000_000, "2"),
        (100_000_000, "100"),
        (1, "0.000001"),
        (0, "0"),
        (-1_500_000, "-1.5"),
    ],
)
def test_from_micros(micros: int, expected: str) -> None:
    result = from_micros(micros)
    assert result == Decimal(expected)
    assert str(result) == expected
    assert to_micros(result) == micros


def test_from_micros_type_error() -> None:
    with pytest.raises(TypeError):
        from_micros(1.5)  # type: ignore[arg-type]
