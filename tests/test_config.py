"""Presets and key=value overrides."""
import dataclasses

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
    assert cfg.data.cache is False and cfg.ssl.layer_l is None and cfg.ssl.layer_k == (3,)
    assert preset("tiny", ["ssl.layer_k=1,3", "ssl.layer_l=2"]).ssl.layer_k == (1, 3)   # one drawn per step


@pytest.mark.parametrize("override, message", [
    ("nope=1", "unknown config key"), ("lr", "not key=value"), ("epochs=three", "cannot read"),
    ("ssl.method=simclr", "unknown method"), ("alpha=0", "alpha must be > 0"), ("batch_size=1", "batch_size"),
    ("seed=1.5", "cannot read"), ("partner=other", "partner"),
    ("lr=inf", "optim.lr must be a finite number"), ("lr=nan", "optim.lr must be a finite number"),
    ("cut_dims=xyz", "ssl.cut_dims='xyz' must be distinct letters from 'cthw'"),
    ("layer_k=99", r"ssl.layer_k=99 is not a block boundary .* small3d has 4 blocks, so choose 1..3"),
    ("layer_l=0", "ssl.layer_l=0 is not a block boundary"),
    ("modality=pose", "modality 'pose' is not available yet"),
    ("dataset=kinetics", "unknown dataset 'kinetics'"), ("split=4", "synthetic has splits 1..3"),
    ("momentum=1.5", r"ssl.momentum must lie in \[0, 1\]"), ("crop_scale=0.9,0.2", "crop_scale"),
    ("milestones=8,4", "milestones must be increasing"), ("split_bn=3", "not divisible by ssl.split_bn=3"),
    ("backbone=resnet", "unknown backbone 'resnet'"),
])
def test_bad_overrides_fail_with_one_clear_line(override, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", [override])


@pytest.mark.parametrize("method", ["coclr", "coclr-cmmc", "moco", "mixup"])
def test_training_both_networks_at_once_is_refused_for_methods_that_cannot(method):
    # CoCLR mines with a frozen network: w/o alternate training it has none (never silently ignored)
    with pytest.raises(ValueError, match=f"schedule.alternate=false .* not '{method}'"):
        preset("tiny", [f"ssl.method={method}", "schedule.alternate=false"])
    assert preset("tiny", ["ssl.method=cmmc", "schedule.alternate=false"]).schedule.alternate is False


def test_round_trip_through_json():
    cfg = preset("cpu", ["ssl.method=cmmc", "milestones=3", "ssl.source_run=runs/flow", "layer_k=1,2"])
    import json
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert set(PRESETS) == {"tiny", "cpu", "paper", "gates"}


def test_planned_names_are_known_but_refused_until_they_exist(monkeypatch):
    from cmmc_lib import registry
    monkeypatch.setitem(registry.METHODS, "coclr", dataclasses.replace(registry.METHODS["coclr"], available=False))
    with pytest.raises(ValueError, match="method 'coclr' is not available yet"):
        preset("tiny", ["ssl.method=coclr"])


def test_cross_modal_methods_need_a_source_network_outside_the_tiny_preset():
    with pytest.raises(ValueError, match="needs the frozen flow network: set ssl.source_run"):
        preset("cpu", ["ssl.method=cmmc"])
    assert preset("tiny", ["ssl.method=cmmc"]).ssl.source_run is None          # lessons on mechanics


def test_a_config_json_written_before_layer_lists_still_loads():
    old = preset("tiny").to_dict()
    old["ssl"]["layer_k"] = 2                                                  # an int, as saved before
    assert Config.from_dict(old).ssl.layer_k == (2,)


def test_cross_modal_methods_need_two_modalities():
    with pytest.raises(ValueError, match="ssl.other_modality must differ"):
        preset("tiny", ["ssl.method=cmmc", "ssl.other_modality=rgb"])
    assert preset("tiny", ["ssl.method=moco", "ssl.other_modality=rgb"]).ssl.method == "moco"   # unused there


def test_every_name_is_read_from_its_registry():
    from cmmc_lib.cli import build_parser
    from cmmc_lib.config import COURSE_PROFILES
    from cmmc_lib.registry import METHODS, available
    sub = build_parser()._subparsers._group_actions[0].choices
    pretrain = {a.dest: a for a in sub["pretrain"]._actions}
    assert list(pretrain["method"].choices) == list(available(METHODS)) and "coclr-cmmc" in pretrain["method"].choices
    assert list(pretrain["preset"].choices) == list(PRESETS)
    assert list({a.dest: a for a in sub["course"]._actions}["profile"].choices) == list(COURSE_PROFILES)
    assert COURSE_PROFILES == ("tiny", "cpu")
