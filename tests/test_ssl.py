"""MoCo (momentum encoder, queue, contrast), the soft-label InfoNCE, split-BN and MoCoMethod."""
import math

import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.models import build_encoder
from cmmc_lib.ssl import (MoCo, MoCoMethod, SplitBatchNorm, concat_all_gather, contrast_stats,
                          rank, soft_info_nce, soft_targets, world_size)
from cmmc_lib.ssl.losses import mixed_targets


def tiny_moco(queue_size=6, momentum=0.9, temperature=0.1, split_bn=1, seed=0, layout="moco"):
    torch.manual_seed(seed)
    encoder = build_encoder("small3d", 3, width=4, proj_hidden=16, proj_dim=8)
    return MoCo(encoder, queue_size, momentum, temperature, split_bn, layout)


def clip_batch(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 2, 3, 4, 16, 16, generator=g)}


# --- soft labels and the loss -----------------------------------------------------------------

def test_soft_targets_put_lam_on_own_key_and_rest_on_partner():
    perm = torch.tensor([2, 0, 1])
    t = soft_targets(3, 10, offset=3, lam=0.7, perm=perm)
    assert t.shape == (3, 10)
    assert torch.allclose(t.sum(1), torch.ones(3))
    for i in range(3):
        assert t[i, 3 + i] == pytest.approx(0.7)
        assert t[i, 3 + int(perm[i])] == pytest.approx(0.3)
    per_sample = soft_targets(2, 4, 0, lam=torch.tensor([1.0, 0.25]), perm=torch.tensor([1, 0]))
    assert torch.allclose(per_sample, torch.tensor([[1.0, 0, 0, 0], [0.75, 0.25, 0, 0]]))


def test_soft_targets_with_self_partner_is_one_hot_and_lam_below_one_needs_perm():
    t = soft_targets(2, 5, 0, lam=0.4, perm=torch.tensor([0, 1]))
    assert torch.equal(t, F.one_hot(torch.arange(2), 5).float())
    with pytest.raises(ValueError, match="needs a partner"):
        soft_targets(2, 5, 0, lam=0.5)
    with pytest.raises(ValueError, match="do not fit"):
        soft_targets(4, 5, 2)


def test_soft_info_nce_equals_hand_computed_infonce():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.3, 1.5, 0.2, -0.4]])
    lam, perm = 0.6, [1, 0]

    def ce(row, col):                   # -log softmax by hand
        return -(row[col] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    by_hand = sum(lam * ce(rows[i], i) + (1 - lam) * ce(rows[i], perm[i]) for i in range(2)) / 2
    t = soft_targets(2, 4, 0, lam=lam, perm=torch.tensor(perm))
    assert soft_info_nce(logits, t).item() == pytest.approx(by_hand, rel=1e-6)
    # lam = 1 is MoCo's InfoNCE, i.e. cross-entropy with the own-key column as label
    hard = soft_info_nce(logits, soft_targets(2, 4, 0))
    assert hard.item() == pytest.approx((ce(rows[0], 0) + ce(rows[1], 1)) / 2, rel=1e-6)
    assert torch.allclose(hard, F.cross_entropy(logits, torch.arange(2)))


def test_contrast_stats_reads_accuracy_and_similarities():
    logits = torch.tensor([[5.0, 1.0, 0.0], [4.0, 2.0, 0.0]])          # tau = 0.5
    s = contrast_stats(logits, 0, temperature=0.5)                      # i-Mix's layout: own key at i
    assert s["acc"] == pytest.approx(0.5)                               # row 1's max is column 0
    assert s["pos_sim"] == pytest.approx((2.5 + 1.0) / 2)
    assert s["neg_sim"] == pytest.approx((0.5 + 0.0 + 2.0 + 0.0) / 4)
    moco_layout = torch.tensor([[5.0, float("-inf"), 0.0], [4.0, 2.0, 0.0]])   # own key in column 0
    s = contrast_stats(moco_layout, torch.zeros(2, dtype=torch.long), temperature=0.5)
    assert s["acc"] == 1.0 and s["neg_sim"] == pytest.approx((0.0 + 1.0 + 0.0) / 3)   # -inf: not a column


# --- distributed helpers (single process) -----------------------------------------------------

def test_distributed_helpers_are_no_ops_without_a_process_group():
    assert world_size() == 1 and rank() == 0
    t = torch.randn(3, 4, requires_grad=True)
    g = concat_all_gather(t)
    assert torch.equal(g, t.detach()) and not g.requires_grad


# --- MoCo -------------------------------------------------------------------------------------

def test_key_encoder_is_a_frozen_copy_and_queue_is_normalised():
    moco = tiny_moco(queue_size=7)
    for (n_q, p_q), (n_k, p_k) in zip(moco.encoder_q.named_parameters(), moco.encoder_k.named_parameters()):
        assert n_q == n_k and torch.equal(p_q, p_k) and p_q.requires_grad and not p_k.requires_grad
    assert moco.queue.shape == (7, 8)
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(7), atol=1e-5)
    assert int(moco.queue_ptr) == 0


def test_momentum_update_formula():
    moco = tiny_moco(momentum=0.9)
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(1.0)
    before_q = [p.clone() for p in moco.encoder_q.parameters()]
    before_k = [p.clone() for p in moco.encoder_k.parameters()]
    moco.momentum_update()
    for q, k_old, k_new in zip(before_q, before_k, moco.encoder_k.parameters()):
        assert torch.allclose(k_new, 0.9 * k_old + 0.1 * q, atol=1e-6)


def test_queue_ring_buffer_wraps_when_length_is_not_a_multiple_of_the_batch():
    moco = tiny_moco(queue_size=5)
    keys = [F.normalize(torch.randn(2, 8), dim=1) for _ in range(3)]
    moco.enqueue(keys[0])
    moco.enqueue(keys[1])
    assert int(moco.queue_ptr) == 4
    assert torch.equal(moco.queue[:4], torch.cat(keys[:2]))
    old_last_row = moco.queue[4].clone()
    moco.enqueue(keys[2])                      # row 4 gets keys[2][0], row 0 wraps to keys[2][1]
    assert int(moco.queue_ptr) == 1
    assert torch.equal(moco.queue[4], keys[2][0]) and not torch.equal(moco.queue[4], old_last_row)
    assert torch.equal(moco.queue[0], keys[2][1])
    assert torch.equal(moco.queue[1:4], torch.cat(keys[:2])[1:4])
    many = torch.randn(12, 8)                  # more keys than rows: the last 5 survive, in order
    moco.enqueue(many)
    ptr = int(moco.queue_ptr)
    assert ptr == (1 + 12) % 5
    assert torch.equal(torch.roll(moco.queue, -ptr, dims=0), many[-5:])


def test_contrast_layout_is_moco_s_own_key_then_queue_and_a_partner_column_when_mixed():
    moco = tiny_moco(queue_size=3, temperature=0.5)
    q = F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(torch.randn(4, 8), dim=1)
    c = moco.contrast(q, k)
    assert torch.equal(c.keys, k) and c.partner is None and c.own.tolist() == [0, 0, 0, 0]
    assert torch.allclose(c.logits, torch.cat([(q * k).sum(1, keepdim=True), q @ moco.queue.T], 1) / 0.5)
    perm = torch.tensor([1, 0, 2, 3])                                    # rows 2 and 3 are their own partners
    m = moco.contrast(q, k, perm)
    assert m.logits.shape == (4, 2 + 3) and m.partner.tolist() == [1, 1, 0, 0]
    assert torch.allclose(m.logits[:2, 1], (q[:2] * k[[1, 0]]).sum(1) / 0.5)
    assert torch.isinf(m.logits[2:, 1]).all()                            # no second copy of the own key
    t = mixed_targets(5, m.own, 0.7, m.partner)
    assert t[0].tolist() == pytest.approx([0.7, 0.3, 0, 0, 0]) and t[2].tolist() == [1, 0, 0, 0, 0]
    loss = soft_info_nce(m.logits, t)
    by_hand = sum(0.7 * F.cross_entropy(m.logits[i:i + 1], torch.tensor([0])) + 0.3 * F.cross_entropy(
        m.logits[i:i + 1], torch.tensor([1])) for i in range(2)) + sum(F.cross_entropy(
            m.logits[i:i + 1], torch.tensor([0])) for i in range(2, 4))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(by_hand.item() / 4, rel=1e-5)
    no_queue = tiny_moco(queue_size=0)
    assert no_queue.contrast(q, k).logits.shape == (4, 1)
    no_queue.enqueue(k)                        # Q = 0: nothing to store, no error
    with pytest.raises(ValueError, match="must both be"):
        moco.contrast(q, k[:3])


def test_the_batch_layout_puts_every_key_of_the_batch_in_a_column():
    moco = tiny_moco(queue_size=3, temperature=0.5, layout="batch")
    q = F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(torch.randn(4, 8), dim=1)
    c = moco.contrast(q, k, torch.tensor([1, 0, 3, 2]))
    assert c.own.tolist() == [0, 1, 2, 3] and c.partner.tolist() == [1, 0, 3, 2]
    assert torch.allclose(c.logits, q @ torch.cat([k, moco.queue]).T / 0.5)


def test_keys_follow_the_query_encoders_mode():
    moco = tiny_moco()
    x = clip_batch()["rgb"][:, 1]
    moco.eval()
    moco.encoder_k.train()
    k = moco.keys(x)
    assert not moco.encoder_k.training and not k.requires_grad
    assert torch.allclose(k, moco.encoder_q(x).detach(), atol=1e-6)   # same weights, eval mode
    moco.train()
    moco.keys(x)
    assert moco.encoder_k.training


# --- split-BN ---------------------------------------------------------------------------------

def test_split_batchnorm_normalises_each_group_with_its_own_statistics():
    torch.manual_seed(0)
    bn = SplitBatchNorm(3, num_splits=2, momentum=0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(6, 3, 4) * 3 + 1
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    y = bn(x)
    means, variances = [], []
    for g in range(2):                          # group g = samples 3g .. 3g+2, as one plain BN sees them
        plain = torch.nn.BatchNorm1d(3, momentum=0.5)
        plain.load_state_dict(before)
        assert torch.allclose(y[3 * g:3 * g + 3], plain(x[3 * g:3 * g + 3]), atol=1e-5)
        means.append(plain.running_mean)
        variances.append(plain.running_var)
    assert torch.allclose(bn.running_mean, (means[0] + means[1]) / 2, atol=1e-6)
    assert torch.allclose(bn.running_var, (variances[0] + variances[1]) / 2, atol=1e-5)
    bn.eval()
    plain = torch.nn.BatchNorm1d(3)
    plain.load_state_dict(bn.state_dict())
    assert torch.allclose(bn(x), plain.eval()(x))
    with pytest.raises(ValueError, match="not divisible"):
        bn.train()(torch.randn(5, 3, 4))


def test_moco_with_split_bn_normalises_both_encoders_in_groups_and_shuffles_the_keys():
    """One process emulating CoCLR's 2 GPUs x (B / 2) clips: shuffle-BN, for real, on one device."""
    moco = tiny_moco(split_bn=2).train()
    for encoder in (moco.encoder_q, moco.encoder_k):
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, SplitBatchNorm) and m.num_splits == 2 for m in norms)
    assert not any(p.requires_grad for p in moco.encoder_k.parameters())
    x = clip_batch(b=4)["rgb"][:, 1]
    torch.manual_seed(1)
    order = torch.randperm(4)
    assert set(order[:2].tolist()) not in ({0, 1}, {2, 3})          # the shuffle mixes the two groups
    torch.manual_seed(1)
    k = moco.keys(x)
    with torch.no_grad():                  # the key of clip i comes from the group the shuffle put it in
        expected = moco.encoder_k(x[order])[torch.argsort(order)]
        unshuffled = moco.encoder_k(x)
    assert torch.allclose(k, expected, atol=1e-5) and not torch.allclose(k, unshuffled, atol=1e-4)


# --- MoCoMethod ---------------------------------------------------------------------------------

def test_mocostep_gradient_reaches_query_encoder_only():
    step = MoCoMethod(tiny_moco(), "rgb").train()
    loss, stats = step.loss(clip_batch())
    loss.backward()
    assert all(p.grad is None for p in step.moco.encoder_k.parameters())
    assert all(p.grad is not None for p in step.moco.encoder_q.parameters())
    assert set(stats) == {"loss", "lam", "acc", "pos_sim", "neg_sim"} and stats["lam"] == 1.0
    assert step.learning
    assert stats["loss"] == pytest.approx(loss.item())


def test_mocostep_updates_queue_and_key_encoder_in_training_only():
    step = MoCoMethod(tiny_moco(queue_size=6, momentum=0.5), "rgb")
    with torch.no_grad():
        for p in step.moco.encoder_q.parameters():
            p.add_(0.1)
    k_before = [p.clone() for p in step.moco.encoder_k.parameters()]
    queue_before = step.moco.queue.clone()
    step.eval()
    step.loss(clip_batch())
    assert torch.equal(step.moco.queue, queue_before) and int(step.moco.queue_ptr) == 0
    assert all(torch.equal(a, b) for a, b in zip(k_before, step.moco.encoder_k.parameters()))
    step.train()
    step.loss(clip_batch())
    assert int(step.moco.queue_ptr) == 4 and not torch.equal(step.moco.queue[:4], queue_before[:4])
    assert not torch.equal(k_before[0], next(step.moco.encoder_k.parameters()))


def test_mocostep_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    step = MoCoMethod(tiny_moco(queue_size=0, momentum=0.9, layout="batch"), "rgb").train()  # batch keys: negatives
    optim = torch.optim.Adam([p for p in step.parameters() if p.requires_grad], lr=3e-3)
    batch = clip_batch(b=6)
    losses = []
    for _ in range(12):
        loss, _ = step.loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses


def test_mocostep_rejects_batches_without_two_views():
    step = MoCoMethod(tiny_moco(), "flow")
    with pytest.raises(ValueError, match="no 'flow' entry"):
        step.loss(clip_batch())
    with pytest.raises(ValueError, match="V>=2"):
        step.loss({"flow": torch.randn(4, 1, 2, 4, 16, 16)})


# --- two processes (gloo on CPU) --------------------------------------------------------------

def _contrast_on_rank(rank_, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank_, world_size=world)
    try:
        moco = tiny_moco(queue_size=5, temperature=0.5)      # same seed: same model on both ranks
        g = torch.Generator().manual_seed(100 + rank_)
        q = F.normalize(torch.randn(2, 8, generator=g), dim=1)
        k = F.normalize(torch.randn(2, 8, generator=g), dim=1)
        c = moco.contrast(q, k)
        moco.enqueue(c.keys)
        b = tiny_moco(queue_size=5, temperature=0.5, layout="batch").contrast(q, k)
        torch.save({"rank": rank(), "world": world_size(), "offset": int(b.own[0]), "logits": b.logits,
                    "moco_logits": c.logits,
                    "q": q, "k": k, "queue": moco.queue, "ptr": int(moco.queue_ptr)},
                   f"{out_dir}/rank{rank_}.pt")
    finally:
        dist.destroy_process_group()


def test_contrast_gathers_keys_across_two_ranks(tmp_path):
    torch.multiprocessing.spawn(_contrast_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    keys = torch.cat([r[0]["k"], r[1]["k"]])                # gathered in rank order
    for i in range(2):
        assert r[i]["rank"] == i and r[i]["world"] == 2 and r[i]["offset"] == 2 * i
        assert r[i]["logits"].shape == (2, 4 + 5) and r[i]["moco_logits"].shape == (2, 1 + 5)
        own = r[i]["logits"][torch.arange(2), r[i]["offset"] + torch.arange(2)]
        assert torch.allclose(own, (r[i]["q"] * r[i]["k"]).sum(1) / 0.5, atol=1e-6)
        assert torch.allclose(r[i]["moco_logits"][:, 0], own, atol=1e-6)   # the own key is column 0
        assert torch.equal(r[i]["queue"][:4], keys)        # both ranks' keys, same queue everywhere
        assert r[i]["ptr"] == 4


def _keys_on_rank(rank_, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank_, world_size=world)
    try:
        moco = tiny_moco().train()                                  # same seed: same networks on both ranks
        x = clip_batch(b=4, seed=10 + rank_)["rgb"][:, 0]           # this rank's 4 key clips
        torch.manual_seed(7)                                        # rank 0's draw is the shared permutation
        keys = moco.keys(x)
        torch.save({"x": x, "keys": keys}, f"{out_dir}/keys{rank_}.pt")
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_across_two_ranks_uses_other_ranks_statistics_and_restores_the_order(tmp_path):
    torch.multiprocessing.spawn(_keys_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"keys{r}.pt") for r in range(2)]
    x_all = torch.cat([g["x"] for g in got])
    encoder_k = tiny_moco().train().encoder_k
    torch.manual_seed(7)
    order = torch.randperm(8)
    with torch.no_grad():                  # each rank normalised the 4 clips the shared permutation gave it
        shuffled = torch.cat([encoder_k(x_all[order[r * 4:(r + 1) * 4]]) for r in range(2)])
        expected = shuffled[torch.argsort(order)]
        plain = torch.cat([encoder_k(g["x"]) for g in got])                 # no shuffle: own-rank statistics
    keys = torch.cat([g["keys"] for g in got])
    assert torch.allclose(keys, expected, atol=1e-5)                       # ... in the original order
    assert not torch.allclose(keys, plain, atol=1e-3)                      # the statistics did change
    with torch.no_grad():                                                   # without batch statistics the
        encoder_k.eval()                                                    # shuffle changes nothing
        assert torch.allclose(encoder_k(x_all[order])[torch.argsort(order)], encoder_k(x_all), atol=1e-5)


def test_moco_targets_are_the_targets_of_the_librarys_contrast_layout():
    from cmmc_lib.ssl import moco_targets
    from cmmc_lib.ssl.losses import mixed_targets
    moco = tiny_moco(queue_size=6).eval()
    q = torch.nn.functional.normalize(torch.randn(4, moco.dim), dim=1)
    perm = torch.tensor([1, 0, 2, 3])                           # rows 2 and 3 are their own partners
    c = moco.contrast(q, q.clone(), perm)
    expected = mixed_targets(c.logits.shape[1], c.own, 0.7, c.partner)
    torch.testing.assert_close(moco_targets(perm, 0.7, queue=6), expected)
    assert torch.isinf(c.logits[2:, 1]).all() and moco_targets(perm, 0.7, 6)[2:, 0].eq(1).all()
