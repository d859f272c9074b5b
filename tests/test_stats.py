"""The one percentile the bench and the stress figures report: nearest rank, q in 0..1, NaN for none."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from korea_investment_stock.testing import percentile
from korea_investment_stock.testing.stats import percentile as percentile_from_module

FOUR = [40.0, 10.0, 30.0, 20.0]  # unsorted on purpose


def test_exported_from_the_testing_package() -> None:
    assert percentile is percentile_from_module


@pytest.mark.parametrize("q", [0.0, 0.5, 0.95, 1.0])
def test_one_value_is_every_percentile(q: float) -> None:
    assert percentile([7.5], q) == 7.5


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.0, 10.0),  # rank clamped up to 1: the minimum
        (0.25, 10.0),  # ceil(1.0) = 1
        (0.5, 20.0),  # ceil(2.0) = 2, not the interpolated 25
        (0.51, 30.0),  # ceil(2.04) = 3
        (0.95, 40.0),  # ceil(3.8) = 4
        (1.0, 40.0),  # the maximum
    ],
)
def test_nearest_rank_of_four(q: float, expected: float) -> None:
    assert percentile(FOUR, q) == expected


def test_input_is_not_reordered() -> None:
    values = list(FOUR)
    percentile(values, 0.5)
    assert values == FOUR


def test_no_values_is_nan_not_a_measured_looking_zero() -> None:
    assert math.isnan(percentile([], 0.5))
    assert math.isnan(percentile((), 0.0))


@pytest.mark.parametrize("q", [-0.01, 1.01, 95.0, math.nan, math.inf])
def test_q_outside_zero_to_one_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        percentile(FOUR, q)


def test_bad_q_is_refused_even_without_values() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


values_strategy = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50)
q_strategy = st.floats(min_value=0.0, max_value=1.0)


@given(values_strategy, q_strategy, q_strategy)
def test_result_is_an_input_value_and_monotone_in_q(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    at_low, at_high = percentile(values, low), percentile(values, high)
    assert at_low in values
    assert at_high in values
    assert at_low <= at_high
    assert min(values) <= at_low and at_high <= max(values)
