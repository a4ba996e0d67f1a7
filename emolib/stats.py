"""Statistics shared by every chapter: permutation p-values, bootstrap CIs, Wilson intervals, nulls.

Conventions (see ``shared/REPORTING.md``):

- **Permutation p-values** are ``(1 + #{null at least as extreme}) / (1 + n)`` (never 0). When no null
  draw is as extreme the value sits at its floor ``1/(n+1)`` and is a *bound*: :class:`PValue` prints it
  as ``"p < 0.002 (all 500 permutations below)"`` rather than ``"p = 0.002"``.
- **Bootstrap CIs** are percentile intervals and always name their resampling unit (``"item"``,
  ``"story"``, ``"topic"`` ...). With ``groups`` whole clusters are resampled (cluster bootstrap), which is
  what to use when items share a source of variation (stories of one topic, variants of one scenario).
- **A value picked as the best of several options** (layer, strength, variant) on the same data is
  tested against the null of the *best* option under each shuffle: :func:`selection_null`,
  :func:`selected_p`.
- **Rates** get Wilson score intervals (:func:`wilson`); **effects** get slopes with CIs (:func:`slope_ci`).
- All randomness comes from ``np.random.default_rng(seed)``; the same seed gives the same numbers.
- Result objects are frozen dataclasses; ``.metrics(name)`` gives the flat ``metrics.json`` keys
  (``<name>``, ``<name>_ci_low``, ``<name>_ci_high``, ``<name>_p``, ``<name>_null95``, ``<name>_n``).

Only numpy and scipy are imported here (no torch), so the module is cheap to import anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri

Tail = Literal["greater", "less", "two-sided"]
TAILS: tuple[str, ...] = ("greater", "less", "two-sided")
TIE_TOL = 1e-12  # null draws within this (absolute) distance of the observed value count as ties

__all__ = [
    "CI",
    "Corr",
    "PValue",
    "Slope",
    "TAILS",
    "bootstrap_ci",
    "bootstrap_stat",
    "fmt_p",
    "pearson_ci",
    "perm_p",
    "random_directions",
    "selected_p",
    "selection_null",
    "slope_ci",
    "wilson",
]


# ----------------------------------------------------------------------------------------------- helpers
def _check_tail(tail: str) -> None:
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _ceil_sig(x: float) -> float:
    """Round ``x > 0`` *up* to one significant figure (0.001996 -> 0.002, 0.00999 -> 0.01)."""
    e = math.floor(math.log10(x))
    m = math.ceil(round(x / 10.0**e, 9))
    return m * 10.0**e


def _fmt_num(x: float) -> str:
    """Fixed-point text: 3 decimals from 0.01 up, 2 significant figures below."""
    if x >= 0.01:
        return f"{x:.3f}"
    decimals = 1 - math.floor(math.log10(x))
    return f"{x:.{decimals}f}"


def _fmt_bound(x: float) -> str:
    decimals = max(0, -math.floor(math.log10(x)))
    return f"{x:.{decimals}f}"


def _quantiles(draws: NDArray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [a, 1.0 - a])
    return float(lo), float(hi)


def _finite(draws: ArrayLike, what: str) -> NDArray[np.floating]:
    d = np.asarray(draws, dtype=float).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError(f"No finite {what} draws (every resample gave NaN/inf)")
    return d


def _group_codes(groups: ArrayLike | None, n: int) -> tuple[NDArray[np.int_], int]:
    """Integer cluster code per row (each row its own cluster when ``groups`` is None)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be 1-D with one id per row ({n}), got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise ValueError("groups must contain at least 2 distinct clusters to bootstrap")
    return codes.astype(int), n_groups


def _resolve_unit(unit: str | None, groups: ArrayLike | None) -> str:
    if unit is not None:
        return str(unit)
    return "item" if groups is None else "cluster"


def _boot_weights(rng: np.random.Generator, codes: NDArray[np.int_], n_groups: int, n_boot: int) -> NDArray:
    """``[n_boot, n]`` multiplicity of each row when ``n_groups`` clusters are drawn with replacement.

    Drawing clusters with replacement and stacking their rows is the same as weighting every row by the
    number of times its cluster was drawn; weights let the OLS / Pearson bootstraps run vectorised.
    """
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, codes]


def _boot_indices(rng: np.random.Generator, codes: NDArray[np.int_], n_groups: int, n_boot: int):
    """Yield ``n_boot`` row-index arrays, each a resample of whole clusters with replacement."""
    if n_groups == codes.shape[0] and np.array_equal(codes, np.arange(n_groups)):
        for _ in range(n_boot):
            yield rng.integers(0, n_groups, size=n_groups)
        return
    members = [np.flatnonzero(codes == c) for c in range(n_groups)]
    for _ in range(n_boot):
        yield np.concatenate([members[c] for c in rng.integers(0, n_groups, size=n_groups)])


def _xy(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x and y must be 1-D, got shapes {xa.shape} and {ya.shape}")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.shape[0]} and {ya.shape[0]}")
    if xa.size < 3:
        raise ValueError(f"Need at least 3 points, got {xa.size}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("x and y must be finite (drop NaN rows first)")
    return xa, ya


def _weighted_moments(
    x: NDArray, y: NDArray, w: NDArray
) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
    """Per-row weighted means, variances and covariance of ``x, y`` under weights ``w: [B, n]``."""
    sw = w.sum(axis=1)
    mx, my = (w @ x) / sw, (w @ y) / sw
    dx, dy = x[None, :] - mx[:, None], y[None, :] - my[:, None]
    vxx = (w * dx * dx).sum(axis=1) / sw
    vyy = (w * dy * dy).sum(axis=1) / sw
    vxy = (w * dx * dy).sum(axis=1) / sw
    return mx, my, vxx, vyy, vxy


def _safe_div(a: NDArray, b: NDArray) -> NDArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 1e-300, a / np.where(b > 1e-300, b, 1.0), np.nan)


# ---------------------------------------------------------------------------------------------- p-values
@dataclass(frozen=True)
class PValue:
    """A permutation p-value that knows its resolution.

    ``p = (1 + #{null at least as extreme}) / (1 + n_perm)``; ``at_floor`` is True when no null draw was
    as extreme, i.e. ``p == 1/(n_perm+1)``: then ``p`` is an upper bound and :meth:`text` says so.
    ``float(pv)`` gives ``p`` (for metrics.json); ``str(pv)`` gives the prose form.
    """

    p: float
    n_perm: int
    tail: Tail = "greater"
    at_floor: bool = False

    def __post_init__(self) -> None:
        _check_tail(self.tail)
        _check_count(self.n_perm, "n_perm")
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {self.p}")
        if self.at_floor and not math.isclose(self.p, self.floor, rel_tol=1e-9):
            raise ValueError(f"at_floor=True needs p == 1/(n_perm+1) = {self.floor}, got {self.p}")

    @property
    def floor(self) -> float:
        """The smallest p this many permutations can give, ``1/(n_perm+1)``."""
        return 1.0 / (self.n_perm + 1)

    def text(self, draws: str = "permutations") -> str:
        """``"p = 0.013"``, or at the floor ``"p < 0.002 (all 500 permutations below)"``.

        The bound is ``1/(n_perm+1)`` rounded up to one significant figure. The parenthesis follows the
        tail: "below" (greater), "above" (less), "none of ... as extreme" (two-sided). ``draws`` names the
        null draws (e.g. "random directions" when the null is a set of random steering directions).
        """
        if not self.at_floor:
            return f"p = {_fmt_num(self.p)}"
        bound = _fmt_bound(_ceil_sig(self.p))
        n = self.n_perm
        if self.tail == "greater":
            why = f"all {n} {draws} below"
        elif self.tail == "less":
            why = f"all {n} {draws} above"
        else:
            why = f"none of {n} {draws} as extreme"
        return f"p < {bound} ({why})"

    def __str__(self) -> str:
        return self.text()

    def __float__(self) -> float:
        return float(self.p)


def perm_p(observed: float, null: ArrayLike, tail: Tail = "greater") -> PValue:
    """Permutation p-value of ``observed`` against null draws: ``(1 + #{as extreme}) / (1 + n)``.

    ``tail``: ``"greater"`` counts ``null >= observed``, ``"less"`` counts ``null <= observed``,
    ``"two-sided"`` counts ``|null| >= |observed|`` (a null centred on 0, e.g. correlations).
    Ties within ``TIE_TOL`` (1e-12, absolute) count as at least as extreme (conservative).
    Non-finite null draws (NaN/inf, e.g. a degenerate shuffle) are dropped; ``n`` and the returned
    ``n_perm`` count only the finite draws used.

    Raises ValueError on a NaN ``observed`` or when no finite null draw is left.
    """
    _check_tail(tail)
    obs = float(observed)
    if math.isnan(obs):
        raise ValueError("observed is NaN")
    d = np.asarray(null, dtype=float).ravel()
    if d.size == 0:
        raise ValueError("null is empty")
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("null has no finite draws")
    if tail == "greater":
        k = int(np.sum(d >= obs - TIE_TOL))
    elif tail == "less":
        k = int(np.sum(d <= obs + TIE_TOL))
    else:
        k = int(np.sum(np.abs(d) >= abs(obs) - TIE_TOL))
    n = int(d.size)
    return PValue(p=(1 + k) / (1 + n), n_perm=n, tail=tail, at_floor=k == 0)


def fmt_p(p: PValue | float, n_perm: int | None = None, tail: Tail = "greater") -> str:
    """Prose form of a p-value.

    A :class:`PValue` formats itself. A bare float with ``n_perm`` is read as a permutation p-value from
    that many draws (at or below ``1/(n_perm+1)`` it is written as a bound, phrased by ``tail``); without
    ``n_perm`` it is written as ``"p = 0.013"``. NaN gives ``"p = n/a"``.
    """
    if isinstance(p, PValue):
        return p.text()
    p = float(p)
    if math.isnan(p):
        return "p = n/a"
    if n_perm is not None:
        n_perm = _check_count(n_perm, "n_perm")
        floor = 1.0 / (n_perm + 1)
        at_floor = p <= floor * (1 + 1e-9)
        return PValue(p=max(p, floor), n_perm=n_perm, tail=tail, at_floor=at_floor).text()
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    return f"p = {_fmt_num(p)}"


# --------------------------------------------------------------------------------------- selection nulls
def selection_null(null_matrix: ArrayLike, *, tail: Tail = "greater") -> NDArray[np.floating]:
    """The null of a value *chosen as the best of several options* on the same data.

    ``null_matrix: [n_perm, n_options]`` holds, for each null draw (e.g. one label shuffle), the statistic
    at every option (e.g. accuracy at every layer). The selection is repeated on each draw: the result is
    the max over options per draw (``tail="greater"``), the min (``"less"``) or the max of ``|.|``
    (``"two-sided"``). Compare the observed best against this, not against one option's null: the naive
    comparison ignores that the best of many noisy options is large by chance (see :func:`selected_p`).
    Draws with a NaN option give NaN (and are then dropped by :func:`perm_p`).
    """
    _check_tail(tail)
    m = np.asarray(null_matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"null_matrix must be 2-D [n_perm, n_options], got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"null_matrix is empty (shape {m.shape})")
    if tail == "greater":
        return m.max(axis=1)
    if tail == "less":
        return m.min(axis=1)
    return np.abs(m).max(axis=1)


def selected_p(observed_best: float, null_matrix: ArrayLike, tail: Tail = "greater") -> PValue:
    """p-value of a best-of-options value against the best-of-options null (:func:`selection_null`).

    This is how to test a layer / strength / variant picked because it scored best on the data that is
    also used to score it: each null draw repeats the pick. ``observed_best`` is the observed statistic
    at the chosen option (the max over options for ``"greater"``).
    """
    return perm_p(observed_best, selection_null(null_matrix, tail=tail), tail=tail)


# ------------------------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class CI:
    """An interval estimate: ``estimate`` with ``[low, high]`` at ``level``.

    ``unit`` names what was resampled ("item", "story", "topic", ...; "trial" for Wilson intervals);
    ``n`` is how many of those units the data hold; ``n_boot`` the number of (finite) bootstrap draws
    behind the interval (0 for analytic intervals such as Wilson).
    """

    low: float
    high: float
    estimate: float
    n_boot: int
    unit: str
    level: float = 0.95
    n: int = 0

    def text(self, digits: int = 2) -> str:
        pct = f"{100 * self.level:g}%"
        return f"{self.estimate:.{digits}f} [{pct} CI {self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.text()

    def metrics(self, name: str) -> dict[str, Any]:
        """Flat metrics.json keys: ``name``, ``name_ci_low``, ``name_ci_high``, ``name_n``."""
        return {
            name: self.estimate,
            f"{name}_ci_low": self.low,
            f"{name}_ci_high": self.high,
            f"{name}_n": self.n,
        }


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[[NDArray], float] = np.mean,
    *,
    groups: ArrayLike | None = None,
    unit: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CI:
    """Percentile bootstrap CI of ``statistic(values)``.

    ``values`` is 1-D (one value per unit) or 2-D (rows are units); ``statistic`` receives the resampled
    rows (same number of dimensions) and returns a float. Without ``groups`` rows are resampled with
    replacement (``unit`` defaults to "item"). With ``groups`` (one cluster id per row) whole clusters are
    resampled, keeping all their rows (cluster bootstrap; ``unit`` defaults to "cluster" -- name it, e.g.
    ``unit="topic"``). Resamples whose statistic is not finite are dropped; ``CI.n_boot`` counts the rest.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim not in (1, 2):
        raise ValueError(f"values must be 1-D or 2-D (rows are units), got shape {v.shape}")
    if v.shape[0] == 0:
        raise ValueError("values is empty")
    n_boot = _check_count(n_boot, "n_boot")
    _check_level(level)
    codes, n_groups = _group_codes(groups, v.shape[0])
    rng = np.random.default_rng(seed)
    estimate = float(statistic(v))
    draws = _finite([statistic(v[idx]) for idx in _boot_indices(rng, codes, n_groups, n_boot)], "bootstrap")
    lo, hi = _quantiles(draws, level)
    return CI(lo, hi, estimate, int(draws.size), _resolve_unit(unit, groups), float(level), n_groups)


def bootstrap_stat(
    n_units: int,
    fn: Callable[[NDArray[np.int_]], float],
    *,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    unit: str | None = None,
) -> CI:
    """Percentile bootstrap CI of a statistic that needs the resampled *indices* (e.g. a refit).

    ``fn(idx) -> float`` receives an int array of unit indices drawn with replacement from
    ``range(n_units)`` (duplicates included) and recomputes everything from those units, e.g. refits the
    emotion vectors on resampled stories and returns a correlation of the refitted vectors. The estimate
    is ``fn(np.arange(n_units))``. With ``groups`` (one id per unit) whole clusters are drawn and ``fn``
    gets all rows of the drawn clusters. Non-finite draws are dropped.
    """
    n_units = _check_count(n_units, "n_units")
    n_boot = _check_count(n_boot, "n_boot")
    _check_level(level)
    codes, n_groups = _group_codes(groups, n_units)
    rng = np.random.default_rng(seed)
    estimate = float(fn(np.arange(n_units)))
    draws = _finite([fn(idx) for idx in _boot_indices(rng, codes, n_groups, n_boot)], "bootstrap")
    lo, hi = _quantiles(draws, level)
    return CI(lo, hi, estimate, int(draws.size), _resolve_unit(unit, groups), float(level), n_groups)


def wilson(k: int, n: int, level: float = 0.95) -> CI:
    """Wilson score interval for a rate ``k/n`` (estimate ``k/n``, unit "trial", ``n_boot`` 0).

    Well behaved at 0 and n successes (``k=0, n=10`` gives ``[0, 0.278]``), unlike the Wald interval.
    Raises ValueError for ``n < 1`` or ``k`` outside ``[0, n]``.
    """
    n = _check_count(n, "n")
    k = _check_count(k, "k", minimum=0)
    if k > n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    _check_level(level)
    z = float(ndtri(0.5 + level / 2.0))
    phat = k / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return CI(low, high, phat, 0, "trial", float(level), n)


# ------------------------------------------------------------------------------------ random directions
def random_directions(
    d: int,
    n: int,
    seed: int,
    *,
    norm: float | ArrayLike = 1.0,
    exclude: ArrayLike | None = None,
) -> NDArray[np.floating]:
    """``[n, d]`` seeded random directions (isotropic Gaussian, normalised, then scaled to ``norm``).

    ``norm`` is a scalar or one norm per row (length ``n``), e.g. each emotion vector's norm, so that the
    random controls are norm-matched. ``exclude: [k, d]`` (or ``[d]``): directions projected out before
    normalising, so every random direction is orthogonal to them (e.g. to the emotion vectors themselves).
    The same ``seed`` gives the same directions.
    """
    d = _check_count(d, "d")
    n = _check_count(n, "n")
    scale = np.asarray(norm, dtype=float)
    if scale.ndim == 0:
        scale = np.full(n, float(scale))
    if scale.shape != (n,):
        raise ValueError(f"norm must be a scalar or have length n={n}, got shape {scale.shape}")
    if not (np.isfinite(scale).all() and (scale >= 0).all()):
        raise ValueError("norm must be finite and non-negative")
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, d))
    if exclude is not None:
        E = np.atleast_2d(np.asarray(exclude, dtype=float))
        if E.ndim != 2 or E.shape[1] != d:
            raise ValueError(f"exclude must be [k, d={d}], got shape {E.shape}")
        if not np.isfinite(E).all():
            raise ValueError("exclude contains NaN or inf")
        if E.shape[0]:
            _, s, Vt = np.linalg.svd(E, full_matrices=False)
            keep = s > max(s.max(), 1e-300) * max(E.shape) * np.finfo(float).eps
            Q = Vt[keep]  # orthonormal basis of the excluded span
            if Q.shape[0] >= d:
                raise ValueError(f"exclude spans all {d} dimensions; nothing is left to sample")
            G = G - (G @ Q.T) @ Q
            G = G - (G @ Q.T) @ Q  # second pass removes rounding residue
    lengths = np.linalg.norm(G, axis=1, keepdims=True)
    return G / lengths * scale[:, None]


# ---------------------------------------------------------------------------------- slopes, correlations
@dataclass(frozen=True)
class Slope:
    """OLS slope of y on x with a percentile bootstrap CI over ``unit`` (rows, or whole groups)."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    n: int
    unit: str
    level: float = 0.95
    n_boot: int = 0

    def metrics(self, name: str) -> dict[str, Any]:
        """Flat metrics.json keys: ``name``, ``name_ci_low``, ``name_ci_high``, ``name_n``."""
        return {
            name: self.slope,
            f"{name}_ci_low": self.ci_low,
            f"{name}_ci_high": self.ci_high,
            f"{name}_n": self.n,
        }


def slope_ci(
    x: ArrayLike,
    y: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    unit: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Slope:
    """OLS slope (and intercept) of ``y`` on ``x`` with a percentile bootstrap CI of the slope.

    Rows are resampled (``unit`` "item"), or whole ``groups`` (e.g. scenario variants; ``unit`` defaults
    to "cluster"). ``n`` is the number of units (rows, or groups). Vectorised over draws; draws in which
    ``x`` is constant are dropped.
    """
    xa, ya = _xy(x, y)
    n_boot = _check_count(n_boot, "n_boot")
    _check_level(level)
    vx = xa.var()
    if vx <= 1e-300:
        raise ValueError("x is constant; the slope is undefined")
    slope = float(np.mean((xa - xa.mean()) * (ya - ya.mean())) / vx)
    intercept = float(ya.mean() - slope * xa.mean())
    codes, n_groups = _group_codes(groups, xa.size)
    rng = np.random.default_rng(seed)
    W = _boot_weights(rng, codes, n_groups, n_boot)
    _, _, vxx, _, vxy = _weighted_moments(xa, ya, W)
    draws = _finite(_safe_div(vxy, vxx), "bootstrap slope")
    lo, hi = _quantiles(draws, level)
    return Slope(
        slope, intercept, lo, hi, n_groups, _resolve_unit(unit, groups), float(level), int(draws.size)
    )


@dataclass(frozen=True)
class Corr:
    """Pearson r with a bootstrap CI, a two-sided permutation p and the chance level ``null95``.

    ``null95`` is the 95th percentile of ``|r|`` under permutation: the |r| needed to beat chance here.
    """

    r: float
    ci_low: float
    ci_high: float
    p: PValue
    null95: float
    n: int
    unit: str
    level: float = 0.95
    n_boot: int = 0

    def metrics(self, name: str) -> dict[str, Any]:
        """Flat metrics.json keys: ``name``, ``_ci_low``, ``_ci_high``, ``_p``, ``_null95``, ``_n``."""
        return {
            name: self.r,
            f"{name}_ci_low": self.ci_low,
            f"{name}_ci_high": self.ci_high,
            f"{name}_p": float(self.p),
            f"{name}_null95": self.null95,
            f"{name}_n": self.n,
        }


def _row_pearson(x: NDArray, Y: NDArray) -> NDArray:
    """Pearson r of ``x: [n]`` with every row of ``Y: [B, n]``."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=1, keepdims=True)
    return _safe_div(Yc @ xc, np.sqrt((xc @ xc) * np.einsum("ij,ij->i", Yc, Yc)))


def pearson_ci(
    x: ArrayLike,
    y: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    unit: str | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Corr:
    """Pearson r of ``x`` and ``y`` with a percentile bootstrap CI and a permutation p-value.

    CI: rows resampled (``unit`` "item"), or whole ``groups`` (``unit`` defaults to "cluster").
    p: two-sided, ``y`` shuffled across all rows ``n_perm`` times (:func:`perm_p`); this treats rows as
    exchangeable, so with strongly clustered data read the cluster-bootstrap CI rather than p.
    ``n`` is the number of units (rows, or groups). Vectorised over draws (no Python loop).
    """
    xa, ya = _xy(x, y)
    n_boot = _check_count(n_boot, "n_boot")
    n_perm = _check_count(n_perm, "n_perm")
    _check_level(level)
    r = float(_row_pearson(xa, ya[None, :])[0])
    if not math.isfinite(r):
        raise ValueError("x or y is constant; r is undefined")
    codes, n_groups = _group_codes(groups, xa.size)
    rng = np.random.default_rng(seed)
    W = _boot_weights(rng, codes, n_groups, n_boot)
    _, _, vxx, vyy, vxy = _weighted_moments(xa, ya, W)
    boot = _finite(_safe_div(vxy, np.sqrt(vxx * vyy)), "bootstrap r")
    lo, hi = _quantiles(boot, level)
    null = _row_pearson(xa, rng.permuted(np.broadcast_to(ya, (n_perm, ya.size)), axis=1))
    p = perm_p(r, null, tail="two-sided")
    null95 = float(np.quantile(np.abs(_finite(null, "permutation r")), 0.95))
    return Corr(r, lo, hi, p, null95, n_groups, _resolve_unit(unit, groups), float(level), int(boot.size))
