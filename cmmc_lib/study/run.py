"""``cmmc study gates``: the gates for a preset and training seeds, resumable, one JSON row per
gate appended to ``<out>/gates.jsonl`` (command, commit, seeds, wall time, goal, verdict, result).

Run folders live under ``runs`` (``<runs>/<preset>-d<data seed>-s<seed>/{supervised-rgb,
moco-flow, moco-rgb}``): a finished one is reused (the MoCo runs through
:func:`cmmc_lib.train.train_or_load`, the supervised one by its weights file), so the same
command again only evaluates.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..config import preset
from ..files import append_jsonl
from ..provenance import source_commit
from .gates import (GOALS, PARTS, gate_gap, gate_supervised, gate_teacher, premise_diagnostic, prepare_data,
                    ssl_gate, transfer_overrides)

ROWS = "gates.jsonl"


def verdict(result: dict, where: str = "test") -> tuple[float | None, bool | None]:
    """The gated number of a gate's result on ``where`` (test / transfer) and whether it reaches
    :data:`GOALS`: G1 and G2 on the motion-only clips, G3 by its gap below G1 there."""
    gate = result["gate"]
    if gate not in GOALS:
        return None, None
    if gate == "g3":
        cell = result["gap"].get(where, {}).get("motion")
    else:
        cell = result.get(where, {}).get("motion")
    if cell is None:
        return None, None
    return cell["value"], cell["value"] >= GOALS[gate]


def run_gates(preset_name: str = "gates", seeds: Sequence[int] = (0,), overrides: Sequence[str] = (),
              out: str | Path = "docs/results/study", runs: str | Path = "runs/study", transfer_seed: int | None = 1234,
              parts: Sequence[str] = PARTS, progress: bool = True, command: str | None = None) -> dict:
    """The gates ``parts`` (of g1, g2, g3, premise; G3 needs G1's result and the premise both MoCo
    runs, so they run, or are reused, as needed) for each training seed. Returns ``{"rows": [...],
    "out": path of the JSONL}``; each row is also appended there as soon as its gate is done."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"unknown gate(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}")
    rows, path = [], Path(out) / ROWS
    bar = tqdm(total=len(seeds) * len(parts), desc="gates", unit="gate", disable=not progress)
    try:
        for seed in seeds:
            cfg = preset(preset_name, [*overrides, f"run.seed={seed}"])
            prepare_data(cfg.data)
            extra = transfer_overrides(cfg.data, transfer_seed)
            if extra is not None:
                prepare_data(_replace_data(cfg, extra))
            base = Path(runs) / f"{preset_name}-d{cfg.data.synthetic_seed}-s{seed}"
            for part, result, seconds in _seed_gates(cfg, base, parts, transfer_seed, progress, bar):
                row = _row(part, result, seconds, cfg, preset_name, seed, transfer_seed, overrides, command)
                append_jsonl(path, row)
                rows.append(row)
    finally:
        bar.close()
    return {"rows": rows, "out": str(path)}


def _replace_data(cfg, extra: dict):
    return dataclasses.replace(cfg.data, **extra)


def _seed_gates(cfg, base: Path, parts: Sequence[str], transfer_seed, progress: bool, bar):
    """Yield ``(part, result, seconds)`` for each asked part of one seed, in the order of :data:`PARTS`."""
    runs = {"g1": base / "supervised-rgb", "g2": base / "moco-flow", "g3": base / "moco-rgb"}
    done: dict[str, dict] = {}
    for part in PARTS:
        if part not in parts:
            continue
        bar.set_postfix(gate=part, seed=cfg.run.seed)
        t0 = time.perf_counter()
        if part == "g3" and "g1" not in done:
            done["g1"] = gate_supervised(cfg, runs["g1"], transfer_seed, progress=False)
        if part == "g1":
            done[part] = gate_supervised(cfg, runs["g1"], transfer_seed, progress=False)
        elif part == "g2":
            done[part] = gate_teacher(cfg, runs["g2"], transfer_seed, progress=False)
        elif part == "g3":
            done[part] = gate_gap(cfg, runs["g3"], done["g1"], transfer_seed, progress=False)
        else:
            done[part] = _premise(cfg, runs, done, transfer_seed)
        yield part, done[part], time.perf_counter() - t0
        bar.update(1)


def _premise(cfg, runs: dict, done: dict, transfer_seed) -> dict:
    """The premise diagnostic on both MoCo runs (trained, or reused, here when G2/G3 did not run)."""
    if "g2" not in done:
        gate_teacher(cfg, runs["g2"], None)
    if "g3" not in done:
        ssl_gate(cfg, "rgb", runs["g3"], None)
    return premise_diagnostic(cfg, runs["g2"], runs["g3"])


def _row(part: str, result: dict, seconds: float, cfg, preset_name: str, seed: int, transfer_seed,
         overrides: Sequence[str], command: str | None) -> dict:
    value, passed = verdict(result, "test")
    t_value, t_passed = verdict(result, "transfer")
    return {"gate": part, "preset": preset_name, "seed": seed, "data_seed": cfg.data.synthetic_seed,
            "transfer_seed": transfer_seed, "overrides": list(overrides), "command": command,
            "commit": source_commit(), "wall_s": round(seconds, 1), "goal": GOALS.get(part),
            "value": value, "pass": passed, "transfer_value": t_value, "transfer_pass": t_passed,
            "result": result}
