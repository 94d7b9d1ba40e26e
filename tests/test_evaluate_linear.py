"""Linear probe on frozen features (and two-stream probability fusion) with known answers."""
import pytest
import torch

from cmmc_lib.evaluate import fuse_probabilities, linear_probe, topk_accuracy
from cmmc_lib.evaluate.linear import LinearProbe

FAST = dict(epochs=30, milestones=(18, 24), batch_size=64)


def clusters(num_classes, per_class, dim, seed, spread=0.3):
    """Gaussian clusters around random unit centres: linearly separable for small spread."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)), dim=1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    feats = 5 * centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def test_separable_clusters_are_classified_perfectly():
    xtr, ytr = clusters(6, 40, 16, seed=0)
    xte, yte = clusters(6, 20, 16, seed=1)
    r = linear_probe(xtr, ytr, xte, yte, num_classes=6, **FAST)
    assert r["top1"] == 1.0 and r["top5"] == 1.0 and r["train_top1"] == 1.0
    assert r["test_probs"].shape == (120, 6)
    torch.testing.assert_close(r["test_probs"].sum(1), torch.ones(120))
    assert torch.equal(r["confusion"], torch.diag(torch.full((6,), 20)))
    assert r["train_loss"][-1] < r["train_loss"][0]


def test_random_labels_give_chance_accuracy_on_test():
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(400, 32, generator=g), torch.randn(1000, 32, generator=g)
    ytr, yte = torch.randint(0, 10, (400,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    r = linear_probe(xtr, ytr, xte, yte, num_classes=10, **FAST)
    assert abs(r["top1"] - 0.1) < 0.05                                  # chance = 1/10
    assert r["train_top1"] > r["top1"] + 0.1                            # it memorises the train set


def test_same_seed_same_result_other_seed_other_result():
    xtr, ytr = clusters(4, 20, 8, seed=0, spread=3.0)                   # overlapping: not trivial
    xte, yte = clusters(4, 10, 8, seed=1, spread=3.0)
    a = linear_probe(xtr, ytr, xte, yte, 4, seed=3, **FAST)
    b = linear_probe(xtr, ytr, xte, yte, 4, seed=3, **FAST)
    c = linear_probe(xtr, ytr, xte, yte, 4, seed=4, **FAST)
    assert torch.equal(a["test_probs"], b["test_probs"])
    assert not torch.equal(a["test_probs"], c["test_probs"])


def test_features_are_l2_normalised_before_the_probe():
    # scaling a feature vector must not change anything: the probe sees its direction only
    xtr, ytr = clusters(3, 20, 8, seed=0, spread=2.0)
    xte, yte = clusters(3, 10, 8, seed=1, spread=2.0)
    scale = torch.rand(len(xtr), 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    a = linear_probe(xtr, ytr, xte, yte, 3, **FAST)
    b = linear_probe(xtr * scale, ytr, xte * 7, yte, 3, **FAST)
    torch.testing.assert_close(a["test_probs"], b["test_probs"], atol=1e-4, rtol=1e-4)


def test_probe_is_batchnorm_then_linear():
    probe = LinearProbe(5, 3)
    assert isinstance(probe.bn, torch.nn.BatchNorm1d) and probe.fc.weight.shape == (3, 5)


def test_bad_input_raises_clear_errors():
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match=r"train labels must lie in \[0, 2\)"):
        linear_probe(x, y + 5, x, y, num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="4-d but test features 5-d"):
        linear_probe(x, y, torch.randn(10, 5), y, num_classes=3, epochs=1)
    with pytest.raises(ValueError, match="test labels"):
        linear_probe(x, y, x, y[:5], num_classes=3, epochs=1)


# ----------------------------------------------------------------------------- two-stream fusion
def test_fused_probabilities_with_an_uninformative_stream_keep_the_informative_ones_accuracy():
    xtr, ytr = clusters(5, 30, 8, seed=0, spread=2.5)
    xte, yte = clusters(5, 30, 8, seed=1, spread=2.5)
    informative = linear_probe(xtr, ytr, xte, yte, 5, **FAST)
    uniform = torch.full_like(informative["test_probs"], 1 / 5)        # a stream that knows nothing
    fused = fuse_probabilities(informative["test_probs"], uniform)
    torch.testing.assert_close(fused.sum(1), torch.ones(len(yte)))
    assert topk_accuracy(fused, yte) >= informative["top1"]
    assert torch.equal(fused.argmax(1), informative["test_probs"].argmax(1))


def test_fused_probabilities_correct_a_confident_mistake_of_one_stream():
    p_rgb = torch.tensor([[0.6, 0.4], [0.9, 0.1]])
    p_flow = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    fused = fuse_probabilities(p_rgb, p_flow)
    torch.testing.assert_close(fused, torch.tensor([[0.35, 0.65], [0.85, 0.15]]))
    labels = torch.tensor([1, 0])
    assert topk_accuracy(p_rgb, labels) == 0.5 and topk_accuracy(fused, labels) == 1.0
    with pytest.raises(ValueError, match="equal in shape"):
        fuse_probabilities(p_rgb, torch.ones(3, 2))


def test_the_last_epoch_and_coclr_s_best_test_epoch_are_both_reported():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 2
    y_train, y_test = torch.arange(60) % 3, torch.arange(30) % 3
    x_train = centres[y_train] + torch.randn(60, 8, generator=g) * 1.5
    x_test = centres[y_test] + torch.randn(30, 8, generator=g) * 1.5
    kw = dict(lr=0.5, batch_size=16, milestones=(60, 80))
    r = linear_probe(x_train, y_train, x_test, y_test, 3, epochs=12, test_every=5, **kw)
    assert r["best_epoch"] in (5, 10, 12) and r["best_top1"] >= r["top1"]        # the last is scored too
    assert r["best_probs"].shape == (30, 3)
    # scoring the test set consumes no random numbers: the probe at epoch e is the e-epoch probe
    at = {e: linear_probe(x_train, y_train, x_test, y_test, 3, epochs=e, **kw)["top1"] for e in (5, 10, 12)}
    assert at[12] == r["top1"] and r["best_top1"] == max(at.values())
    assert r["best_epoch"] == max(e for e in at if at[e] == r["best_top1"])        # ties: the later epoch
