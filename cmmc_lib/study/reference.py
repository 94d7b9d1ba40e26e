"""The study's reference results as the repository ships them (``docs/results/study``, written by
``cmmc study ablate``), read back for the lessons: the table, the gates and where they came from."""
from __future__ import annotations

import json
from pathlib import Path

from ..ablation import TABLES, aggregate
from ..reference import provenance
from .ablate import TABLE, study_rows

#: where a checkout keeps the shipped results (absent from an installed wheel)
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "results" / "study"


def load_reference(out: str | Path = REFERENCE) -> dict | None:
    """``{"run": run.json, "rows": the study table (:func:`cmmc_lib.ablation.aggregate`), "gates":
    gate rows, "chance": chance levels, "provenance": one line}`` of the study under ``out``, or
    None when it holds none (an installed package, or before the study ran)."""
    out = Path(out)
    run_file = out / "ablation" / "run.json"
    if not run_file.is_file():
        return None
    run = json.loads(run_file.read_text())
    records, gates = study_rows(out, run["seeds"], run["preset"], run["overrides"], run["transfer_seed"])
    return {"run": run, "rows": aggregate(records, TABLES[TABLE]), "gates": gates, "chance": run["chance"],
            "provenance": provenance(run)}


def load_reference_curves(out: str | Path = REFERENCE) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """The study's ``ablation/curves.json`` as :func:`cmmc_lib.ablation.epoch_curves` returns it
    (``{variant: {seed: [(epoch, kNN R@1), ...]}}``); empty when absent."""
    path = Path(out) / "ablation" / "curves.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {name: {int(seed): [tuple(p) for p in points] for seed, points in by_seed.items()}
            for name, by_seed in raw.items()}
