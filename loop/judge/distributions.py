"""Student-t and chi-square quantiles, digamma and trigamma: what the sequential keep rule
(loop.judge.sequential) needs from a statistics library, written out so the judge needs no
scipy. Pure functions, no state; checked against published tables in tests/test_sequential.py.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from functools import lru_cache

# Student-t and chi-square quantiles from the regularised incomplete beta and gamma
# functions (continued fractions).

_EPS = 1e-14
_TINY = 1e-300


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return h


def _beta_inc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    if dof <= 0:
        raise ValueError(f"t_cdf: dof must be > 0, got {dof}")
    tail = 0.5 * _beta_inc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_bound(p: float, dof: float) -> float:
    """t_quantile at `dof` rounded down to a quarter: a slightly wider bound, and a cache
    hit for the fractional dof of an estimated prior."""
    return t_quantile(p, math.floor(dof * 4) / 4 if dof >= 0.25 else dof)


@lru_cache(maxsize=4096)
def t_quantile(p: float, dof: float) -> float:
    """The t with P(T <= t) = p (0.5 < p < 1), by bisection on t_cdf."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), got {p}")
    if dof > 1e7:
        return statistics.NormalDist().inv_cdf(p)
    return _invert(lambda t: t_cdf(t, dof), p, 1.0)


def _invert(cdf: Callable[[float], float], p: float, high: float) -> float:
    """The x >= 0 with cdf(x) = p for an increasing cdf: doubling `high` until it brackets
    p, then bisection to a relative 1e-12."""
    low = 0.0
    while cdf(high) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if cdf(mid) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def _gamma_inc(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x)."""
    if x <= 0.0:
        return 0.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # the series converges fast here
        term = total = 1.0 / a
        n = 0
        while abs(term) > abs(total) * _EPS and n < 10_000:
            n += 1
            term *= x / (a + n)
            total += term
        return total * math.exp(log_front)
    b = x + 1.0 - a  # continued fraction for the upper tail Q (modified Lentz)
    c, d = 1.0 / _TINY, 1.0 / b
    h = d
    for i in range(1, 10_000):
        num = -i * (i - a)
        b += 2.0
        d = num * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + num / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return 1.0 - math.exp(log_front) * h


def chi2_quantile(p: float, dof: float) -> float:
    """The x with P(X <= x) = p for a chi-square with `dof` degrees of freedom."""
    if not 0.0 < p < 1.0 or dof <= 0:
        raise ValueError(f"chi2_quantile: needs 0 < p < 1 and dof > 0, got {p}, {dof}")
    return _invert(lambda x: _gamma_inc(dof / 2.0, x / 2.0), p, max(1.0, dof))


def digamma(x: float) -> float:
    """psi(x) for x > 0: the recurrence up to x >= 6, then the asymptotic series."""
    shift = 0.0
    while x < 6.0:
        shift -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    return shift + math.log(x) - 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def trigamma(x: float) -> float:
    """psi'(x) for x > 0, the same way."""
    shift = 0.0
    while x < 6.0:
        shift += 1.0 / (x * x)
        x += 1.0
    inv2 = 1.0 / (x * x)
    return shift + 1.0 / x + inv2 / 2 + inv2 / x * (1 / 6 - inv2 * (1 / 30 - inv2 / 42))


def trigamma_inverse(y: float) -> float:
    """The x > 0 with trigamma(x) = y (trigamma falls from infinity to 0): bisection on log x."""
    low, high = -20.0, 20.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        if trigamma(math.exp(mid)) > y:
            low = mid
        else:
            high = mid
    return math.exp(0.5 * (low + high))
