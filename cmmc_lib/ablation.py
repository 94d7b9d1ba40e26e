"""The poster's ablation table as one command: ``cmmc ablate --preset P --seeds N``.

For each training seed, stage 1 (RGB and flow MoCo) is trained once and shared by four stage-2
pipelines (:mod:`cmmc_lib.pipeline`), one per row of the poster's table "Impact of different
strategies": MoCo (stage 2 continues MoCo: the same budget), + mixup (input mixup, same
modality), + CM mixup, + CM cutmix (CMMC). Each row's final RGB network, flow network and their
two-stream fusion are evaluated with the linear probe (top-1) and retrieval (R@1, R@5) on the
pre-training dataset and on a transfer dataset (the paper: UCF101 -> HMDB51; the synthetic
data: the same generator with another seed, so new groups and looks of the same classes).
A fifth pipeline trains CMMC without alternate training, for the accuracy-vs-epochs curves.

Everything is resumable: runs are reused or resumed (:func:`cmmc_lib.train.train_or_load`) and
each evaluation is appended to ``<out>/results.jsonl`` as it finishes, so an interrupted ablation
continues where it stopped. Outputs: ``results.jsonl``, ``ablation.csv`` (every seed),
``ablation.md`` (mean +- std beside the poster's numbers) and the figures.
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
from typing import Any

from .config import Config, preset
from .pipeline import final_networks, plan_pipeline

log = logging.getLogger(__name__)

METHODS = ("moco", "mixup", "cm-mixup", "cmmc")
ROW_NAMES = {"moco": "MoCo (baseline)", "mixup": "+ mixup", "cm-mixup": "+ CM mixup", "cmmc": "+ CM cutmix"}
STREAMS = ("rgb", "flow", "two-stream")
DATASETS = ("pretrain", "transfer")
METRICS = ("linear", "R@1", "R@5")
#: The poster's table: (stream, method) -> (linear UCF, linear HMDB, R@1 UCF, R@1 HMDB), in %.
POSTER = {
    ("rgb", "moco"): (46.8, 23.1, 33.1, 15.2), ("rgb", "mixup"): (52.8, 24.4, 37.6, 17.6),
    ("rgb", "cm-mixup"): (53.9, 25.1, 40.3, 17.6), ("rgb", "cmmc"): (55.8, 28.3, 42.8, 19.1),
    ("flow", "moco"): (66.8, 30.3, 45.2, 20.8), ("flow", "mixup"): (68.6, 33.1, 48.7, 19.5),
    ("flow", "cm-mixup"): (70.4, 33.1, 51.2, 21.0), ("flow", "cmmc"): (72.4, 34.9, 53.9, 23.1),
    ("two-stream", "moco"): (68.1, 33.1, 49.8, 21.9), ("two-stream", "mixup"): (71.3, 36.3, 53.8, 24.5),
    ("two-stream", "cm-mixup"): (72.2, 35.9, 56.1, 25.3), ("two-stream", "cmmc"): (74.0, 38.1, 58.1, 27.1),
}
#: The accuracy-vs-epochs curves: curve name -> (pipeline variant, the poster's label).
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
    variant: str                 # a METHODS name, or "cmmc-joint"
    cfg: Config
    root: Path
    stage1_root: Path

    def stages(self):
        return plan_pipeline(self.cfg, self.root, self.stage1_root)


def plan_ablation(base: Config, seeds: list[int], out: str | Path, curves: bool = True) -> list[Pipeline]:
    """Every pipeline of the ablation: per seed, the four rows and (``curves``) CMMC w/o
    alternate training; stage 1 shared under ``<out>/seed<S>``."""
    out = Path(out)
    plans = []
    for seed in seeds:
        for variant in METHODS + (("cmmc-joint",) if curves else ()):
            cfg = copy.deepcopy(base)
            cfg.run.seed = seed
            cfg.ssl.method = variant.replace("-joint", "")
            cfg.schedule.alternate = not variant.endswith("-joint")
            plans.append(Pipeline(seed, variant, cfg, out / f"seed{seed}" / variant, out / f"seed{seed}"))
    return plans


# ----------------------------------------------------------------------------- results
def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(r: dict) -> tuple:
    return (r["seed"], r["method"], r["protocol"], r["dataset"])


def evaluate_row(p: Pipeline, protocol: str, dataset: str, transfer: dict, device: str,
                 epochs: int | None) -> dict[str, Any]:
    """One evaluation of one row of one seed: RGB, flow and their fusion, on one dataset."""
    from .evaluate.runner import evaluate_run
    nets = final_networks(p.stages())
    (rgb_dir, rgb_mod), (flow_dir, flow_mod) = nets["rgb"], nets["flow"]
    data = transfer if dataset == "transfer" else None
    kw = {"epochs": epochs} if protocol == "linear" else {"ks": (1, 5, 10, 20)}
    res = evaluate_run(rgb_dir, protocol, other_run=flow_dir, modality=rgb_mod, other_modality=flow_mod,
                       device=device, progress=False, data=data, append=False, **kw)
    by_stream = {s["modality"]: s for s in res["streams"]}
    by_stream["two-stream"] = res["fused"]
    metric_keys = ("top1",) if protocol == "linear" else ("R@1", "R@5")
    out = {"seed": p.seed, "method": p.variant, "protocol": protocol, "dataset": dataset,
           "num_test": res.get("num_test", res.get("num_queries")),
           "num_train": res.get("num_train", res.get("num_gallery")),
           "num_classes": len(res.get("classes", [])) or None, "seconds": round(res["seconds"], 2)}
    for stream in STREAMS:
        for k in metric_keys:
            out[f"{stream}/{'linear' if k == 'top1' else k}"] = by_stream[stream][k]
    return out


def run_ablation(base: Config, seeds: list[int], out: str | Path, transfer: dict | None = None,
                 curves: bool = True, device: str = "auto", probe_epochs: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every pipeline of :func:`plan_ablation`, then write the tables.

    Returns ``table`` (aggregated rows, see :func:`aggregate`), ``files`` and ``seconds``."""
    from tqdm.auto import tqdm

    from .pipeline import run_pipeline
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    transfer = transfer if transfer is not None else transfer_data(base)
    plans = plan_ablation(base, seeds, out, curves)
    results_path = out / "results.jsonl"
    done = {_key(r) for r in read_results(results_path)}
    evals = [(p, proto, ds) for p in plans if p.variant in METHODS for proto in ("linear", "retrieval")
             for ds in DATASETS]
    bar = tqdm(total=len(plans) + len(evals), desc="ablation", disable=not progress, dynamic_ncols=True)
    for p in plans:
        bar.set_postfix_str(f"seed {p.seed} {p.variant}")
        run_pipeline(p.cfg, p.root, p.stage1_root)
        bar.update(1)
    for p, protocol, dataset in evals:
        bar.set_postfix_str(f"seed {p.seed} {p.variant} {protocol} {dataset}")
        if (p.seed, p.variant, protocol, dataset) not in done:
            record = evaluate_row(p, protocol, dataset, transfer, device, probe_epochs)
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        bar.update(1)
    bar.close()
    records = [r for r in read_results(results_path) if r["seed"] in seeds]
    table = aggregate(records)
    files = write_tables(table, records, out, base, transfer)
    return {"out": str(out), "seeds": list(seeds), "table": table, "files": files,
            "seconds": time.perf_counter() - started}


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (stream, method): for each (metric, dataset) the values over seeds, their
    mean and sample standard deviation (0 for one seed), and the test-set size."""
    rows = []
    for stream in STREAMS:
        for method in METHODS:
            row: dict[str, Any] = {"stream": stream, "method": method, "name": ROW_NAMES[method]}
            for dataset in DATASETS:
                for metric in METRICS:
                    protocol = "linear" if metric == "linear" else "retrieval"
                    vals = [r[f"{stream}/{metric}"] for r in records
                            if r["method"] == method and r["dataset"] == dataset and r["protocol"] == protocol]
                    cell = f"{metric}/{dataset}"
                    row[cell] = vals
                    row[f"{cell}/mean"] = statistics.fmean(vals) if vals else math.nan
                    row[f"{cell}/std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rows.append(row)
    return rows


def _fmt(row: dict, cell: str) -> str:
    mean, std = row[f"{cell}/mean"], row[f"{cell}/std"]
    return "-" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(table: list[dict[str, Any]], seeds: int, sizes: dict[str, dict[str, int]],
                   chance: dict[str, float]) -> str:
    """The ablation as a markdown table, in %, mean ± std over seeds, the poster's numbers beside."""
    head = ["stream", "method"] + [f"{m} {d}" for m in METRICS for d in DATASETS] + \
           ["poster linear UCF / HMDB", "poster R@1 UCF / HMDB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        poster = POSTER[(row["stream"], row["method"])]
        cells = [row["stream"], row["name"]] + [_fmt(row, f"{m}/{d}") for m in METRICS for d in DATASETS]
        cells += [f"{poster[0]} / {poster[1]}", f"{poster[2]} / {poster[3]}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Mean ± std over {seeds} training seed(s), in %."]
    for d in DATASETS:
        if d in sizes:
            s = sizes[d]
            notes.append(f"{d}: {s['num_test']} test videos, {s['num_train']} train videos, "
                         f"{s['num_classes']} classes; chance: linear {100 * chance.get(f'linear/{d}', math.nan):.1f}, "
                         f"R@1 {100 * chance.get(f'R@1/{d}', math.nan):.1f}, R@5 {100 * chance.get(f'R@5/{d}', math.nan):.1f}.")
    notes.append("The poster's numbers are S3D on UCF101 (pre-training) and HMDB51 (transfer): they show "
                 "the direction of the effects the synthetic data can reproduce, not numbers to match.")
    return "\n".join(lines + [""] + notes) + "\n"


def write_tables(table, records, out: Path, base: Config, transfer: dict) -> dict[str, str]:
    """``ablation.csv`` (one line per seed and row) and ``ablation.md``; returns their paths."""
    csv_path, md_path = out / "ablation.csv", out / "ablation.md"
    fields = ["seed", "method", "protocol", "dataset", "num_train", "num_test"] + \
             [f"{s}/{m}" for s in STREAMS for m in METRICS]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(sorted(records, key=lambda r: (r["seed"], METHODS.index(r["method"]), r["protocol"],
                                                    r["dataset"])))
    sizes = {r["dataset"]: {k: r[k] for k in ("num_test", "num_train", "num_classes")}
             for r in records if r["protocol"] == "linear"}
    chance = chance_levels(base, transfer)
    seeds = len({r["seed"] for r in records})
    md_path.write_text(markdown_table(table, seeds, sizes, chance))
    return {"csv": str(csv_path), "markdown": str(md_path)}


def chance_levels(base: Config, transfer: dict) -> dict[str, float]:
    """Chance of each metric on each dataset, from the class balance of its splits."""
    from .evaluate.chance import accuracy_chance, recall_at_k_chance
    from .data.datasets import build_dataset
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
        out[f"linear/{dataset}"] = accuracy_chance(test.labels, len(train.classes))
        for k in (1, 5):
            out[f"R@{k}/{dataset}"] = recall_at_k_chance(test.labels, train.labels, k)
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
