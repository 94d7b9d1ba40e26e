"""Fine-tuning a whole (tiny) network, its optimiser groups, dropout and the 10-crop test."""
import pytest
import torch

from _eval_fixtures import ChannelMeanBackbone, TinyConvBackbone, bright_dark_dataset
from cmmc_lib.evaluate import finetune
from cmmc_lib.evaluate.finetune import ClipClassifier, finetune_optimizer, predict_probabilities


def test_learns_a_trivially_separable_task_and_leaves_the_callers_backbone_alone():
    torch.manual_seed(0)
    backbone = TinyConvBackbone(3, width=8)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train = bright_dark_dataset(24, windows=1, seed=0)
    test = bright_dark_dataset(10, windows=3, seed=1)
    r = finetune(backbone, train, test, "rgb", num_classes=2, epochs=6, lr=1e-2, batch_size=8,
                 dropout=0.5, seed=0)
    assert r["top1"] == 1.0
    assert r["test_probs"].shape == (10, 2) and torch.equal(r["confusion"], torch.tensor([[5, 0], [0, 5]]))
    assert r["train_loss"][-1] < r["train_loss"][0] and len(r["train_top1"]) == 6
    assert train.epochs_seen == list(range(6))                          # set_epoch called each epoch
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(r["model"].backbone.conv.weight, backbone.conv.weight)   # it trained a copy


def test_deterministic_given_seed():
    train, test = bright_dark_dataset(12, 1, seed=0, noise=2.0), bright_dark_dataset(6, 2, seed=1, noise=2.0)
    net = TinyConvBackbone(3, 4)
    a, b, c = (finetune(net, train, test, "rgb", 2, epochs=2, batch_size=4, seed=s) for s in (5, 5, 6))
    assert torch.equal(a["test_probs"], b["test_probs"]) and a["train_loss"] == b["train_loss"]
    assert not torch.equal(a["test_probs"], c["test_probs"])


def test_backbone_learns_at_a_tenth_of_the_head_rate_and_dropout_is_0_9():
    model = ClipClassifier(ChannelMeanBackbone(3), num_classes=4)
    assert model.dropout.p == 0.9 and model.fc.in_features == 3
    opt = finetune_optimizer(model, lr=1e-3)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    # what finetune reports: the head at lr, the backbone at lr / head_lr_ratio
    train, test = bright_dark_dataset(4, 1, seed=0), bright_dark_dataset(2, 1, seed=1)
    r = finetune(ChannelMeanBackbone(3), train, test, "rgb", 2, epochs=1, lr=0.5, head_lr_ratio=5)
    assert r["lr_backbone"] == pytest.approx(0.1) and r["lr_head"] == 0.5
    with pytest.raises(ValueError, match="feat_dim"):
        ClipClassifier(torch.nn.Conv3d(3, 3, 1), 2)


def test_the_test_probability_averages_every_clip_of_an_item():
    # a "model" that returns logits from the mean intensity: the probability of a video is the mean
    # of the softmaxes of its clips (windows, or ten crops of each), and constant clips all agree
    class Logit(torch.nn.Module):
        feat_dim = 1

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3, 4))
            return torch.stack([-m, m], 1)

    test = bright_dark_dataset(4, windows=2, seed=3, size=10, noise=0.0)
    many = bright_dark_dataset(4, windows=20, seed=3, size=10, noise=0.0)     # 2 windows x 10 crops
    p20, labels, videos, skipped = predict_probabilities(Logit(), many, "rgb")
    p2, *_ = predict_probabilities(Logit(), test, "rgb")
    torch.testing.assert_close(p20, p2)
    assert labels.tolist() == [0, 1, 0, 1] and (p20.argmax(1) == labels).all() and skipped == [] and len(videos) == 4


def test_fine_tuning_trains_on_coclr_s_transform_and_tests_on_ten_crops(tiny_root):
    from cmmc_lib.config import preset
    from cmmc_lib.evaluate.runner import Stream, finetune_data
    cfg = preset("tiny", [f"data.root={tiny_root}", "eval.ten_crop=true", "data.eval_crop=28"])
    train, test = finetune_data(Stream("run", cfg, None, "ckpt"))
    assert train.aug.jitter_p == 0.3 and train.aug.grey_p == 0 and train.aug.blur_p == 0
    assert train.aug.view_mode == "symmetric" and train.num_views == 1
    item = test[0]
    assert test.eval_crops == 10 and item["rgb"].shape[0] == cfg.data.eval_windows * 10
    assert finetune_data(Stream("run", cfg, None, "ckpt"), ten_crop=False)[1][0]["rgb"].shape[0] == 4
