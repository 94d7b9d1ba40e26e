"""The poster's tables as one command: ``cmmc ablate --preset P --seeds N [--table ablation|comparison]``.

For each training seed, stage 1 (RGB and flow MoCo) is trained once and shared by every stage-2
pipeline (:mod:`cmmc_lib.pipeline`) of the table:

* ``ablation`` ("Impact of different strategies"): MoCo (stage 2 continues MoCo: the same
  budget), + mixup (input mixup, same modality), + CM mixup, + CM cutmix (CMMC); RGB, flow and
  two-stream; linear probe top-1 and retrieval R@1 / R@5. A fifth pipeline trains CMMC without
  alternate training, for the accuracy-vs-epochs curves.
* ``comparison`` (the state-of-the-art comparison): MoCo, CMMC, CoCLR and CoCLR + CMMC, RGB and
  two-stream; linear probe, fine-tune and R@1.

Each is evaluated on the pre-training dataset and on a transfer dataset (the paper: UCF101 ->
HMDB51; the synthetic data: the same generator with another seed, so new groups and looks of
the same classes). Everything is resumable: runs are reused or resumed
(:func:`cmmc_lib.train.train_or_load`) and each evaluation is appended to
``<out>/results.jsonl`` as it finishes. Outputs per table: ``<table>.csv`` (every seed),
``<table>.md`` (mean ± std beside the poster's numbers, with chance levels and test-set sizes).
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from .config import Config, preset
from .registry import METHODS
from .pipeline import final_networks, plan_pipeline

log = logging.getLogger(__name__)

DATASETS = ("pretrain", "transfer")
STREAMS = ("rgb", "flow", "two-stream")
#: metric -> the protocol that measures it and the key in its result
METRICS = {"linear": ("linear", "top1"), "finetune": ("finetune", "top1"), "R@1": ("retrieval", "R@1"),
           "R@5": ("retrieval", "R@5")}
NAMES = {name: method.label for name, method in METHODS.items()}


@dataclass(frozen=True)
class Table:
    """What a table trains, measures and shows; ``poster`` maps (stream, variant) to the poster's
    numbers (in %) for ``poster_columns``."""
    name: str
    variants: tuple[str, ...]
    streams: tuple[str, ...]
    metrics: tuple[str, ...]
    poster_columns: tuple[str, ...]
    poster: dict


TABLES = {t.name: t for t in (
    Table("ablation", ("moco", "mixup", "cm-mixup", "cmmc"), STREAMS, ("linear", "R@1", "R@5"),
          ("linear UCF", "linear HMDB", "R@1 UCF", "R@1 HMDB"), {
              ("rgb", "moco"): (46.8, 23.1, 33.1, 15.2), ("rgb", "mixup"): (52.8, 24.4, 37.6, 17.6),
              ("rgb", "cm-mixup"): (53.9, 25.1, 40.3, 17.6), ("rgb", "cmmc"): (55.8, 28.3, 42.8, 19.1),
              ("flow", "moco"): (66.8, 30.3, 45.2, 20.8), ("flow", "mixup"): (68.6, 33.1, 48.7, 19.5),
              ("flow", "cm-mixup"): (70.4, 33.1, 51.2, 21.0), ("flow", "cmmc"): (72.4, 34.9, 53.9, 23.1),
              ("two-stream", "moco"): (68.1, 33.1, 49.8, 21.9), ("two-stream", "mixup"): (71.3, 36.3, 53.8, 24.5),
              ("two-stream", "cm-mixup"): (72.2, 35.9, 56.1, 25.3), ("two-stream", "cmmc"): (74.0, 38.1, 58.1, 27.1),
          }),
    Table("comparison", ("moco", "cmmc", "coclr", "coclr-cmmc"), ("rgb", "two-stream"),
          ("linear", "finetune", "R@1"),
          ("linear UCF", "linear HMDB", "fine-tune UCF", "fine-tune HMDB", "R@1 UCF"), {
              ("rgb", "moco"): (46.8, 23.1, None, None, 33.1), ("two-stream", "moco"): (68.1, 33.1, None, None, 49.8),
              ("rgb", "coclr"): (70.2, 39.1, 81.4, 52.1, None), ("two-stream", "coclr"): (72.1, 40.2, 87.3, 58.7, 55.9),
              ("rgb", "cmmc"): (55.8, 28.3, None, None, 42.8), ("two-stream", "cmmc"): (74.0, 38.1, 87.5, 59.1, 58.1),
              ("rgb", "coclr-cmmc"): (71.3, 39.4, 82.5, 53.2, None),
              ("two-stream", "coclr-cmmc"): (74.7, 40.8, 87.9, 59.0, None),
          }),
)}
#: The accuracy-vs-epochs curves: pipeline variant -> the poster's label.
CURVES = {"moco": "w/o mix", "mixup": "w/o CMMC", "cmmc-joint": "w/o alternate training", "cmmc": "w CMMC"}


def transfer_data(cfg: Config) -> dict[str, Any]:
    """The transfer dataset of a pre-training config, as DataConfig overrides: HMDB51 for
    UCF101 (the paper), the same synthetic generator with the next seed for synthetic data."""
    d = cfg.data
    if d.dataset == "synthetic":
        seed = d.synthetic_seed + 1
        root = str(Path(d.root).parent / f"{d.synthetic_size}-seed{seed}") if d.root else None
        return {"synthetic_seed": seed, "root": root}
    if d.dataset == "ucf101":
        return {"dataset": "hmdb51", "root": None, "split": 1}
    raise ValueError(f"no transfer dataset is defined for {d.dataset!r}; pass transfer=... explicitly")


@dataclass
class Pipeline:
    """One stage-2 variant of one seed: where it lives and what it trains."""
    seed: int
    variant: str                 # a method name, or "cmmc-joint"
    cfg: Config
    root: Path
    stage1_root: Path

    def stages(self):
        return plan_pipeline(self.cfg, self.root, self.stage1_root)


def plan_ablation(base: Config, seeds: list[int], out: str | Path, table: str = "ablation",
                  curves: bool = True, variants: Sequence[str] | None = None) -> list[Pipeline]:
    """Every pipeline of a table: per seed, one per variant (``variants``: a subset of the
    table's, e.g. a lesson's rows) and, with ``curves``, CMMC w/o alternate training; stage 1
    shared under ``<out>/seed<S>``, so the tables share runs too."""
    out = Path(out)
    chosen = TABLES[table].variants if variants is None else tuple(variants)
    unknown = sorted(set(chosen) - set(TABLES[table].variants))
    if unknown:
        raise ValueError(f"the {table} table has no variant(s) {', '.join(unknown)}")
    variants = chosen + (("cmmc-joint",) if curves else ())
    plans = []
    for seed in seeds:
        for variant in variants:
            cfg = copy.deepcopy(base)
            cfg.run.seed = seed
            cfg.ssl.method = variant.replace("-joint", "")
            cfg.schedule.alternate = not variant.endswith("-joint")
            plans.append(Pipeline(seed, variant, cfg, out / f"seed{seed}" / variant, out / f"seed{seed}"))
    return plans


# ----------------------------------------------------------------------------- evaluation
def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_variant(p: Pipeline, protocol: str, dataset: str, transfer: dict, device: str) -> dict[str, Any]:
    """One protocol on one dataset for one variant of one seed: RGB, flow and their fusion."""
    from .evaluate.runner import evaluate_run
    nets = final_networks(p.stages())
    (rgb_dir, rgb_mod), (flow_dir, flow_mod) = nets["rgb"], nets["flow"]
    kw = {"ks": (1, 5, 10, 20)} if protocol == "retrieval" else {}
    res = evaluate_run(rgb_dir, protocol, other_run=flow_dir, modality=rgb_mod, other_modality=flow_mod,
                       device=device, progress=False, data=transfer if dataset == "transfer" else None,
                       append=False, **kw)
    by_stream = {s["modality"]: s for s in res["streams"]}
    by_stream["two-stream"] = res["fused"]
    out = {"seed": p.seed, "method": p.variant, "protocol": protocol, "dataset": dataset,
           "num_test": res.get("num_test", res.get("num_queries")),
           "num_train": res.get("num_train", res.get("num_gallery")),
           "num_classes": len(res.get("classes", [])) or None, "seconds": round(res["seconds"], 2)}
    for stream in STREAMS:
        for metric, (proto, key) in METRICS.items():
            if proto == protocol:
                out[f"{stream}/{metric}"] = by_stream[stream][key]
    return out


def run_ablation(base: Config, seeds: list[int], out: str | Path, table: str = "ablation",
                 transfer: dict | None = None, curves: bool = True, device: str = "auto",
                 progress: bool = True, variants: Sequence[str] | None = None) -> dict[str, Any]:
    """Train and evaluate every pipeline of the table (or of ``variants``), then write its files
    (rows of variants not run yet read as "-").

    Returns ``table`` (aggregated rows, see :func:`aggregate`), ``files``, ``seconds``."""
    from tqdm.auto import tqdm

    from .pipeline import run_pipeline
    spec = TABLES[table]
    started, out = time.perf_counter(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    transfer = transfer if transfer is not None else transfer_data(base)
    plans = plan_ablation(base, seeds, out, table, curves and table == "ablation", variants)
    results_path = out / "results.jsonl"
    done = {(r["seed"], r["method"], r["protocol"], r["dataset"]) for r in read_results(results_path)}
    protocols = tuple(dict.fromkeys(METRICS[m][0] for m in spec.metrics))
    evals = [(p, proto, ds) for p in plans if p.variant in spec.variants for proto in protocols for ds in DATASETS]
    bar = tqdm(total=len(plans) + len(evals), desc=table, disable=not progress, dynamic_ncols=True)
    for p in plans:
        bar.set_postfix_str(f"seed {p.seed} {p.variant}")
        run_pipeline(p.cfg, p.root, p.stage1_root)
        bar.update(1)
    for p, protocol, dataset in evals:
        bar.set_postfix_str(f"seed {p.seed} {p.variant} {protocol} {dataset}")
        if (p.seed, p.variant, protocol, dataset) not in done:
            record = evaluate_variant(p, protocol, dataset, transfer, device)
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        bar.update(1)
    bar.close()
    records = [r for r in read_results(results_path) if r["seed"] in seeds and r["method"] in spec.variants]
    rows = aggregate(records, spec)
    files = write_tables(rows, records, spec, out, base, transfer)
    return {"out": str(out), "table_name": table, "seeds": list(seeds), "table": rows, "files": files,
            "seconds": time.perf_counter() - started}


def aggregate(records: list[dict[str, Any]], spec: Table) -> list[dict[str, Any]]:
    """One row per (stream, variant): for each ``<metric>/<dataset>`` the values over seeds, their
    mean and sample standard deviation (0 for one seed)."""
    rows = []
    for stream in spec.streams:
        for method in spec.variants:
            row: dict[str, Any] = {"stream": stream, "method": method, "name": NAMES[method]}
            for dataset in DATASETS:
                for metric in spec.metrics:
                    protocol = METRICS[metric][0]
                    vals = [r[f"{stream}/{metric}"] for r in records
                            if r["method"] == method and r["dataset"] == dataset and r["protocol"] == protocol]
                    cell = f"{metric}/{dataset}"
                    row[cell] = vals
                    row[f"{cell}/mean"] = statistics.fmean(vals) if vals else math.nan
                    row[f"{cell}/std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rows.append(row)
    return rows


def paired_difference(rows: list[dict[str, Any]], method: str, baseline: str, cell: str,
                      stream: str = "rgb") -> tuple[float, float, list[float]]:
    """``method`` minus ``baseline`` on ``cell`` (``<metric>/<dataset>``), seed by seed (both rows
    share each seed's stage 1, so the pairs differ only by stage 2): ``(mean, std, differences)``."""
    pick = {r["method"]: r[cell] for r in rows if r["stream"] == stream}
    diffs = [a - b for a, b in zip(pick.get(method, []), pick.get(baseline, []))]
    mean = statistics.fmean(diffs) if diffs else math.nan
    return mean, statistics.stdev(diffs) if len(diffs) > 1 else 0.0, diffs


def describe_rows(rows: list[dict[str, Any]], metrics: Sequence[str], chance: dict[str, float],
                  datasets: Sequence[str] = DATASETS) -> str:
    """The rows as text, one line per (stream, method): each metric as mean ± std over seeds, with
    the number of seeds and the chance level."""
    lines = []
    for r in rows:
        cells = []
        for d in datasets:
            for m in metrics:
                vals, c = r.get(f"{m}/{d}", []), chance.get(f"{m}/{d}")
                if vals:
                    cells.append(f"{m} {d} {r[f'{m}/{d}/mean']:.3f} ± {r[f'{m}/{d}/std']:.3f}"
                                 + (f" (chance {c:.3f})" if c is not None else ""))
        seeds = max((len(r.get(f"{m}/{d}", [])) for m in metrics for d in datasets), default=0)
        lines.append(f"{r['stream']:>10} {r['name']:<16} [{seeds} seed(s)] " + "; ".join(cells))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def _fmt(row: dict, cell: str) -> str:
    """``mean ± std`` over seeds in %; one seed has no spread across seeds: its value alone."""
    mean, std = row[f"{cell}/mean"], row[f"{cell}/std"]
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" if len(row[cell]) < 2 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(rows: list[dict[str, Any]], spec: Table, seeds: int, sizes: dict[str, dict[str, int]],
                   chance: dict[str, float]) -> str:
    """A table as markdown, in %, mean ± std over seeds, the poster's numbers beside."""
    head = ["stream", "method"] + [f"{m} {d}" for m in spec.metrics for d in DATASETS] + \
           [f"poster {c}" for c in spec.poster_columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        poster = spec.poster.get((row["stream"], row["method"]), (None,) * len(spec.poster_columns))
        cells = [row["stream"], row["name"]] + [_fmt(row, f"{m}/{d}") for m in spec.metrics for d in DATASETS]
        cells += ["-" if v is None else f"{v}" for v in poster]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Mean ± sample std over {seeds} training seeds, in %." if seeds > 1 else
             "One training seed, in %: no spread across seeds; see each dataset's binomial standard error."]
    for d in DATASETS:
        if d in sizes:
            s = sizes[d]
            se = 100 * math.sqrt(0.25 / s["num_test"])
            levels = ", ".join(f"{m} {100 * chance[f'{m}/{d}']:.1f}" for m in spec.metrics
                               if f"{m}/{d}" in chance)
            notes.append(f"{d}: {s['num_test']} test videos, {s['num_train']} train videos, "
                         f"{s['num_classes']} classes; chance: {levels}; one run's binomial standard error "
                         f"is at most {se:.1f} points.")
    notes.append("The poster's numbers are S3D on UCF101 (pre-training) and HMDB51 (transfer): they show "
                 "the direction of the effects the synthetic data can reproduce, not numbers to match.")
    return "\n".join(lines + [""] + notes) + "\n"


def write_tables(rows, records, spec: Table, out: Path, base: Config, transfer: dict) -> dict[str, str]:
    """``<table>.csv`` (one line per seed, variant, protocol and dataset) and ``<table>.md``."""
    csv_path, md_path = out / f"{spec.name}.csv", out / f"{spec.name}.md"
    fields = ["seed", "method", "protocol", "dataset", "num_train", "num_test"] + \
             [f"{s}/{m}" for s in spec.streams for m in spec.metrics]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(sorted(records, key=lambda r: (r["seed"], spec.variants.index(r["method"]), r["protocol"],
                                                    r["dataset"])))
    sizes = {r["dataset"]: {k: r[k] for k in ("num_test", "num_train", "num_classes")}
             for r in records if r["protocol"] == "linear"}
    chance = chance_levels(base, transfer)
    md_path.write_text(markdown_table(rows, spec, len({r["seed"] for r in records}), sizes, chance))
    return {"csv": str(csv_path), "markdown": str(md_path)}


def chance_levels(base: Config, transfer: dict) -> dict[str, float]:
    """Chance of each metric on each dataset, from the class balance of its splits."""
    from .data.datasets import build_dataset
    from .evaluate.chance import accuracy_chance, recall_at_k_chance
    out = {}
    for dataset, data in (("pretrain", {}), ("transfer", transfer)):
        d = copy.deepcopy(base.data)
        for k, v in data.items():
            setattr(d, k, v)
        try:
            train = build_dataset(d, "train", False, ("rgb",), eval_windows=1)
            test = build_dataset(d, "test", False, ("rgb",), eval_windows=1)
        except (FileNotFoundError, ValueError):
            continue
        out[f"linear/{dataset}"] = out[f"finetune/{dataset}"] = accuracy_chance(len(train.classes))
        for k, level in recall_at_k_chance(test.labels, train.labels, (1, 5)).items():
            out[f"R@{k}/{dataset}"] = level
    return out


def epoch_curves(plans: list[Pipeline], modality: str = "rgb") -> dict[str, dict[int, list[tuple[int, float]]]]:
    """The per-epoch kNN R@1 of ``modality``'s network through each variant's whole schedule
    (stage 1, then its stage-2 runs), epochs counted from the start of stage 1:
    ``{variant: {seed: [(epoch, R@1), ...]}}`` for the variants of :data:`CURVES`."""
    from .runs import RunFolder
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for p in plans:
        if p.variant not in CURVES:
            continue
        points, offset = [], 0
        for stage in p.stages():
            trains = stage.modality == modality or (stage.cfg.ssl.joint and stage.cfg.ssl.other_modality == modality)
            run = RunFolder(stage.run_dir)
            if not trains or not run.metrics.path.is_file():
                continue
            rows = [r for r in run.metrics.read() if r["kind"] == "epoch"]
            points += [(offset + r["epoch"] + 1, r["knn_r1"]) for r in rows if r["knn_r1"] is not None]
            offset += stage.cfg.optim.epochs
        curves.setdefault(p.variant, {})[p.seed] = points
    return curves


def ablate(preset_name: str, seeds: int | list[int], out: str | Path, overrides: list[str] = (),
           **kw) -> dict[str, Any]:
    """``cmmc ablate``: the preset with overrides, ``seeds`` training seeds (0..N-1 or a list)."""
    base = preset(preset_name, list(overrides))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("--seeds must be at least 1")
    return run_ablation(base, seed_list, out, **kw)
