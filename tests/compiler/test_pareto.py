"""The Pareto front, the choice under a budget and the table, on hand-made (latency ms, accuracy %) points."""

from __future__ import annotations

import math

from vitrt.compiler.pareto import choose, markdown_table, pareto_front

# (latency ms, accuracy %); index: why it is (not) on the front
POINTS = [
    (1.00, 98.0),  # 0: front (most accurate)
    (0.80, 97.5),  # 1: front
    (0.90, 97.0),  # 2: dominated by 1 (slower, less accurate)
    (0.50, 90.0),  # 3: front (fastest)
    (0.80, 97.5),  # 4: duplicate of 1: only the first is kept
    None,  # 5: a failed trial
    (0.60, 90.0),  # 6: dominated by 3 (same accuracy, slower)
    (1.20, 98.0),  # 7: dominated by 0 (same accuracy, slower)
    (0.70, math.nan),  # 8: not finite: never on the front
    (0.65, 95.0),  # 9: front
]


def test_the_front_is_the_non_dominated_points_fastest_first() -> None:
    assert pareto_front(POINTS) == [3, 9, 1, 0]
    assert pareto_front([]) == [] and pareto_front([None]) == []
    assert pareto_front([(2.0, 50.0)]) == [0]


def test_the_choice_is_the_most_accurate_point_under_the_budget() -> None:
    assert choose(POINTS, 1.0) == 0  # the budget itself is allowed
    assert choose(POINTS, 0.99) == 1  # 97.5 % at 0.80 (index 1 before its duplicate 4)
    assert choose(POINTS, 0.79) == 9
    assert choose(POINTS, 0.5) == 3
    assert choose(POINTS, 0.49) is None  # none under budget
    for budget in (0.5, 0.7, 0.85, 1.0, 5.0):
        assert choose(POINTS, budget) in pareto_front(POINTS)


def test_the_markdown_table_formats_numbers_and_missing_values() -> None:
    table = markdown_table(
        [{"n": "a|b", "x": 0.125, "y": None}, {"n": "c", "x": 2, "y": 97.0}],
        [("name", "n"), ("x", "x"), ("y", "y")],
    )
    assert table.splitlines() == [
        "| name | x | y |",
        "| --- | --- | --- |",
        "| a\\|b | 0.12 | - |",
        "| c | 2 | 97.00 |",
    ]
