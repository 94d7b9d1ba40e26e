"""The tables core: results logs, numbers over seeds, paired differences and markdown tables.

The one place for what the result tables share (:mod:`cmmc_lib.ablation`, the poster's tables over
training seeds; :mod:`cmmc_lib.pose_study`, the NTU-60 tables; the lessons' spreads):

* **logs**: :func:`read_jsonl` / :func:`append_jsonl`, append-only JSONL files, one record per line.
  A torn *last* line (no newline, or not valid JSON: a write cut short) is dropped with a warning
  naming the file, and cut off before the next append, so the log heals; a bad line *before* the
  end is damage, not a torn write: ValueError with ``file:line``.
* **over seeds**: :func:`summarize` -> :class:`Summary`, the values, mean and spread of one number
  over training seeds. One convention for the spread: the sample standard deviation over ``k >= 2``
  seeds, and for **one** seed the binomial standard error ``sqrt(p (1 - p) / n_test)`` of its test
  set (:func:`one_seed_se`: never 0.0, never NaN); every summary says which (``label``: "std over
  3 seeds" or "binomial SE, one seed").
* **paired differences**: :func:`paired_difference` -> :class:`Difference`, method minus baseline
  seed by seed (both share each seed's stage 1), with a 95 % confidence interval (Student t with
  ``n - 1`` degrees of freedom, :func:`t_quantile_975`; one seed: normal approximation from the
  two binomial SEs); :func:`verdict` words it.
* **markdown**: :func:`fmt_value`, :func:`fmt_cell` (``mean ± spread`` in %, "-" when missing;
  never "± 0.0", never "nan"), :func:`markdown_table`, :func:`spread_note`, :func:`dataset_note`.

Pure functions and frozen dataclasses; rows stay plain dicts (:meth:`Summary.to_dict`) so that
results print as JSON. :class:`Variant` names what a row trained.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluate.chance import binomial_se
from .registry import METHODS


Z_975 = 1.959963984540054          # the standard normal's 0.975 quantile


# ----------------------------------------------------------------------------- what a row trained
@dataclass(frozen=True)
class Variant:
    """A row of a table: ``name`` (its folder and its key in the results), the registry ``method``
    its stage 2 trains, whether the two networks train in ``alternate`` cycles (False: jointly),
    and its ``label`` in tables and figures."""
    name: str
    method: str
    alternate: bool = True
    label: str = ""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"variant {self.name!r}: unknown method {self.method!r}")
        if not self.label:
            object.__setattr__(self, "label", METHODS[self.method].label)

    @classmethod
    def of(cls, method: str) -> Variant:
        """The plain variant of a method: its name, alternate training, the registry's label."""
        return cls(method, method)

    @property
    def colour(self) -> str:
        """The method's colour in every figure (the registry's)."""
        return METHODS[self.method].colour

    def overrides(self) -> list[str]:
        """The config overrides that train it: ``ssl.method`` and ``schedule.alternate``."""
        return [f"ssl.method={self.method}", f"schedule.alternate={str(self.alternate).lower()}"]


# ----------------------------------------------------------------------------- a number over seeds
def one_seed_se(p: float, num_test: int) -> float:
    """The spread of one seed's rate: its binomial standard error ``sqrt(p (1 - p) / n)``
    (:func:`~cmmc_lib.evaluate.chance.binomial_se`). A rate of exactly 0 or 1 is taken half a hit
    from the edge (``p = 0.5 / n`` or ``1 - 0.5 / n``): a perfect or empty score on a finite test
    set is not certain, and its spread is never 0."""
    n = int(num_test)
    if n < 1:
        raise ValueError(f"num_test must be >= 1, got {num_test}")
    return binomial_se(min(max(float(p), 0.5 / n), 1.0 - 0.5 / n), n)


@dataclass(frozen=True)
class Summary:
    """One rate measured over training seeds: ``values`` (one per seed, in ``seeds`` order) and the
    test-set size ``num_test`` (None when the seeds' test sets differ in size)."""
    values: tuple[float, ...]
    seeds: tuple[int, ...] | None = None
    num_test: int | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def std(self) -> float | None:
        """The sample standard deviation over seeds (ddof 1); None for one seed."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def kind(self) -> str:
        return "std" if self.n > 1 else "binomial SE"

    @property
    def spread(self) -> float:
        """The std over seeds; for one seed, the binomial SE of its test set."""
        return self.std if self.n > 1 else one_seed_se(self.values[0], self.num_test)

    @property
    def label(self) -> str:
        return f"std over {self.n} seeds" if self.n > 1 else "binomial SE, one seed"

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "seeds": None if self.seeds is None else list(self.seeds),
                "num_test": self.num_test, "n": self.n, "mean": self.mean, "spread": self.spread,
                "kind": self.kind, "label": self.label}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        return summarize(d["values"], d.get("num_test"), d.get("seeds"))

    def __str__(self) -> str:
        """``mean ± spread (what the spread is)`` with 3 decimals; a spread below the last digit
        (identical seeds) reads ``< 0.001``, never ``0.000``."""
        return f"{self.mean:.3f} ± {fmt_spread(self.spread, 1.0, 3).replace('<', '< ')} ({self.label})"


def summarize(values: Iterable[float], num_test: int | None = None, seeds: Sequence[int] | None = None) -> Summary:
    """A :class:`Summary` of ``values`` over seeds. One value needs ``num_test`` (its spread is the
    binomial SE of its test set) and must be a rate in [0, 1]."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("no values")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"a value is NaN: {vals}")
    if seeds is not None and len(seeds) != len(vals):
        raise ValueError(f"{len(seeds)} seeds for {len(vals)} values")
    if len(vals) == 1:
        if num_test is None:
            raise ValueError("one seed has no spread over seeds: give num_test for its binomial standard error")
        binomial_se(vals[0], num_test)                   # checks 0 <= p <= 1 and n >= 1
    return Summary(vals, None if seeds is None else tuple(int(s) for s in seeds),
                   None if num_test is None else int(num_test))


def collect(records: Iterable[Mapping[str, Any]], field: str, where: Mapping[str, Any] | None = None,
            seed_key: str = "seed", num_test_key: str = "num_test") -> Summary | None:
    """The :class:`Summary` of ``field`` over the records matching ``where`` (one per seed: the last
    record of a seed wins), sorted by seed; None when no record has it."""
    by_seed: dict[int, tuple[float, Any]] = {}
    for r in records:
        if all(r.get(k) == v for k, v in (where or {}).items()) and r.get(field) is not None:
            by_seed[int(r[seed_key])] = (float(r[field]), r.get(num_test_key))
    if not by_seed:
        return None
    seeds = sorted(by_seed)
    sizes = {by_seed[s][1] for s in seeds}
    return summarize([by_seed[s][0] for s in seeds], sizes.pop() if len(sizes) == 1 else None, seeds)


# ----------------------------------------------------------------------------- paired differences
#: Student t's 0.975 quantile (a two-sided 95 % interval) for 1..30 degrees of freedom.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
    """Student t's 0.975 quantile with ``df`` degrees of freedom: the table :data:`T_975` up to 30,
    beyond it the Cornish-Fisher expansion around the normal quantile (error below 1e-4)."""
    df = int(df)
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


@dataclass(frozen=True)
class Difference:
    """Method minus baseline: ``mean`` over ``n`` paired seeds (``diffs``, in ``seeds`` order), its
    sample ``std`` (None for one seed) and the 95 % interval ``[low, high]``; ``basis`` says how."""
    mean: float
    std: float | None
    n: int
    low: float
    high: float
    diffs: tuple[float, ...]
    seeds: tuple[int, ...] | None
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "low": self.low, "high": self.high,
                "diffs": list(self.diffs), "seeds": None if self.seeds is None else list(self.seeds),
                "basis": self.basis}


def paired_difference(method: Summary, baseline: Summary) -> Difference | None:
    """``method`` minus ``baseline`` seed by seed over the seeds both have (None if none).

    ``k >= 2`` pairs: the mean difference, its sample std and ``mean ± t_{0.975, k-1} std / sqrt(k)``.
    One pair: the difference, with ``± 1.96 sqrt(se_a² + se_b²)`` from the two binomial SEs (normal
    approximation; it treats the two test-set errors as independent). The same when every pair
    differs by the same amount (a zero std, whose t interval would have no width), from the SEs
    of the two means."""
    if method.seeds is not None and baseline.seeds is not None:
        other = dict(zip(baseline.seeds, baseline.values))
        pairs = [(s, x, other[s]) for s, x in zip(method.seeds, method.values) if s in other]
    elif method.n == baseline.n:                      # no seeds recorded: pair them in order
        pairs = [(None, x, y) for x, y in zip(method.values, baseline.values)]
    else:
        raise ValueError(f"cannot pair {method.n} and {baseline.n} values without their seeds")
    if not pairs:
        return None
    seeds = None if pairs[0][0] is None else tuple(s for s, _, _ in pairs)
    diffs = tuple(x - y for _, x, y in pairs)
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n == 1:
        _, x, y = pairs[0]
        half = Z_975 * math.hypot(one_seed_se(x, _size(method)), one_seed_se(y, _size(baseline)))
        return Difference(mean, None, 1, mean - half, mean + half, diffs, seeds,
                          "one seed: normal approximation from the two binomial SEs")
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std < 1e-9 and method.num_test is not None and baseline.num_test is not None:
        # every seed moved by the same amount (often one test sample): a t interval of zero width
        # would call it certain, so the test set's own noise sets the interval, as for one seed
        half = Z_975 * math.hypot(one_seed_se(method.mean, method.num_test), one_seed_se(baseline.mean, baseline.num_test))
        return Difference(mean, std, n, mean - half, mean + half, diffs, seeds,
                          f"{n} paired seeds with the same difference: normal approximation from the two "
                          "binomial SEs of the means")
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Difference(mean, std, n, mean - half, mean + half, diffs, seeds,
                      f"{n} paired seeds: Student t, {n - 1} degrees of freedom")


def _size(s: Summary) -> int:
    if s.num_test is None:
        raise ValueError("one paired seed needs each side's num_test (its binomial standard error)")
    return s.num_test


def verdict(diff: Difference | None, baseline: str, scale: float = 100.0, unit: str = " points",
            digits: int = 1) -> str:
    """The difference in words: "above X by d (95 % CI a..b)", "below X by d (95 % CI a..b)", or
    "within the noise (95 % CI a..b includes 0)"; values times ``scale`` (% points by default)."""
    if diff is None:
        return f"no seed shared with {baseline}"
    ci = f"95 % CI {fmt_value(diff.low, scale, digits)}..{fmt_value(diff.high, scale, digits)}"
    size = fmt_value(abs(diff.mean), scale, digits)
    if diff.low > 0:
        return f"above {baseline} by {size}{unit} ({ci})"
    if diff.high < 0:
        return f"below {baseline} by {size}{unit} ({ci})"
    return f"within the noise of {baseline}: {fmt_value(diff.mean, scale, digits, sign=True)}{unit} ({ci} includes 0)"


# ----------------------------------------------------------------------------- formatting
def fmt_value(x: float | None, scale: float = 100.0, digits: int = 1, sign: bool = False) -> str:
    """``x * scale`` with ``digits`` decimals; "-" for a missing value (None or NaN); never "-0.0"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    v = round(float(x) * scale, digits)
    if v == 0:
        v = 0.0                                       # no "-0.0"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def fmt_spread(x: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """A spread: never "0.0" (a spread below the last digit reads "<0.1"); "-" when missing."""
    if x is None or math.isnan(x):
        return "-"
    text = fmt_value(x, scale, digits)
    return f"<{10.0 ** -digits:.{digits}f}" if float(text) == 0 else text


def fmt_cell(s: Summary | Mapping[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± spread`` (in % by default), "-" when missing."""
    if s is None:
        return "-"
    if isinstance(s, Mapping):
        s = Summary.from_dict(s)
    return f"{fmt_value(s.mean, scale, digits)} ± {fmt_spread(s.spread, scale, digits)}"


def row_label(cells: Iterable[Summary | Mapping[str, Any] | None]) -> str:
    """What a row's ± are: the labels of its cells ("std over 3 seeds", "binomial SE, one seed"),
    each once; "-" when every cell is missing."""
    labels = [c["label"] if isinstance(c, Mapping) else c.label for c in cells if c is not None]
    return " / ".join(dict.fromkeys(labels)) or "-"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """A markdown table (cells as given; None reads "-"), then a blank line and one line per note."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines + ([""] + list(notes) if notes else [])) + "\n"


def spread_note(cells: Iterable[Summary | Mapping[str, Any] | None], unit: str = "%") -> str:
    """The note that says what the table's ± are."""
    ns = sorted({(c["n"] if isinstance(c, Mapping) else c.n) for c in cells if c is not None})
    if not ns:
        return "No results yet."
    if ns == [1]:
        return (f"One training seed, in {unit}: ± is its binomial standard error on the test set, "
                "sqrt(p (1 - p) / n_test).")
    if 1 not in ns:
        seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        return f"Mean ± sample std over {seeds} training seeds, in {unit}."
    return (f"In {unit}: mean ± sample std over the seeds where a row has several, the binomial standard error "
            "of its test set where it has one training seed (the spread column says which).")


def dataset_note(name: str, num_test: int, num_train: int | None = None, num_classes: int | None = None,
                 chance: Mapping[str, float] | None = None, items: str = "videos") -> str:
    """One dataset's line under a table: its sizes, its chance levels (``{metric: level}``, in %)
    and the largest binomial standard error one run can have on it (p = 0.5)."""
    parts = [f"{num_test} test {items}"]
    if num_train is not None:
        parts.append(f"{num_train} train {items}")
    if num_classes is not None:
        parts.append(f"{num_classes} classes")
    text = f"{name}: " + ", ".join(parts)
    if chance:
        text += "; chance: " + ", ".join(f"{m} {fmt_value(c)}" for m, c in chance.items())
    return text + f"; one run's binomial standard error is at most {fmt_value(binomial_se(0.5, num_test))} points."
