"""Statistics over seeds for the bench's claims: per group n, mean and sample standard deviation,
and the difference of two groups' means with a Welch 95% interval.

A "beats" claim is met only when the whole interval of the difference lies above the goal's
margin (0 for "better than"; a negative margin for "at most so many points worse"): a tie, or a
gain smaller than the seeds' noise, is a miss. The t quantile is computed here (the bench does
not depend on scipy): the Student t CDF through the regularized incomplete beta function,
inverted by bisection; tests/test_bench_stats.py checks it against closed forms and tables.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

CONFIDENCE = 0.95


def describe(values: Iterable[float | None]) -> dict:
    """{"n", "mean", "sd"} of the values that are not None (nor NaN); sd is the sample standard
    deviation (ddof = 1), None for fewer than two values; mean is None for none."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return {
        "n": len(kept),
        "mean": statistics.fmean(kept) if kept else None,
        "sd": statistics.stdev(kept) if len(kept) > 1 else None,
    }


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom (df need not be whole)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on `t_cdf` to ~1e-10."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-10:
            break
    return (low + high) / 2.0


def welch(a: Iterable[float | None], b: Iterable[float | None], confidence: float = CONFIDENCE):
    """The difference mean(a) − mean(b) with its Welch interval.

    Returns {"a": describe(a), "b": describe(b), "difference", "df", "interval": [low, high]};
    "interval" (and "df") is None when a group has fewer than two values. With both sample
    standard deviations 0 the interval is the difference itself (no noise was seen)."""
    first, second = describe(a), describe(b)
    result = {"a": first, "b": second, "difference": None, "df": None, "interval": None}
    if first["mean"] is None or second["mean"] is None:
        return result
    difference = first["mean"] - second["mean"]
    result["difference"] = difference
    if first["n"] < 2 or second["n"] < 2:
        return result
    va, vb = first["sd"] ** 2 / first["n"], second["sd"] ** 2 / second["n"]
    error = math.sqrt(va + vb)
    if error == 0.0:
        result["interval"] = [difference, difference]
        return result
    df = (va + vb) ** 2 / (va**2 / (first["n"] - 1) + vb**2 / (second["n"] - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * error
    result["df"] = df
    result["interval"] = [difference - half, difference + half]
    return result


def against_constant(
    values: Iterable[float | None], reference: float, confidence: float = CONFIDENCE
) -> dict:
    """reference − mean(values) with the one-sample t interval, in `welch`'s layout: for a
    reference measured once (the pretrained policy's evaluation), whose own noise is not known
    ("a" is {"n": 1, "mean": reference, "sd": None})."""
    sample = describe(values)
    result = {
        "a": {"n": 1, "mean": reference, "sd": None},
        "b": sample,
        "difference": None,
        "df": None,
        "interval": None,
    }
    if sample["mean"] is None:
        return result
    difference = reference - sample["mean"]
    result["difference"] = difference
    if sample["n"] < 2:
        return result
    error = sample["sd"] / math.sqrt(sample["n"])
    if error == 0.0:
        result["interval"] = [difference, difference]
        return result
    result["df"] = sample["n"] - 1
    half = t_quantile(0.5 + confidence / 2.0, result["df"]) * error
    result["interval"] = [difference - half, difference + half]
    return result


def beats(comparison: dict, margin: float = 0.0) -> bool:
    """Met only when the interval of the difference lies wholly above `margin` (a comparison
    without an interval, fewer than two seeds a side, is not met)."""
    interval = comparison.get("interval")
    return interval is not None and interval[0] > margin


def rounded(comparison: dict, digits: int = 4) -> dict:
    """A `welch` result for claims.json: n, mean and sample SD of each side, the difference,
    its interval and degrees of freedom, rounded."""

    def r(value):
        return None if value is None else round(value, digits)

    return {
        "n": [comparison["a"]["n"], comparison["b"]["n"]],
        "mean": [r(comparison["a"]["mean"]), r(comparison["b"]["mean"])],
        "sd": [r(comparison["a"]["sd"]), r(comparison["b"]["sd"])],
        "difference": r(comparison["difference"]),
        "interval_95": None
        if comparison["interval"] is None
        else [r(v) for v in comparison["interval"]],
        "df": r(comparison["df"]) if comparison["df"] is not None else None,
    }


def interval_text(comparison: dict, digits: int = 3) -> str:
    """`+0.103 [+0.021, +0.185]`: the difference and its 95% interval (or "n/a")."""
    if comparison["difference"] is None:
        return "n/a"
    text = f"{comparison['difference']:+.{digits}f}"
    if comparison["interval"] is None:
        return text + " [n < 2]"
    low, high = comparison["interval"]
    return f"{text} [{low:+.{digits}f}, {high:+.{digits}f}]"


def seed_values(seeds: dict, key: str, *path: str) -> list[float | None]:
    """The value `key` of each seed's record in a summary's {seed: record} (through the nested
    dicts `path` first, e.g. ("by_kind", "trap")), in seed order; JSON's string seeds too."""
    values = []
    for seed in sorted(seeds, key=int):
        record = seeds[seed]
        for step in path:
            record = record.get(step, {}) if record is not None else None
        values.append(None if record is None else record.get(key))
    return values


# -- the ledger: which seeds chose the settings, which judged them -------------------------------
# The bench's choices (the sweep's best targets, the testbed's trap share, the recipes' gains)
# were made on these seeds; a verdict on them is in-sample, one on other seeds tests the choice.
CHOSE = (1, 2, 3)


def ledger(seeds: Iterable) -> dict:
    """{"chose": the seeds the settings were chosen on, "used": the seeds of this verdict,
    "judged": whether none of them chose (the verdict tests the choice)}."""
    used = sorted({int(s) for s in seeds})
    return {"chose": list(CHOSE), "used": used, "judged": bool(used) and not set(used) & set(CHOSE)}
