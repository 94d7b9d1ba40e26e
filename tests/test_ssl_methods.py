"""The method steps of the ablation: each is MoCo plus one mixing operation, checked against the
loss written out by hand."""
import pytest
import torch
import torch.nn.functional as F

from cmmc_lib import mixing
from cmmc_lib.config import preset
from cmmc_lib.ssl.factory import build_method

from cmmc_lib.registry import METHODS, available
from cmmc_lib.ssl.methods import draw_layer


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 2, 3, 8, 32, 32, generator=g), "flow": torch.randn(b, 2, 2, 8, 32, 32, generator=g),
            "source": torch.arange(b)}


@pytest.mark.parametrize("method", available(METHODS))
def test_every_method_trains_the_query_encoder_only(method):
    torch.manual_seed(0)
    step = build_method(preset("tiny", [f"ssl.method={method}"])).train()
    loss, stats = step(batch(), generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= stats["lam"] <= 1
    assert (stats["lam"] == 1.0) == (METHODS[method].mix is None)
    assert all(p.grad is None for p in step.moco.encoder_k.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in step.moco.encoder_q.parameters())
    frozen = getattr(step, "source", None) or getattr(step, "miner", None)   # CMMC's source, CoCLR's miner
    assert (frozen is not None) == METHODS[method].cross_modal
    if frozen is not None:
        assert all(p.grad is None for p in frozen.parameters())
        assert not frozen.training                       # the frozen network stays in eval mode


def test_every_method_names_a_mixing_function_and_a_known_source():
    for spec in METHODS.values():
        assert spec.mix is None or callable(getattr(mixing, spec.mix, None)), spec.name
        assert spec.source in (None, "backbone", "encoder") and spec.label and spec.colour


def test_cmmc_loss_is_lam_weighted_cross_entropy_of_own_and_partner_keys():
    torch.manual_seed(0)
    cfg = preset("tiny", ["ssl.method=cmmc", "ssl.layer_k=2", "ssl.queue_size=8"])
    step = build_method(cfg).eval()                      # eval: no momentum update, no enqueue
    b = batch(b=6)
    loss, stats = step.loss(b, generator=torch.Generator().manual_seed(7))

    enc, moco = step.moco.encoder_q, step.moco
    with torch.no_grad():
        h1 = enc.forward_until(b["rgb"][:, 0], 2)
        h2 = step.source.forward_until(b["flow"][:, 0], 2)
        mix = mixing.cross_modal_cutmix(h1, h2, cfg.ssl.alpha, cfg.ssl.cut_dims,
                                        generator=torch.Generator().manual_seed(7))
        q = enc.forward_from(mix.mixed, 2)
        k = moco.keys(b["rgb"][:, 1])
        by_hand = 0.0
        for i in range(6):          # MoCo's layout: [own key ; partner's key ; queue], as the poster's loss
            j = int(mix.perm[i])
            cols = [q[i] @ k[i]] + ([q[i] @ k[j]] if j != i else []) + list(q[i] @ moco.queue.T)
            row = torch.stack(cols)[None] / cfg.ssl.temperature
            own = F.cross_entropy(row, torch.tensor([0]))
            by_hand += own if j == i else mix.lam * own + (1 - mix.lam) * F.cross_entropy(row, torch.tensor([1]))
        by_hand /= 6
        assert not torch.equal(mix.perm, torch.arange(6))
    assert stats["lam"] == pytest.approx(mix.lam)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_the_batch_layout_makes_every_batch_key_a_negative_as_i_mix():
    torch.manual_seed(0)
    cfg = preset("tiny", ["ssl.method=cmmc", "ssl.queue_size=8", "ssl.contrast=batch"])
    step = build_method(cfg).eval()
    b = batch(b=6)
    loss, stats = step.loss(b, generator=torch.Generator().manual_seed(7))
    enc, moco = step.moco.encoder_q, step.moco
    with torch.no_grad():
        mix = mixing.cross_modal_cutmix(enc.forward_until(b["rgb"][:, 0], 2),
                                        step.source.forward_until(b["flow"][:, 0], 2), cfg.ssl.alpha,
                                        cfg.ssl.cut_dims, generator=torch.Generator().manual_seed(7))
        q = enc.forward_from(mix.mixed, 2)
        logits = q @ torch.cat([moco.keys(b["rgb"][:, 1]), moco.queue]).T / cfg.ssl.temperature
        by_hand = mix.lam * F.cross_entropy(logits, torch.arange(6)) + (1 - mix.lam) * F.cross_entropy(logits, mix.perm)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_same_video_partner_keeps_labels_unmixed():
    torch.manual_seed(0)
    step = build_method(preset("tiny", ["ssl.method=cmmc", "ssl.partner=same"])).eval()
    b = batch()
    loss, stats = step.loss(b, generator=torch.Generator().manual_seed(3))
    enc = step.moco.encoder_q
    with torch.no_grad():
        mix = mixing.cross_modal_cutmix(enc.forward_until(b["rgb"][:, 0], 2),
                                        step.source.forward_until(b["flow"][:, 0], 2),
                                        perm=torch.arange(4), generator=torch.Generator().manual_seed(3))
        q = enc.forward_from(mix.mixed, 2)
        k = step.moco.keys(b["rgb"][:, 1])
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ step.moco.queue.T], 1) / step.moco.temperature
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).item()
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-7) and stats["lam"] < 1


def test_layers_k_and_l_may_differ_and_bad_layers_are_named():
    step = build_method(preset("tiny", ["ssl.method=cmmc", "ssl.layer_k=1", "ssl.layer_l=2"]))
    loss, _ = step(batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="resample=True"):
        build_method(preset("tiny", ["ssl.method=cmmc", "layer_k=1", "layer_l=2", "resample=false"]))(
            batch(), generator=torch.Generator())
    with pytest.raises(ValueError, match=r"ssl.layer_k=4 .* choose 1..3"):
        build_method(preset("tiny", ["ssl.method=cmmc", "ssl.layer_k=4"]))
    with pytest.raises(ValueError, match="other_modality"):
        build_method(preset("tiny", ["ssl.method=cmmc", "ssl.other_modality=rgb"]))


def test_cross_modal_step_needs_the_other_modality_in_the_batch():
    step = build_method(preset("tiny", ["ssl.method=cm-mixup"]))
    with pytest.raises(ValueError, match="'flow' modality"):
        step({"rgb": batch()["rgb"]}, generator=torch.Generator())


def test_a_list_of_layers_is_drawn_per_step_from_the_steps_generator(monkeypatch):
    step = build_method(preset("tiny", ["ssl.method=cmmc", "ssl.layer_k=1,2,3"])).eval()
    cuts = []
    real = step.moco.encoder_q.forward_until
    monkeypatch.setattr(step.moco.encoder_q, "forward_until", lambda x, k: cuts.append(k) or real(x, k))
    for seed in range(24):
        step.loss(batch(), generator=torch.Generator().manual_seed(seed))
    # the layer is the step generator's first draw: the same seed cuts at the same block
    assert cuts == [draw_layer((1, 2, 3), torch.Generator().manual_seed(s)) for s in range(24)]
    assert set(cuts) == {1, 2, 3}
    assert draw_layer((2,), None) == 2                    # one layer: nothing drawn
