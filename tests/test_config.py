"""Presets and key=value overrides."""
import pytest

from cmmc_lib.config import Config, PRESETS, preset


def test_presets_scale_from_ci_to_paper():
    tiny, cpu, paper = (preset(n) for n in ("tiny", "cpu", "paper"))
    assert tiny.model.backbone == cpu.model.backbone == "small3d"
    assert paper.model.backbone == "s3d" and paper.data.clip_len == 32 and paper.data.size == 128
    assert paper.ssl.queue_size == 2048 and paper.ssl.momentum == 0.999 and paper.ssl.temperature == 0.07
    assert paper.optim.milestones == (250, 280) and paper.optim.epochs == 300 and paper.optim.batch_size == 64
    assert paper.model.proj_hidden == 1024 and paper.model.proj_dim == 128


def test_overrides_by_leaf_or_dotted_name_with_types():
    cfg = preset("tiny", ["lr=0.01", "ssl.method=cmmc", "milestones=5,8", "cache=false", "layer_l=none",
                          "ssl.layer_k=3"])
    assert cfg.optim.lr == 0.01 and cfg.ssl.method == "cmmc" and cfg.optim.milestones == (5, 8)
    assert cfg.data.cache is False and cfg.ssl.layer_l is None and cfg.ssl.layer_k == 3


@pytest.mark.parametrize("override, message", [
    ("nope=1", "unknown config key"), ("lr", "not key=value"), ("epochs=three", "cannot read"),
    ("ssl.method=simclr", "unknown method"), ("alpha=0", "alpha must be > 0"), ("batch_size=1", "batch_size"),
    ("seed=1.5", "cannot read"), ("partner=other", "partner"),
])
def test_bad_overrides_fail_with_one_clear_line(override, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", [override])


def test_round_trip_through_json():
    cfg = preset("cpu", ["ssl.method=cmmc", "milestones=3"])
    import json
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert set(PRESETS) == {"tiny", "cpu", "paper"}
