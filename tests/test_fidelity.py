"""docs/fidelity.md is the paper preset's fidelity table: every setting, its value, its source.
These tests keep the table and cmmc_lib/config.py in agreement."""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from cmmc_lib.config import SKELETON_SETTINGS, apply_overrides, preset
from cmmc_lib.ssl.factory import build_method
from cmmc_lib.ssl.moco import SplitBatchNorm

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_]+\.[a-z_0-9]+)` \| `(?P<value>[^`]*)` \| (?P<source>.+) \|$")


def table(heading: str) -> dict[str, tuple[str, str]]:
    """The rows of the table under ``## heading``: ``{key: (value, source)}``."""
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert all(rows), "a malformed row in " + heading
    keys = [m["key"] for m in rows]
    assert len(keys) == len(set(keys)), "a setting listed twice in " + heading
    return {m["key"]: (m["value"], m["source"].strip()) for m in rows}


def settings(cfg) -> dict[str, object]:
    return {f"{sec.name}.{f.name}": getattr(getattr(cfg, sec.name), f.name)
            for sec in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, sec.name))
            for f in dataclasses.fields(getattr(cfg, sec.name))}


def assert_rows_agree(rows: dict[str, tuple[str, str]], cfg) -> None:
    """Setting each row's value as an override changes nothing: the table holds the preset's values."""
    for key, (value, source) in rows.items():
        assert source, f"{key}: no source"
        again = apply_overrides(copy.deepcopy(cfg), [f"{key}={value}"])
        assert settings(again) == settings(cfg), f"docs/fidelity.md says {key}={value}; the preset has " \
                                                 f"{settings(cfg)[key]!r}"


def test_every_setting_of_the_paper_preset_has_a_row_with_its_value_and_source():
    rows, cfg = table("The paper preset"), preset("paper")
    assert set(rows) == set(settings(cfg))
    assert_rows_agree(rows, cfg)


def test_the_skeleton_face_table_is_the_presets_skeleton_settings():
    rows = table("The skeleton face of the paper preset (NTU-60, SkeletonCLR)")
    assert set(rows) == {item.split("=", 1)[0] for item in SKELETON_SETTINGS["paper"]}
    assert_rows_agree(rows, preset("paper", ["ssl.modality=joint"]))


def test_a_wrong_value_in_the_table_would_be_caught():
    cfg = preset("paper")
    with pytest.raises(AssertionError, match="data.blur=0.3"):
        assert_rows_agree({"data.blur": ("0.3", "CoCLR")}, cfg)


def test_a_one_device_paper_step_normalises_keys_in_two_shuffled_groups():
    # CoCLR's shuffle-BN ran on 2 GPUs x 32; on one device the paper preset emulates the two groups
    cfg = preset("paper", ["optim.batch_size=4", "data.clip_len=8", "data.size=32", "data.short_side=32",
                           "data.eval_crop=0", "ssl.queue_size=8"])
    assert cfg.ssl.split_bn == 2
    method = build_method(cfg).train()
    for encoder in (method.moco.encoder_q, method.moco.encoder_k):
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, SplitBatchNorm) and m.num_splits == 2 for m in norms)
    x = torch.randn(4, 3, 8, 32, 32)
    torch.manual_seed(1)
    order = torch.randperm(4)
    assert set(order[:2].tolist()) not in ({0, 1}, {2, 3})          # this draw mixes the two groups
    torch.manual_seed(1)
    k = method.moco.keys(x)
    with torch.no_grad():
        shuffled = method.moco.encoder_k(x[order])[torch.argsort(order)]
        unshuffled = method.moco.encoder_k(x)
    torch.testing.assert_close(k, shuffled, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(k, unshuffled, atol=1e-4)
