"""benchmark/probes/ddpo_gradient_step.py's fit of the reward along the gradient line."""

import pytest

from benchmark.probes.ddpo_gradient_step import line_fit


def test_line_fit_recovers_slope_and_curvature_of_a_parabola():
    def f(eps):
        return 22.0 + 0.6 * eps - 1.2 * eps**2

    slope, curvature = line_fit({e: f(e) for e in (0.0, 1.5, -1.5, 0.5, -0.5)})
    assert slope == pytest.approx(0.6) and curvature == pytest.approx(1.2)
    # the best step along the line, slope / (2 curvature), gains slope^2 / (4 curvature)
    best = slope / (2 * curvature)
    assert f(best) - f(0.0) == pytest.approx(slope**2 / (4 * curvature))


def test_line_fit_needs_the_origin_and_a_symmetric_pair():
    with pytest.raises(ValueError, match="pair"):
        line_fit({0.0: 1.0, 0.5: 2.0})
    with pytest.raises(ValueError, match="f\\(0\\)"):
        line_fit({0.5: 2.0, -0.5: 1.0})
