"""Statistics over seeds for leaderboards: t intervals, paired comparisons, Holm, power.

Every number here comes from ``scipy.stats`` (the Student t and noncentral t distributions)
and ``scipy.optimize.brentq``; nothing is resampled:

- the mean over seeds with its 95 % confidence interval
  ``t.interval(0.95, n - 1, loc=mean, scale=sem)`` (none with one seed; zero width when the
  seeds agree exactly);
- a row against a baseline row, paired by seed (same seed: same initialisation and data
  order; only seeds present in both rows count): the mean paired difference, its 95 % t
  interval and the paired t-test's p-value (``ttest_rel``);
- Holm's step-down correction over a table's p-values (statsmodels is not a dependency; the
  procedure is a few lines);
- the smallest paired difference a paired t-test detects at 80 % power (two-sided
  alpha = 0.05) with the pairs present, and the number of seeds needed to detect an observed
  difference at the table's corrected level (alpha / m over its m tests, so that the
  difference would be marked significant), both from the noncentral t distribution (``nct``).

Why scipy and not rliable (Agarwal et al., NeurIPS 2021; it installs, ``rliable-1.2.0``):
rliable's stratified bootstrap intervals and probability of improvement are built for many
tasks and runs. A leaderboard here has 3 to 5 seeds per row; a bootstrap over 3 values has
only 10 distinct resamples and its percentile interval is too narrow, while the t interval is
exact for normally distributed seed results and needs no resampling. rliable would also add
arch and seaborn to the dependencies for nothing the t machinery lacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 100_000
"""The largest seed count :func:`seeds_needed` searches; beyond it, it gives up (None)."""


@dataclass(frozen=True)
class Summary:
    """The mean over seeds of one cell, with the seeds' std and the 95 % t interval
    (NaN bounds with fewer than 2 seeds)."""

    mean: float
    n: int
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        """Half the width of the (symmetric) interval; NaN without one."""
        return (self.ci_high - self.ci_low) / 2


@dataclass(frozen=True)
class Comparison:
    """A row's cell against the baseline's, paired by seed.

    ``n_pairs``: seeds present in both; ``diff``: mean of (row - baseline) over them;
    ``diff_low``/``diff_high``: its 95 % t interval; ``p``: the paired t-test's p-value;
    ``p_holm``: ``p`` after Holm's correction over the table; ``sd``: the std of the paired
    differences; ``detectable``: the smallest difference detectable at 80 % power with
    ``n_pairs`` pairs; ``seeds_needed``: pairs needed to detect ``diff`` at 80 % power
    (None when significant, when ``diff`` is 0 or beyond :data:`MAX_SEEDS`); ``note``: why
    numbers are missing (``no common seeds``, ``1 common seed: no interval``).
    """

    n_pairs: int
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    significant: bool = False
    sd: float = math.nan
    detectable: float = math.nan
    seeds_needed: int | None = None
    note: str = ""


def t_interval(mean: float, sem: float, n: int) -> tuple[float, float]:
    """The 95 % Student t interval ``mean ± t(0.975, n - 1) * sem``: zero width when
    ``sem`` is 0 (scipy would give NaN), NaN bounds with fewer than 2 values."""
    if n < 2:
        return math.nan, math.nan
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=sem)
    return float(low), float(high)


def summarize(values: Sequence[float]) -> Summary:
    """Mean, count, sample std and 95 % t interval of the finite ``values``."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(finite)
    if n == 0:
        return Summary(math.nan, 0, math.nan, math.nan, math.nan)
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if n > 1 else math.nan
    low, high = t_interval(mean, std / math.sqrt(n), n) if n > 1 else (math.nan, math.nan)
    return Summary(mean, n, std, low, high)


def compare_paired(row: Mapping[int, float], baseline: Mapping[int, float]) -> Comparison:
    """``row`` against ``baseline`` (values by seed), over the seeds both have finite values
    for: mean difference, its t interval, the paired t-test and the power figures."""
    seeds = sorted(s for s in row if s in baseline and _finite(row[s]) and _finite(baseline[s]))
    if not seeds:
        return Comparison(0, note="no common seeds")
    ours = np.asarray([row[s] for s in seeds], dtype=float)
    theirs = np.asarray([baseline[s] for s in seeds], dtype=float)
    differences = ours - theirs
    n = len(seeds)
    diff = float(differences.mean())
    if n < 2:
        return Comparison(1, diff=diff, note="1 common seed: no interval")
    sd = float(differences.std(ddof=1))
    low, high = t_interval(diff, sd / math.sqrt(n), n)
    return Comparison(
        n_pairs=n,
        diff=diff,
        diff_low=low,
        diff_high=high,
        p=paired_p_value(ours, theirs),
        sd=sd,
        detectable=detectable_difference(sd, n),
    )


def paired_p_value(ours: np.ndarray, theirs: np.ndarray) -> float:
    """``ttest_rel``'s two-sided p-value; 1 when every pair is equal (t = 0/0: nothing to
    detect), 0 when every pair differs by the same nonzero amount (t infinite)."""
    differences = ours - theirs
    if np.all(differences == differences[0]):  # what ttest_rel gives, without its warning
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_rel(ours, theirs).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN entries stay NaN and do
    not count as tests): the i-th smallest of m p-values becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; a test is significant when its adjusted
    p-value is at most alpha."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    m, running = len(indexed), 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """``comparisons`` with Holm-adjusted p-values over all of them, the significance mark,
    and, for those not significant, the seeds needed to detect the observed difference at
    the level that marks it: alpha / m over the table's m tests (a p-value at most alpha / m
    is significant after Holm whatever the other tests give)."""
    adjusted = holm([c.p for c in comparisons])
    level = ALPHA / max(1, sum(math.isfinite(c.p) for c in comparisons))
    out = []
    for comparison, p_holm in zip(comparisons, adjusted, strict=True):
        significant = math.isfinite(p_holm) and p_holm <= ALPHA
        needed = None
        if math.isfinite(p_holm) and not significant:
            needed = seeds_needed(comparison.diff, comparison.sd, alpha=level)
        out.append(replace(comparison, p_holm=p_holm, significant=significant, seeds_needed=needed))
    return out


def paired_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs against a true mean difference
    ``difference`` when the paired differences have std ``sd``: ``P(|T| > t_crit)`` with
    ``T ~ nct(n - 1, difference / sd * sqrt(n))``."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = abs(difference) / sd * math.sqrt(n)
    upper = stats.nct.sf(critical, df, noncentrality)
    # P(T < -t_crit) as the mirrored upper tail: scipy's nct.cdf returns NaN for many
    # (far-tail) arguments where nct.sf of the mirror is finite and equal elsewhere
    lower = stats.nct.sf(critical, df, -noncentrality)
    return float(upper + lower)


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest mean paired difference the two-sided paired t-test with ``n`` pairs
    detects with probability ``power`` (``sd``: std of the paired differences); 0 when
    ``sd`` is 0, NaN with fewer than 2 pairs."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    high = sd
    while paired_power(high, sd, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, high))


def seeds_needed(
    difference: float, sd: float, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """The fewest pairs (seeds) with which the paired t-test detects ``difference`` with
    probability ``power``; None when ``difference`` is 0 or the count exceeds
    :data:`MAX_SEEDS`. ``sd`` 0 (and a nonzero difference) needs 2."""
    if not math.isfinite(difference) or not math.isfinite(sd) or difference == 0:
        return None
    if sd == 0:
        return 2

    def enough(n: int) -> bool:
        return paired_power(difference, sd, n, alpha) >= power

    low, high = 1, 2  # power grows with n: double, then bisect
    while not enough(high):
        low, high = high, high * 2
        if high > MAX_SEEDS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class Detectable:
    """The smallest paired difference detectable at 80 % power in one column: from the
    pooled std of the column's paired differences, with its smallest number of pairs."""

    difference: float
    sd: float
    n_pairs: int


def pooled_detectable(comparisons: Sequence[Comparison]) -> Detectable | None:
    """:class:`Detectable` over the comparisons with at least 2 pairs (the paired stds pooled
    by their degrees of freedom; the fewest pairs among them), or None without any."""
    usable = [c for c in comparisons if c.n_pairs >= 2 and _finite(c.sd)]
    if not usable:
        return None
    dof = sum(c.n_pairs - 1 for c in usable)
    sd = math.sqrt(sum((c.n_pairs - 1) * c.sd**2 for c in usable) / dof)
    n_pairs = min(c.n_pairs for c in usable)
    return Detectable(detectable_difference(sd, n_pairs), sd, n_pairs)


SeedValues = Mapping[str, Mapping[int, float]]
"""One row's values: ``{column key: {seed: value}}``."""


@dataclass(frozen=True)
class SeedStatistics:
    """The statistics of a mean-over-seeds table: a :class:`Summary` per row and column,
    and with a baseline row a :class:`Comparison` per other row and column (Holm-corrected
    over the whole table) and a :class:`Detectable` per column."""

    summaries: list[dict[str, Summary]]
    baseline: str | None = None
    baseline_row: int | None = None
    comparisons: list[dict[str, Comparison]] | None = None
    detectable: dict[str, Detectable] | None = None

    @property
    def most_seeds(self) -> int:
        """The largest seed count of any cell."""
        return max((s.n for row in self.summaries for s in row.values()), default=0)

    @property
    def tests(self) -> int:
        """How many comparisons have a p-value (the m of Holm's correction)."""
        rows = self.comparisons or []
        return sum(math.isfinite(c.p) for row in rows for c in row.values())


def seed_invariant(rows: Sequence[SeedValues], key: str) -> bool:
    """Whether every row's finite values of ``key`` are one value whatever the seed (a
    parameter count, a chance level): a property of the configuration, not an outcome of
    training, so comparing it is arithmetic, not a test."""
    repeated = False  # some row has the value of two seeds or more (else nothing shows it)
    for row in rows:
        values = [v for v in row.get(key, {}).values() if _finite(v)]
        if len(set(values)) > 1:
            return False
        repeated = repeated or len(values) > 1
    return repeated


def untested(comparison: Comparison) -> Comparison:
    """``comparison`` with its difference kept and no test (the column does not vary with
    the seed): no interval, p-value or significance, not counted in Holm's correction."""
    if comparison.n_pairs == 0:
        return comparison
    return Comparison(
        comparison.n_pairs, diff=comparison.diff, note="the same in every seed: not tested"
    )


def seed_statistics(
    rows: Sequence[SeedValues],
    keys: Sequence[str],
    baseline: str | None = None,
    baseline_row: int | None = None,
) -> SeedStatistics:
    """Summaries of every row's ``keys``; with ``baseline_row``, each other row compared to
    it by seed, Holm over all the table's comparisons, the detectable differences
    (``baseline`` without ``baseline_row``: a baseline that has no runs here)."""
    summaries = [{k: summarize(list(row.get(k, {}).values())) for k in keys} for row in rows]
    if baseline_row is None:
        return SeedStatistics(summaries, baseline)
    reference = rows[baseline_row]
    fixed = {k for k in keys if seed_invariant(rows, k)}
    raw = [
        {}
        if i == baseline_row
        else {
            k: untested(compare_paired(row.get(k, {}), reference.get(k, {})))
            if k in fixed
            else compare_paired(row.get(k, {}), reference.get(k, {}))
            for k in keys
        }
        for i, row in enumerate(rows)
    ]
    flat = with_holm([c for row in raw for c in row.values()])
    corrected, position = [], 0
    for row in raw:
        corrected.append(dict(zip(row, flat[position : position + len(row)], strict=True)))
        position += len(row)
    detectable = {}
    for key in keys:
        found = pooled_detectable([row[key] for row in corrected if key in row])
        if found is not None:
            detectable[key] = found
    return SeedStatistics(summaries, baseline, baseline_row, corrected, detectable)
