"""The study's results as text for the terminal: the gates' table and the study's summary."""
from __future__ import annotations

from pathlib import Path

from .gates import GOALS

#: the goal of each line of the gates table: G1, G2, and the gap by G3's goal
GOALS_BY_NAME = {"g1": GOALS["g1"], "g2": GOALS["g2"], "gap": GOALS["g3"]}


def cell_text(cell: dict | None) -> str:
    """``value +- SE``; where the binomial SE vanishes (every clip right, or none) the count instead,
    as ``0.000 (0 of 200)``: a spread of 0.000 would claim a certainty a finite test set lacks."""
    if cell is None:
        return "-"
    if round(cell["se"], 3) == 0 and cell.get("n"):
        return f"{cell['value']:.3f} ({round(cell['value'] * cell['n'])} of {cell['n']})"
    return f"{cell['value']:.3f} +- {cell['se']:.3f}"


def gates_text(rows: list[dict]) -> str:
    """One line per gate, seed and set: motion-only / scene / all (value +- SE), chance, goal, verdict."""
    lines = [f"{'gate':8} {'seed':>4} {'set':9} {'motion-only':>15} {'scene':>15} {'all':>15} {'chance':>6} "
             f"{'goal':>7} verdict"]
    for row in rows:
        res = row["result"]
        if row["gate"] == "premise":
            for name, b in res["blocks"].items():
                lines.append(f"premise  {row['seed']:>4} {name:9} cos own {b['own']:.3f}, same class "
                             f"{b['same_class']:.3f}, random {b['random']:.3f}, own R@1 {b['own_r1']:.3f}")
            continue
        for where in ("test", "transfer"):
            if where not in res:
                continue
            cells = res["gap"].get(where, {}) if row["gate"] == "g3" else res[where]
            name = "g3 gap" if row["gate"] == "g3" else row["gate"]
            chance = res[where]["all"]["chance"]
            value, passed = (row["value"], row["pass"]) if where == "test" else (row["transfer_value"],
                                                                                  row["transfer_pass"])
            verdict = "-" if passed is None else ("PASS" if passed else "FAIL")
            lines.append(f"{name:8} {row['seed']:>4} {where:9} {cell_text(cells.get('motion')):>15} "
                         f"{cell_text(cells.get('scene')):>15} {cell_text(cells.get('all')):>15} {chance:>6.2f} "
                         f"{'>= ' + format(row['goal'], '.2f'):>7} {verdict}")
            if row["gate"] == "g3":
                lines.append(f"{'g3 rgb':8} {row['seed']:>4} {where:9} {cell_text(res[where]['motion']):>15} "
                             f"{cell_text(res[where]['scene']):>15} {cell_text(res[where]['all']):>15} {chance:>6.2f}")
    return "\n".join(lines)


def study_text(r: dict) -> str:
    """``cmmc study ablate``'s summary: the gates of its seeds, the study table and the paired
    differences (the markdown file), and where the files are."""
    parts = [gates_text(r["gates"])]
    md = r["files"].get("markdown")
    if md and Path(md).is_file():
        parts.append(Path(md).read_text().rstrip())
    if r.get("unfinished"):
        parts.append(f"not finished (run.max_steps): {r['unfinished']}")
    parts.append(f"{len(r['gates'])} gate rows; {r['seconds'] / 60:.1f} min; files: "
                 + ", ".join(f"{k} {v}" for k, v in r["files"].items()))
    return "\n\n".join(parts)


GATE_NAMES = {"g1": "G1 supervised RGB", "g2": "G2 flow MoCo", "g3": "G3 RGB MoCo", "gap": "G1 - G3 gap"}


def gates_markdown(rows: list[dict]) -> str:
    """The gates of ``rows`` (``gates.jsonl`` rows, one per gate and seed) as markdown: one line
    per gate, each seed's motion-only accuracy ± its binomial SE on the test split and the
    transfer set, the mean over seeds ± their std, the goal and how many seeds reach it; then the
    premise diagnostic's mean cosines per block."""
    by_gate: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_gate.setdefault(row["gate"], {})[row["seed"]] = row
    seeds = sorted({row["seed"] for row in rows})
    head = ["gate", "set"] + [f"seed {s}" for s in seeds] + ["mean ± std", "goal", "seeds passing"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gate in ("g1", "g2", "g3", "gap"):
        source = by_gate.get("g3" if gate == "gap" else gate, {})
        for where in ("test", "transfer"):
            cells = {s: _gate_cell(source[s]["result"], gate, where) for s in seeds if s in source}
            cells = {s: c for s, c in cells.items() if c is not None}
            if not cells:
                continue
            values = [c["value"] for c in cells.values()]
            goal = GOALS_BY_NAME.get(gate)
            passing = "-" if goal is None else f"{sum(v >= goal for v in values)} of {len(values)}"
            lines.append("| " + " | ".join([GATE_NAMES[gate], where]
                                           + [cell_text(cells.get(s)) for s in seeds]
                                           + [_mean_std(values), "-" if goal is None else f">= {goal:.2f}",
                                              passing]) + " |")
    notes = ["Top-1 on the motion-only test clips (no scene to read the class from) ± one run's binomial SE; "
             "the gap's SE combines G1's and G3's. Chance: "
             + ", ".join(sorted({f"{_chance(r):.2f}" for r in rows if _chance(r) is not None})) + "."]
    premise = by_gate.get("premise", {})
    if premise:
        blocks = sorted({b for r in premise.values() for b in r["result"]["blocks"]})
        notes.append("Premise (mean over seeds of the cosine between the flow-predicted RGB key and the clip's own / "
                     "a same-class clip's / a random clip's key): " + "; ".join(
                         f"{b} " + " / ".join(f"{_mean([r['result']['blocks'][b][k] for r in premise.values()]):.3f}"
                                              for k in ("own", "same_class", "random")) for b in blocks) + ".")
    return "\n".join(lines + [""] + notes) + "\n"


def _gate_cell(result: dict, gate: str, where: str) -> dict | None:
    if gate == "gap":
        return (result.get("gap", {}).get(where) or {}).get("motion")
    return (result.get(where) or {}).get("motion")


def _chance(row: dict) -> float | None:
    cell = (row["result"].get("test") or {}).get("all")
    return None if cell is None else cell["chance"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f} (one seed)"
    m = _mean(values)
    std = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{m:.3f} ± {std:.3f}" if round(std, 3) > 0 else f"{m:.3f} ± <0.001"


#: the premise's wording: cosines closer than this are read as equal
EQUAL_COSINE = 0.02


def premise_lines(rows: list[dict]) -> list[str]:
    """The premise diagnostic of ``rows`` (gate rows, any seeds) in words, one line per block: the
    mean over seeds of the cosine of the flow-predicted RGB key with the clip's own key, a
    same-class clip's and a random clip's, the own-key R@1, and what the order says (cosines
    closer than :data:`EQUAL_COSINE` read as equal; the rule is printed with the lines)."""
    rows = [r for r in rows if r["gate"] == "premise"]
    if not rows:
        return ["no premise diagnostic in these rows"]
    lines = []
    for block in sorted({b for r in rows for b in r["result"]["blocks"]}):
        values = {k: _mean([r["result"]["blocks"][block][k] for r in rows if block in r["result"]["blocks"]])
                  for k in ("own", "same_class", "random", "own_r1")}
        gap_class = values["own"] - values["same_class"]
        gap_random = values["same_class"] - values["random"]
        reading = ("clip-specific: the own key is closer than a same-class one" if gap_class > EQUAL_COSINE else
                   "class-level only: a same-class clip's key is as close as the own" if gap_random > EQUAL_COSINE else
                   "no better than a random clip's key")
        lines.append(f"{block}: cosine own {values['own']:.3f}, same class {values['same_class']:.3f}, random "
                     f"{values['random']:.3f}; own key nearest {values['own_r1']:.3f} of the time "
                     f"({len(rows)} seed(s)): {reading}")
    return lines + [f"(cosines within {EQUAL_COSINE} of each other are read as equal)"]
