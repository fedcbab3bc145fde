"""`agents explain`'s arithmetic agrees with KEDA's ScaledJob formulas on a table of cases."""

from __future__ import annotations

import pytest

from raibid.agents.explain import decide, max_scale

# (lag, lagCount, max, running, pending) -> (maxScale, default, accurate, eager), worked by hand from
# maxScale = min(max, ceil(lag/lagCount)); default maxScale - running;
# accurate (maxScale + running - pending > max) ? max - running : maxScale - pending;
# eager min(max - running - pending, maxScale); negative means 0 new Jobs.
CASES = [
    ((0, 1, 8, 0, 0), (0, 0, 0, 0)),
    ((1, 1, 8, 0, 0), (1, 1, 1, 1)),
    ((5, 1, 8, 2, 1), (5, 3, 4, 5)),
    ((10, 1, 8, 3, 0), (8, 5, 5, 5)),
    ((20, 5, 8, 1, 1), (4, 3, 3, 4)),
    ((3, 1, 8, 8, 0), (3, 0, 0, 0)),
    ((7, 2, 8, 0, 4), (4, 4, 0, 4)),
    ((100, 1, 1, 0, 0), (1, 1, 1, 1)),
    ((2, 1, 4, 3, 2), (2, 0, 0, 0)),
]


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_formulas(args, expected):
    lag, lag_count, mx, running, pending = args
    assert max_scale(lag, lag_count, mx) == expected[0]
    got = tuple(decide(s, lag, lag_count, mx, running, pending).new_jobs for s in ("default", "accurate", "eager"))
    assert got == expected[1:]


def test_steps_show_the_numbers():
    s = decide("accurate", 10, 1, 8, 3, 0)
    assert s.steps == ["maxScale = min(max 8, ceil(lag 10 / lagCount 1)) = 8",
                       "accurate: maxScale 8 + running 3 - pending 0 = 11 > max 8, so max - running = 5"]
    neg = decide("default", 3, 1, 8, 8, 0)
    assert neg.new_jobs == 0 and neg.steps[-1] == "-5 < 0: no new Jobs"


def test_unknown_strategy():
    with pytest.raises(ValueError):
        decide("custom", 1, 1, 1, 0, 0)
