"""The tables core: one spread convention over seeds, paired differences with their 95 % interval,
and markdown that never shows "± 0.0" or "nan" (its results logs are tests/test_files.py's)."""
import json
import logging
import math

import pytest

from cmmc_lib import tables
from cmmc_lib.tables import (Summary, Variant, collect, dataset_note, fmt_cell, fmt_spread, fmt_value,
                             markdown_table, paired_difference, row_label, spread_note, summarize,
                             t_quantile_975, verdict)


# ----------------------------------------------------------------------------- over seeds
def test_several_seeds_spread_is_their_sample_std():
    s = summarize([0.4, 0.5, 0.6], num_test=100, seeds=[2, 0, 1])
    assert s.mean == pytest.approx(0.5) and s.std == pytest.approx(0.1) and s.spread == pytest.approx(0.1)
    assert (s.n, s.kind, s.label) == (3, "std", "std over 3 seeds")
    assert "0.500 ± 0.100 (std over 3 seeds)" == str(s)


def test_one_seeds_spread_is_its_binomial_standard_error():
    s = summarize([0.4], num_test=100)
    assert s.spread == pytest.approx(math.sqrt(0.4 * 0.6 / 100)) and s.std is None
    assert (s.kind, s.label) == ("binomial SE", "binomial SE, one seed")
    assert not math.isnan(s.spread) and s.spread > 0
    for edge, p in ((0.0, 0.5 / 18), (1.0, 1 - 0.5 / 18)):              # a perfect or empty score still has one
        assert summarize([edge], num_test=18).spread == pytest.approx(math.sqrt(p * (1 - p) / 18))
    with pytest.raises(ValueError, match="num_test"):
        summarize([0.4])                                  # no spread would be 0.0 or NaN: refused
    with pytest.raises(ValueError):
        summarize([1.4], num_test=10)                     # not a rate
    with pytest.raises(ValueError):
        summarize([])


def test_a_summary_survives_json():
    s = summarize([0.3, 0.5], num_test=80, seeds=[0, 1])
    d = json.loads(json.dumps(s.to_dict()))
    assert Summary.from_dict(d) == s and d["label"] == "std over 2 seeds" and d["spread"] == pytest.approx(s.spread)


def test_collect_picks_one_value_per_seed_sorted():
    records = [{"seed": 1, "method": "moco", "top1": 0.5, "num_test": 50},
               {"seed": 0, "method": "moco", "top1": 0.3, "num_test": 50},
               {"seed": 0, "method": "cmmc", "top1": 0.9, "num_test": 50},
               {"seed": 1, "method": "moco", "top1": 0.7, "num_test": 50}]        # a re-evaluation: the last wins
    s = collect(records, "top1", {"method": "moco"})
    assert s.seeds == (0, 1) and s.values == (0.3, 0.7) and s.num_test == 50
    assert collect(records, "top1", {"method": "mixup"}) is None


# ----------------------------------------------------------------------------- paired differences
def test_t_quantiles_match_the_known_values():
    known = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 10: 2.228, 20: 2.086, 29: 2.045, 30: 2.042}
    for df, t in known.items():
        assert t_quantile_975(df) == pytest.approx(t, abs=6e-4)
    assert t_quantile_975(40) == pytest.approx(2.021, abs=6e-4)      # beyond the table: Cornish-Fisher
    assert t_quantile_975(120) == pytest.approx(1.980, abs=6e-4)
    assert t_quantile_975(31) < t_quantile_975(30)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def _t_cdf_from_zero(q: float, df: int, steps: int = 4000) -> float:
    """P(0 < T < q) by Simpson's rule on Student t's density."""
    def pdf(x):
        return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                        - (df + 1) / 2 * math.log1p(x * x / df))
    h = q / steps
    return h / 3 * (pdf(0) + pdf(q) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, steps)))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 8, 13, 21, 30])
def test_the_t_table_holds_the_0975_quantile(df):
    assert _t_cdf_from_zero(t_quantile_975(df), df) == pytest.approx(0.475, abs=2e-5)


def test_paired_difference_over_seeds_by_hand():
    method = summarize([0.50, 0.55, 0.60, 0.52, 0.58], 100, seeds=[0, 1, 2, 3, 4])
    baseline = summarize([0.45, 0.50, 0.52, 0.50, 0.53], 100, seeds=[0, 1, 2, 3, 4])
    d = paired_difference(method, baseline)
    diffs = [0.05, 0.05, 0.08, 0.02, 0.05]
    mean = sum(diffs) / 5                                                    # 0.05
    std = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 4)                 # sqrt(0.0018 / 4)
    half = 2.776 * std / math.sqrt(5)
    assert d.diffs == pytest.approx(diffs) and d.mean == pytest.approx(0.05) and d.std == pytest.approx(std)
    assert (d.low, d.high) == pytest.approx((mean - half, mean + half), abs=1e-4)
    assert d.n == 5 and d.seeds == (0, 1, 2, 3, 4) and "Student t, 4 degrees of freedom" in d.basis


def test_pairs_are_matched_by_seed_not_by_position():
    method = summarize([0.6, 0.7], 100, seeds=[1, 0])
    baseline = summarize([0.5, 0.4, 0.9], 100, seeds=[0, 1, 2])
    d = paired_difference(method, baseline)
    assert d.seeds == (1, 0) and d.diffs == pytest.approx((0.2, 0.2))
    assert paired_difference(summarize([0.6], 100, seeds=[5]), baseline) is None


def test_one_seeds_difference_has_the_interval_of_its_two_binomial_ses():
    d = paired_difference(summarize([0.6], 100, seeds=[0]), summarize([0.5], 200, seeds=[0]))
    se = math.sqrt(0.6 * 0.4 / 100 + 0.5 * 0.5 / 200)
    assert d.mean == pytest.approx(0.1) and d.std is None and d.n == 1
    assert (d.low, d.high) == pytest.approx((0.1 - 1.96 * se, 0.1 + 1.96 * se), abs=1e-4)
    assert "binomial SEs" in d.basis


def test_seeds_that_all_moved_by_one_test_sample_are_not_called_certain():
    # flow R@5 of the long course: each of 3 seeds 1 of 160 test videos above MoCo; a t interval of zero
    # width would say "above", the test set's binomial noise says "within the noise"
    d = paired_difference(summarize([0.95, 0.9375, 0.9625], 160, seeds=[0, 1, 2]),
                          summarize([0.94375, 0.93125, 0.95625], 160, seeds=[0, 1, 2]))
    assert d.std == pytest.approx(0.0, abs=1e-12) and d.mean == pytest.approx(1 / 160)
    se = math.hypot(math.sqrt(0.95 * 0.05 / 160), math.sqrt(0.94375 * 0.05625 / 160))
    assert (d.low, d.high) == pytest.approx((1 / 160 - 1.96 * se, 1 / 160 + 1.96 * se), abs=1e-4)
    assert "same difference" in d.basis and verdict(d, "MoCo").startswith("within the noise of MoCo")


def test_the_verdict_words_the_interval():
    above = paired_difference(summarize([0.6, 0.62, 0.61], 100, seeds=[0, 1, 2]),
                              summarize([0.5, 0.51, 0.52], 100, seeds=[0, 1, 2]))
    text = verdict(above, "MoCo")
    assert text.startswith("above MoCo by 10.0 points (95 % CI ") and text.endswith(")")
    assert verdict(paired_difference(summarize([0.5, 0.51, 0.52], 100, seeds=[0, 1, 2]),
                                     summarize([0.6, 0.62, 0.61], 100, seeds=[0, 1, 2])), "MoCo") \
        .startswith("below MoCo by 10.0 points (95 % CI -")
    noise = paired_difference(summarize([0.50], 100, seeds=[0]), summarize([0.48], 100, seeds=[0]))
    assert verdict(noise, "MoCo") == "within the noise of MoCo: +2.0 points (95 % CI -11.9..15.9 includes 0)"
    assert verdict(None, "MoCo") == "no seed shared with MoCo"


# ----------------------------------------------------------------------------- formatting
def test_formatting_never_shows_zero_spread_nan_or_minus_zero():
    assert fmt_value(None) == "-" and fmt_value(math.nan) == "-" and fmt_value(-0.0001) == "0.0"
    assert fmt_spread(0.0) == "<0.1" and fmt_spread(0.0004) == "<0.1" and fmt_spread(0.0006) == "0.1"
    assert fmt_cell(None) == "-"
    assert fmt_cell(summarize([0.4, 0.4], 100)) == "40.0 ± <0.1"            # identical seeds
    assert fmt_cell(summarize([1.0], 100)) == "100.0 ± 0.7"                  # p = 1 taken as 99.5 of 100
    assert fmt_cell(summarize([0.4], 100).to_dict()) == "40.0 ± 4.9"
    assert fmt_cell(summarize([0.4], 100), scale=1, digits=3) == "0.400 ± 0.049"


def test_markdown_never_shows_zero_spread_or_nan():
    cells = [summarize([0.4, 0.4], 100), summarize([0.3], 100), None]
    md = markdown_table(["method", "a", "b", "c", "spread"], [["x", *map(fmt_cell, cells), row_label(cells)]],
                        [spread_note(cells), dataset_note("pretrain", 100, 200, 10, {"linear": 0.1})])
    assert "± 0.0" not in md and "nan" not in md.lower()
    assert "| x | 40.0 ± <0.1 | 30.0 ± 4.6 | - | std over 2 seeds / binomial SE, one seed |" in md
    assert "the spread column says which" in md
    assert "pretrain: 100 test videos, 200 train videos, 10 classes; chance: linear 10.0; one run's binomial " \
           "standard error is at most 5.0 points." in md


def test_the_spread_note_names_the_spread():
    assert "Mean ± sample std over 3 training seeds" in spread_note([summarize([0.1, 0.2, 0.3])])
    assert "One training seed" in spread_note([summarize([0.1], 10)]) and "binomial standard error" in \
        spread_note([summarize([0.1], 10)])
    assert spread_note([None]) == "No results yet."


# ----------------------------------------------------------------------------- variants
def test_a_variant_takes_its_label_and_colour_from_the_registry():
    from cmmc_lib.registry import METHODS
    v = Variant.of("cmmc")
    assert (v.name, v.method, v.alternate, v.label, v.colour) == ("cmmc", "cmmc", True, METHODS["cmmc"].label,
                                                                  METHODS["cmmc"].colour)
    joint = Variant("cmmc-joint", "cmmc", False, "w/o alternate training")
    assert joint.overrides() == ["ssl.method=cmmc", "schedule.alternate=false"] and joint.colour == v.colour
    with pytest.raises(ValueError, match="unknown method"):
        Variant("x", "nope")
    with pytest.raises(AttributeError):
        joint.alternate = True                                                # frozen


def test_the_tables_core_draws_no_figures_and_trains_nothing():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(tables))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
               {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith(("matplotlib", "torch", "cmmc_lib.train", "viz", "pipeline")) for m in imported)


def test_a_summary_never_prints_a_spread_of_zero():
    assert str(summarize([0.167, 0.167, 0.167], 18)) == "0.167 ± < 0.001 (std over 3 seeds)"
    assert str(summarize([0.2, 0.4], 100)) == "0.300 ± 0.141 (std over 2 seeds)"
    assert str(summarize([0.5], 100)) == "0.500 ± 0.050 (binomial SE, one seed)"
