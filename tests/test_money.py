from decimal import Decimal

import pytest
from billing_gateway import Gateway, InvalidAmount, InvalidEvent, from_micros, to_micros
from billing_gateway.money import micros_text


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
        # Only plain ASCII decimals, as in events: no separators, other digits, spaces or signs.
        "1_000",
        "\u0661\u0662",
        " 5 ",
        "5 ",
        "\t5",
        "+5",
        ".5",
        "5.",
        "1e",
        "1e1234567",
        "1e-9999999999",
        "0x10",
        "\uff15",
    ],
)
def test_to_micros_rejects(value: Decimal | str | int | float) -> None:
    with pytest.raises(InvalidAmount):
        to_micros(value)


def test_huge_exponents_and_digit_strings_are_quick_and_exact() -> None:
    assert to_micros("1" + "0" * 5000 + "e-5000") == 1_000_000
    assert to_micros("1." + "0" * 5000) == 1_000_000
    assert to_micros(Decimal("1E-999999999") * 0) == 0
    for bad in (
        "1e-999999",
        "0." + "0" * 5000 + "1",
        "9" * 5000,
        Decimal("1E-999999999"),
        Decimal("1E+99999"),
    ):
        with pytest.raises(InvalidAmount):
            to_micros(bad)


def test_to_micros_agrees_with_the_event_parser() -> None:
    """Event amounts are parsed in Rust; ``to_micros`` takes the same strings to the same value."""
    from .conftest import created

    texts = ["0", "00", "007", "1", "0.25", "1.5e2", "25E-2", "1E+2", "1e-6", "0.000001", "1.0000000"]
    texts += [
        "1e-7",
        "0.0000001",
        "-0",
        "1_0",
        " 1",
        "1 ",
        "+1",
        ".5",
        "5.",
        "1e",
        "e1",
        "\u0661",
        "1e1234567",
    ]
    for text in texts:
        gw = Gateway()
        try:
            expected: int | None = to_micros(text)
        except InvalidAmount:
            expected = None
        try:
            gw.apply(created(total="0").replace(b'"total_budget":0', f'"total_budget":"{text}"'.encode()))
        except InvalidEvent:
            got = None
        else:
            got = gw.budgets()[0].total
        if text == "-0":  # to_micros takes signed amounts; an event's budget cannot be negative
            assert (expected, got) == (0, None)
            continue
        assert got == expected, text


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
    assert micros_text(micros) == expected
    assert to_micros(result) == micros


def test_from_micros_type_error() -> None:
    with pytest.raises(TypeError):
        from_micros(1.5)  # type: ignore[arg-type]
