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
``<table>.md`` (mean ± spread beside the poster's numbers, with chance levels and test-set sizes;
the spread, the paired differences and the file handling are :mod:`cmmc_lib.tables`'s).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import Config, preset
from .data.datasets import build_dataset
from .evaluate.chance import accuracy_chance, below_chance_note, recall_at_k_chance
from .data.prepare import prepare_synthetic
from .data.synthetic import ensure_synthetic, in_context
from .evaluate.runner import evaluate_run, subset_value
from .files import append_jsonl, atomic_write, read_jsonl
from .pipeline import Stage, final_networks, is_complete, plan_pipeline, run_pipeline
from .provenance import stamp
from .runs import FolderLock, RunFolder
from .tables import (Difference, Summary, Variant, collect, dataset_note, fmt_cell, fmt_value, row_label,
                     spread_note, verdict)
from .tables import markdown_table as render_markdown
from .tables import paired_difference as paired

log = logging.getLogger(__name__)

DATASETS = ("pretrain", "transfer")
STREAMS = ("rgb", "flow", "two-stream")
#: metric -> the protocol that measures it and the key in its result
METRICS = {"linear": ("linear", "top1"), "finetune": ("finetune", "top1"), "R@1": ("retrieval", "R@1"),
           "R@5": ("retrieval", "R@5"),
           "linear-best": ("linear", "top1_best_test_epoch"),   # CoCLR's protocol: the best test epoch
           # on the synthetic data's motion-only test clips (no scene to read the class from):
           # read off the per-video hits of the protocol (evaluate.runner.hits)
           "linear motion-only": ("linear", "top1_hits"), "R@1 motion-only": ("retrieval", "R@1_hits")}
#: the metrics measured on the motion-only clips, and the key of their test-set size in a record
MOTION_ONLY = {"linear motion-only", "R@1 motion-only"}
MOTION_N = "num_test_motion"
#: CMMC trained without alternate training (both networks at once): the curves' fifth pipeline.
JOINT = Variant("cmmc-joint", "cmmc", alternate=False, label="w/o alternate training")


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
    # the study of when CMMC helps (cmmc study ablate): the ablation's rows and CMMC w/o alternate
    # training, on all test clips and on the motion-only ones; nothing of the poster's to compare
    Table("study", ("moco", "mixup", "cm-mixup", "cmmc", "cmmc-joint"), STREAMS,
          ("linear", "linear motion-only", "R@1", "R@1 motion-only"), (), {}),
    # flow too: the poster has no flow column, but a two-stream row is read against both its streams
    Table("comparison", ("moco", "cmmc", "coclr", "coclr-cmmc"), STREAMS,
          ("linear", "finetune", "R@1"),
          ("linear UCF", "linear HMDB", "fine-tune UCF", "fine-tune HMDB", "R@1 UCF"), {
              ("rgb", "moco"): (46.8, 23.1, None, None, 33.1), ("two-stream", "moco"): (68.1, 33.1, None, None, 49.8),
              ("rgb", "coclr"): (70.2, 39.1, 81.4, 52.1, None), ("two-stream", "coclr"): (72.1, 40.2, 87.3, 58.7, 55.9),
              ("rgb", "cmmc"): (55.8, 28.3, None, None, 42.8), ("two-stream", "cmmc"): (74.0, 38.1, 87.5, 59.1, 58.1),
              ("rgb", "coclr-cmmc"): (71.3, 39.4, 82.5, 53.2, None),
              ("two-stream", "coclr-cmmc"): (74.7, 40.8, 87.9, 59.0, None),
          }),
)}
#: Every variant a table or the curves train, by name (a table's variants are its methods).
VARIANTS = {v.name: v for v in (*(Variant.of(m) for t in TABLES.values() for m in t.variants
                                   if m != JOINT.name), JOINT)}
#: The accuracy-vs-epochs curves: the variants the poster draws, with its labels.
CURVES = {v.name: v for v in (Variant("moco", "moco", label="w/o mix"), Variant("mixup", "mixup", label="w/o CMMC"),
                              JOINT, Variant("cmmc", "cmmc", label="w CMMC"))}


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
class VariantRun:
    """One variant of one seed: its config, where it lives and where its seed's stage 1 lives."""
    seed: int
    variant: Variant
    cfg: Config
    root: Path
    stage1_root: Path

    def stages(self) -> list[Stage]:
        return plan_pipeline(self.cfg, self.root, self.stage1_root)


def plan_ablation(base: Config, seeds: list[int], out: str | Path, table: str = "ablation",
                  curves: bool = True, variants: Sequence[str] | None = None) -> list[VariantRun]:
    """Every run of a table: per seed, one per variant (``variants``: a subset of the table's, e.g. a
    lesson's rows) and, with ``curves``, CMMC w/o alternate training (:data:`JOINT`); stage 1 shared
    under ``<out>/seed<S>``, so the tables share runs too."""
    out = Path(out)
    chosen = TABLES[table].variants if variants is None else tuple(variants)
    unknown = sorted(set(chosen) - set(TABLES[table].variants))
    if unknown:
        raise ValueError(f"the {table} table has no variant(s) {', '.join(unknown)}")
    plans = []
    for seed in seeds:
        for variant in [VARIANTS[name] for name in chosen] + ([JOINT] if curves else []):
            cfg = copy.deepcopy(base)
            cfg.run.seed = seed
            cfg.ssl.method, cfg.schedule.alternate = variant.method, variant.alternate
            plans.append(VariantRun(seed, variant, cfg, out / f"seed{seed}" / variant.name, out / f"seed{seed}"))
    return plans


# ----------------------------------------------------------------------------- evaluation
def evaluate_variant(p: VariantRun, protocol: str, dataset: str, transfer: dict, device: str) -> dict[str, Any]:
    """One protocol on one dataset for one variant of one seed: RGB, flow and their fusion. Only a
    variant whose every stage finished is evaluated (ValueError otherwise)."""
    stages = p.stages()
    if not is_complete(stages):
        raise ValueError(f"seed {p.seed} {p.variant.name}: not every stage has finished; train it first")
    nets = final_networks(stages)
    (rgb_dir, rgb_mod), (flow_dir, flow_mod) = nets["rgb"], nets["flow"]
    kw = {"ks": (1, 5, 10, 20)} if protocol == "retrieval" else {}
    res = evaluate_run(rgb_dir, protocol, other_run=flow_dir, modality=rgb_mod, other_modality=flow_mod,
                       device=device, progress=False, data=transfer if dataset == "transfer" else None,
                       append=False, **kw)
    by_stream = {s["modality"]: s for s in res["streams"]}
    by_stream["two-stream"] = res["fused"]
    out = {"seed": p.seed, "method": p.variant.name, "protocol": protocol, "dataset": dataset,
           "num_test": res.get("num_test", res.get("num_queries")),
           "num_train": res.get("num_train", res.get("num_gallery")),
           "num_classes": len(res.get("classes", [])) or None, "seconds": round(res["seconds"], 2),
           "skipped_test": (res.get("skipped") or {}).get("test", [])}
    motion = motion_only_mask(p.cfg, transfer if dataset == "transfer" else {}, res.get("test_videos"))
    for stream in STREAMS:
        for metric, (proto, key) in METRICS.items():
            if proto != protocol:
                continue
            if metric not in MOTION_ONLY:
                out[f"{stream}/{metric}"] = by_stream[stream][key]
            elif motion is not None and by_stream[stream].get(key) is not None:
                out[f"{stream}/{metric}"], out[MOTION_N] = subset_value(by_stream[stream][key], motion)
    return out


def motion_only_mask(cfg: Config, data: dict, videos: Sequence[str] | None) -> list[bool] | None:
    """For each test video of a generated synthetic set (``cfg.data`` with ``data`` overrides),
    whether only its motion tells its class (its group is not filmed in the class's scene); None
    for other datasets, whose clips are not split so."""
    d = copy.deepcopy(cfg.data)
    for k, v in data.items():
        setattr(d, k, v)
    if d.dataset != "synthetic" or videos is None:
        return None
    return [not c for c in in_context(ensure_synthetic(d), list(videos))]


def run_ablation(base: Config, seeds: list[int], out: str | Path, table: str = "ablation",
                 transfer: dict | None = None, curves: bool = True, device: str = "auto",
                 progress: bool = True, variants: Sequence[str] | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """Train and evaluate every run of the table (or of ``variants``), then write its files (rows
    of variants not run yet read as "-"). Each evaluation row carries where it came from
    (:func:`cmmc_lib.provenance.stamp`: ``command``, by default this process's, commit, machine)
    and its seconds (``train_s``: training this call did before it, ``wall_s``: the evaluation);
    ``<table>.run.json`` records the call (command, commit, seeds, machine, wall time, chance
    levels), so :func:`rebuild_table` can write the table again from the files alone.

    Returns ``table`` (aggregated rows, see :func:`aggregate`), ``files``, ``seconds``."""
    with FolderLock(out, "ablation folder"):
        return _run_ablation(base, seeds, Path(out), table, transfer, curves, device, progress, variants,
                             stamp(command))


def _run_ablation(base, seeds, out: Path, table, transfer, curves, device, progress, variants,
                  where: dict) -> dict[str, Any]:
    spec = TABLES[table]
    started = time.perf_counter()
    transfer = transfer if transfer is not None else transfer_data(base)
    for data in (base.data, dataclasses.replace(base.data, **transfer)):   # generated and frame-cached once
        prepare_synthetic(data)
    plans = plan_ablation(base, seeds, out, table, curves and table == "ablation", variants)
    results_path = out / "results.jsonl"
    done = {(r["seed"], r["method"], r["protocol"], r["dataset"]) for r in read_jsonl(results_path)}
    protocols = tuple(dict.fromkeys(METRICS[m][0] for m in spec.metrics))
    evals = [(p, proto, ds) for p in plans if p.variant.name in spec.variants for proto in protocols
             for ds in DATASETS]
    unfinished, trained = set(), {}
    # closed before an interrupt propagates: the bar is not redrawn under the 'interrupted' line
    with tqdm(total=len(plans) + len(evals), desc=table, disable=not progress, dynamic_ncols=True) as bar:
        for p in plans:
            bar.set_postfix_str(f"seed {p.seed} {p.variant.name}")
            t0 = time.perf_counter()
            if not run_pipeline(p.cfg, p.root, p.stage1_root)["finished"]:      # cut short (run.max_steps)
                unfinished.add((p.seed, p.variant.name))
            trained[(p.seed, p.variant.name)] = time.perf_counter() - t0
            bar.update(1)
        for p, protocol, dataset in evals:
            bar.set_postfix_str(f"seed {p.seed} {p.variant.name} {protocol} {dataset}")
            if (p.seed, p.variant.name) in unfinished:
                log.warning("seed %d %s: a stage did not finish its schedule: not evaluated", p.seed, p.variant.name)
            elif (p.seed, p.variant.name, protocol, dataset) not in done:
                t0 = time.perf_counter()
                record = evaluate_variant(p, protocol, dataset, transfer, device)
                train_s = trained.pop((p.seed, p.variant.name), 0.0)      # on the plan's first new row only
                append_jsonl(results_path, {**record, **where, "train_s": round(train_s, 1),
                                            "wall_s": round(time.perf_counter() - t0, 1)})
            bar.update(1)
    records = table_records(read_jsonl(results_path), spec, seeds)
    rows = aggregate(records, spec)
    chance = chance_levels(base, transfer)
    files = write_tables(rows, records, spec, out, base, transfer, chance)
    seconds = time.perf_counter() - started
    measured = sorted({r["method"] for r in records}, key=spec.variants.index)
    rows_s = sum(r.get("train_s", 0) + r.get("wall_s", 0) for r in records)      # over every call
    run = {**where, "table": table, "seeds": list(seeds), "variants": measured, "wall_s": round(seconds, 1),
           "rows_s": round(rows_s, 1), "unfinished": sorted(unfinished), "chance": chance}
    atomic_write(out / f"{table}.run.json", lambda tmp: tmp.write_text(json.dumps(run, indent=1) + "\n"))
    files["run"] = str(out / f"{table}.run.json")
    return {"out": str(out), "table_name": table, "seeds": list(seeds), "table": rows, "files": files,
            "seconds": seconds, "unfinished": sorted(unfinished)}


def table_records(records: Sequence[dict[str, Any]], spec: Table, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The evaluation rows of one table: its seeds, its variants and its protocols (a results file
    shared by two tables holds the other's rows too)."""
    protocols = {METRICS[m][0] for m in spec.metrics}
    return [r for r in records if r["seed"] in seeds and r["method"] in spec.variants and r["protocol"] in protocols]


def rebuild_table(out: str | Path, table: str, into: str | Path) -> Path:
    """Write a finished table again into ``into``, from the files of ``out`` alone
    (``<table>.run.json`` for its seeds and chance levels, ``results.jsonl`` for its rows): a
    shipped table can be checked against the rows it says it came from. Returns the markdown's path."""
    out, into, spec = Path(out), Path(into), TABLES[table]
    run = json.loads((out / f"{table}.run.json").read_text())
    records = table_records(read_jsonl(out / "results.jsonl"), spec, run["seeds"])
    into.mkdir(parents=True, exist_ok=True)
    return Path(write_tables(aggregate(records, spec), records, spec, into, None, None, run["chance"])["markdown"])


def aggregate(records: list[dict[str, Any]], spec: Table) -> list[dict[str, Any]]:
    """One row per (stream, variant): ``stream``, ``method`` (the variant's name), ``name`` (its
    label) and, for each ``<metric>/<dataset>``, its :meth:`~cmmc_lib.tables.Summary.to_dict` over
    seeds (values, seeds, mean, spread and which kind) or None when not measured yet."""
    rows = []
    for stream in spec.streams:
        for name in spec.variants:
            row: dict[str, Any] = {"stream": stream, "method": name, "name": VARIANTS[name].label}
            for dataset in DATASETS:
                for metric in spec.metrics:
                    where = {"method": name, "dataset": dataset, "protocol": METRICS[metric][0]}
                    summary = collect(records, f"{stream}/{metric}", where,
                                      num_test_key=MOTION_N if metric in MOTION_ONLY else "num_test")
                    row[f"{metric}/{dataset}"] = None if summary is None else summary.to_dict()
            rows.append(row)
    return rows


def paired_difference(rows: list[dict[str, Any]], method: str, baseline: str, cell: str,
                      stream: str = "rgb") -> Difference | None:
    """``method`` minus ``baseline`` on ``cell`` (``<metric>/<dataset>``), seed by seed (both rows
    share each seed's stage 1, so the pairs differ only by stage 2), with its 95 % interval
    (:func:`cmmc_lib.tables.paired_difference`); None when they share no seed."""
    pick = {r["method"]: r.get(cell) for r in rows if r["stream"] == stream}
    a, b = pick.get(method), pick.get(baseline)
    return None if a is None or b is None else paired(Summary.from_dict(a), Summary.from_dict(b))


def conclusion_lines(rows: list[dict[str, Any]], chance: dict[str, float], cells: Sequence[str],
                     baseline: str = "moco", streams: Sequence[str] = ("rgb", "flow", "two-stream")) -> list[str]:
    """A lesson's conclusion, computed: for each stream and ``<metric>/<dataset>`` cell, each
    variant's mean ± spread with chance, and every other variant against ``baseline`` paired by
    seed in the words of its 95 % interval (:func:`cmmc_lib.tables.verdict`: "above", "below",
    "within the noise of"), and why a mean below chance is there. Cells not measured are left out."""
    names = {r["method"]: r["name"] for r in rows}
    lines = []
    for stream in streams:
        for cell in cells:
            row = {r["method"]: r.get(cell) for r in rows if r["stream"] == stream}
            if row.get(baseline) is None:
                continue
            c = chance.get(cell)
            lines.append(f"{stream}, {cell.replace('/', ' ')} (chance {c:.3f}):" if c is not None
                         else f"{stream}, {cell.replace('/', ' ')}:")
            for method, summary in row.items():
                if summary is None:
                    continue
                text = f"  {names[method]}: {fmt_cell(summary, 1, 3)} ({row_label([summary])})"
                if method != baseline:
                    diff = paired_difference(rows, method, baseline, cell, stream)
                    text += "; " + verdict(diff, names[baseline], scale=1.0, unit="", digits=3)
                s = Summary.from_dict(summary)
                note = below_chance_note(s.mean, s.num_test, c) if c is not None and s.num_test else ""
                if stream == "two-stream":
                    note = "; ".join(filter(None, (note, _fusion_note(rows, method, cell, s.mean))))
                lines.append(text + (f" ({note})" if note else ""))
    return lines


def _fusion_note(rows: list[dict[str, Any]], method: str, cell: str, fused: float) -> str:
    """Why a two-stream mean sits clearly below one of its own streams (by more than twice that
    stream's spread), or "" when it does not."""
    single = {r["stream"]: Summary.from_dict(r[cell]) for r in rows
              if r["method"] == method and r["stream"] != "two-stream" and r.get(cell)}
    if not single:
        return ""
    best, s = max(single.items(), key=lambda kv: kv[1].mean)
    if s.mean - fused <= 2 * s.spread:               # not clearly below: nothing to explain
        return ""
    other = " and ".join(k for k in single if k != best) or "the other stream"
    how = "the sum of their similarities" if cell.startswith("R@") else "the mean of their probes' class probabilities"
    return (f"below {best} alone, {s.mean:.3f}: the fusion weighs both streams equally ({how}), so {other} "
            f"can outvote {best} where {other} is confident and wrong")


def describe_rows(rows: list[dict[str, Any]], metrics: Sequence[str], chance: dict[str, float],
                  datasets: Sequence[str] = DATASETS) -> str:
    """The rows as text, one line per (stream, method): each metric as mean ± spread, with the
    chance level, and what the spread is (std over seeds, or one seed's binomial SE)."""
    lines = []
    for r in rows:
        cells, used = [], []
        for d in datasets:
            for m in metrics:
                s, c = r.get(f"{m}/{d}"), chance.get(f"{m}/{d}")
                if s is not None:
                    used.append(s)
                    cells.append(f"{m} {d} {fmt_cell(s, 1, 3)}" + (f" (chance {c:.3f})" if c is not None else ""))
        lines.append(f"{r['stream']:>10} {r['name']:<16} [{row_label(used)}] " + "; ".join(cells))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def markdown_table(rows: list[dict[str, Any]], spec: Table, sizes: dict[str, dict[str, int]],
                   chance: dict[str, float]) -> str:
    """A table as markdown, in %, mean ± spread (and which spread), the poster's numbers beside;
    notes: what the spread is, each dataset's sizes and chance levels."""
    cells = [f"{m}/{d}" for m in spec.metrics for d in DATASETS]
    head = ["stream", "method"] + [c.replace("/", " ") for c in cells] + ["spread"] + \
           [f"poster {c}" for c in spec.poster_columns]
    body = []
    for row in rows:
        poster = spec.poster.get((row["stream"], row["method"]), (None,) * len(spec.poster_columns))
        body.append([row["stream"], row["name"], *(fmt_cell(row[c]) for c in cells),
                     row_label(row[c] for c in cells), *poster])
    notes = [spread_note(row[c] for row in rows for c in cells)]
    for d in DATASETS:
        if d in sizes:
            levels = {m: chance[f"{m}/{d}"] for m in spec.metrics if f"{m}/{d}" in chance}
            notes.append(dataset_note(d, sizes[d]["num_test"], sizes[d]["num_train"], sizes[d]["num_classes"],
                                      levels))
            if sizes[d].get("skipped"):
                notes.append(f"{d}: {len(sizes[d]['skipped'])} unreadable test video(s) left out of the evaluations "
                             f"(not counted, listed in results.jsonl): {', '.join(sizes[d]['skipped'][:5])}")
    if spec.poster_columns:
        notes.append("The poster's numbers are S3D on UCF101 (pre-training) and HMDB51 (transfer): they show "
                     "the direction of the effects the synthetic data can reproduce, not numbers to match.")
    return render_markdown(head, body, notes)


def differences_markdown(rows: list[dict[str, Any]], spec: Table, baseline: str = "moco") -> str:
    """Every variant minus ``baseline``, paired by seed (the pairs share stage 1), per stream and
    cell, in % points: the mean difference, its 95 % interval and the word its interval allows
    (above / below / level), as a markdown table with a note on how the intervals are made."""
    cells = [f"{m}/{d}" for d in DATASETS for m in spec.metrics]
    names = {r["method"]: r["name"] for r in rows}
    body = []
    for stream in spec.streams:
        for method in spec.variants:
            if method == baseline:
                continue
            line = [stream, f"{names.get(method, method)} - {names.get(baseline, baseline)}"]
            for cell in cells:
                diff = paired_difference(rows, method, baseline, cell, stream)
                line.append("-" if diff is None else
                            f"{fmt_value(diff.mean, sign=True)} [{fmt_value(diff.low, sign=True)}, "
                            f"{fmt_value(diff.high, sign=True)}] "
                            f"{'above' if diff.low > 0 else 'below' if diff.high < 0 else 'level'}")
            body.append(line)
    notes = ["Paired by training seed, in % points: mean difference [95 % interval] (t interval over the seeds; "
             "one seed: the two binomial SEs); 'above' or 'below' only when the interval excludes 0, else 'level'."]
    return render_markdown(["stream", "difference"] + [c.replace("/", " ") for c in cells], body, notes)


def write_tables(rows, records, spec: Table, out: Path, base: Config, transfer: dict,
                 chance: dict[str, float] | None = None) -> dict[str, str]:
    """``<table>.csv`` (one line per seed, variant, protocol and dataset) and ``<table>.md``
    (``chance``: the chance levels, by default :func:`chance_levels` of the datasets)."""
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
    for d in sizes:
        sizes[d]["skipped"] = sorted({v for r in records if r["dataset"] == d for v in r.get("skipped_test", [])})
    chance = chance_levels(base, transfer) if chance is None else chance
    md_path.write_text(markdown_table(rows, spec, sizes, chance) + "\n"
                       + differences_markdown(rows, spec))
    return {"csv": str(csv_path), "markdown": str(md_path)}


def chance_levels(base: Config, transfer: dict) -> dict[str, float]:
    """Chance of each metric on each dataset, from the class balance of its splits."""
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
        motion = motion_only_mask(base, data, test.videos)
        if motion is not None and any(motion):
            out[f"linear motion-only/{dataset}"] = out[f"linear/{dataset}"]
            queries = [label for label, m in zip(test.labels, motion) if m]
            out[f"R@1 motion-only/{dataset}"] = recall_at_k_chance(queries, train.labels, (1,))[1]
    return out


def epoch_curves(plans: list[VariantRun], modality: str = "rgb") -> dict[str, dict[int, list[tuple[int, float]]]]:
    """The per-epoch kNN R@1 of ``modality``'s network through each variant's whole schedule
    (stage 1, then its stage-2 runs), epochs counted from the start of stage 1:
    ``{variant name: {seed: [(epoch, R@1), ...]}}`` for the variants of :data:`CURVES`."""
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for p in plans:
        if p.variant.name not in CURVES:
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
        curves.setdefault(p.variant.name, {})[p.seed] = points
    return curves


def ablate(preset_name: str, seeds: int | list[int], out: str | Path, overrides: list[str] = (),
           **kw) -> dict[str, Any]:
    """``cmmc ablate``: the preset with overrides, ``seeds`` training seeds (0..N-1 or a list)."""
    base = preset(preset_name, list(overrides))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("--seeds must be at least 1")
    return run_ablation(base, seed_list, out, **kw)
