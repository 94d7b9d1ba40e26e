"""CoCLR: positives mined by the other modality, the multi-instance InfoNCE, and CoCLR + CMMC."""
import math

import pytest
import torch
import torch.nn.functional as F

from cmmc_lib.config import preset
from cmmc_lib.ssl.coclr import CoCLRMethod, mine_positives, multi_positive_nce
from cmmc_lib.ssl.factory import build_method


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_mining_takes_the_top_k_of_the_other_modality_and_every_sibling():
    # queue of 6 entries: embeddings by the frozen other network, and each entry's source video
    queue_other = unit([1, 0], [0.9, 0.1], [0, 1], [0.7, 0.7], [-1, 0], [1, 0.05])
    queue_source = torch.tensor([7, 3, 3, 4, 5, -1])          # entry 5 is an empty slot (-1)
    kf = unit([1, 0], [0, 1])                                   # two queries' key clips, other modality
    source = torch.tensor([3, 9])
    got = mine_positives(kf, queue_other, queue_source, source, topk=2)
    # query 0: siblings of source 3 (entries 1, 2) + top-2 of the others by similarity: 0 and 5
    # query 1: no sibling; top-2: entry 2 (0, 1) and entry 3 (0.7, 0.7)
    assert got.tolist() == [[True, True, True, False, False, True],
                            [False, False, True, True, False, False]]
    before_full = mine_positives(kf, queue_other, queue_source, source, topk=2, mine=False)
    assert before_full.tolist() == [[False, True, True, False, False, False], [False] * 6]


def hand_loss(logits, positive_sets):
    """-log( sum_{j in P} exp z_j / sum_j exp z_j ), row by row, averaged."""
    total = 0.0
    for z, pos in zip(logits.tolist(), positive_sets):
        total += -math.log(sum(math.exp(z[j]) for j in pos) / sum(math.exp(v) for v in z))
    return total / len(logits)


def test_the_multi_instance_nce_equals_a_hand_computation_for_one_and_several_positives():
    torch.manual_seed(0)
    logits = torch.randn(3, 7) * 3
    one = [[0], [1], [2]]                                           # K = 1: MoCo's InfoNCE
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, js in enumerate(one):
        mask[i, js] = True
    assert multi_positive_nce(logits, mask).item() == pytest.approx(hand_loss(logits, one), rel=1e-6)
    assert multi_positive_nce(logits, mask).item() == pytest.approx(F.cross_entropy(logits, torch.arange(3)).item())
    several = [[0, 4, 5], [1, 3], [2, 6, 4, 3]]
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, js in enumerate(several):
        mask[i, js] = True
    assert multi_positive_nce(logits, mask).item() == pytest.approx(hand_loss(logits, several), rel=1e-6)


def test_with_mixing_the_target_is_spread_over_both_positive_sets():
    torch.manual_seed(1)
    logits = torch.randn(2, 6)
    own = [[0, 4], [1]]
    partner = [[1], [0, 4, 5]]
    m_own, m_partner = torch.zeros(2, 6, dtype=torch.bool), torch.zeros(2, 6, dtype=torch.bool)
    for i in range(2):
        m_own[i, own[i]] = True
        m_partner[i, partner[i]] = True
    lam = 0.3
    expected = sum(lam * hand_loss(logits[i:i + 1], [own[i]]) + (1 - lam) * hand_loss(logits[i:i + 1], [partner[i]])
                   for i in range(2)) / 2
    assert multi_positive_nce(logits, m_own, lam, m_partner).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_nce(logits, torch.zeros(2, 6, dtype=torch.bool))


def test_the_own_key_leaves_the_positives_only_when_something_else_is_there():
    others = torch.tensor([[False, True, False, True],       # row 0: a sibling in the batch, a queue entry
                           [False, False, False, False]])    # row 1: nothing else
    own = torch.tensor([0, 1])
    kept = CoCLRMethod.positives(others, own, drop_own=False)
    dropped = CoCLRMethod.positives(others, own, drop_own=True)
    assert kept.tolist() == [[True, True, False, True], [False, True, False, False]]
    assert dropped.tolist() == [[False, True, False, True], [False, True, False, False]]


def batch(seed=0, sources=(0, 1, 1, 2)):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(4, 2, 3, 8, 32, 32, generator=g), "flow": torch.randn(4, 2, 2, 8, 32, 32, generator=g),
            "source": torch.tensor(sources)}


@pytest.mark.parametrize("method", ["coclr", "coclr-cmmc"])
def test_the_step_trains_the_query_only_and_keeps_its_three_queues_aligned(method):
    torch.manual_seed(0)
    step = build_method(preset("tiny", [f"ssl.method={method}", "ssl.queue_size=6"])).train()
    for it in range(3):                                             # 12 keys through a queue of 6: wraps
        loss, stats = step(batch(it, sources=(4 * it, 4 * it + 1, 4 * it + 2, 4 * it + 3)),
                           generator=torch.Generator().manual_seed(it))
        loss.backward()
    assert torch.isfinite(loss) and (stats["lam"] < 1) == (method == "coclr-cmmc")
    assert all(p.grad is None for p in step.miner.parameters()) and not step.miner.training
    assert all(p.grad is None for p in step.moco.encoder_k.parameters())
    # rows 0-3, then 4, 5, 0, 1, then 2-5: the sources wrap at the rows where MoCo wrote their keys
    assert step.queue_source.tolist() == [6, 7, 8, 9, 10, 11] and int(step.moco.queue_ptr) == 0
    assert int(step.queue_filled) == 6
    with torch.no_grad():                                           # queue_other holds the miner's view
        expected = step.miner(batch(2)["flow"][:, 1])
    assert torch.allclose(step.queue_other[2:6], expected, atol=1e-5)


def test_coclr_without_the_source_of_each_clip_is_refused():
    step = build_method(preset("tiny", ["ssl.method=coclr"]))
    b = batch()
    del b["source"]
    with pytest.raises(ValueError, match="source"):
        step(b, generator=torch.Generator())


def test_mining_is_monitored_against_the_class_rate_chance_gives():
    step = build_method(preset("tiny", ["ssl.method=coclr", "ssl.queue_size=6"]))
    step.queue_source.copy_(torch.tensor([1, 2, 3, 4, 5, 6]))
    step.queue_label.copy_(torch.tensor([0, 0, 1, 1, 2, 0]))
    queue_pos = torch.tensor([[True, True, True, False, False, False]])    # entry 0 is the query's sibling
    stats = step.mining_stats(queue_pos, source=torch.tensor([1]), labels=torch.tensor([0]), full=True)
    # mined (other sources): entries 1 (class 0) and 2 (class 1): 1 of 2 share the class;
    # chance: of the 5 other-source entries, 2 (entries 1, 5) are of class 0
    assert stats == pytest.approx({"mined_same_class": 0.5, "queue_same_class": 0.4})
    assert step.mining_stats(queue_pos, torch.tensor([1]), torch.tensor([0]), full=False) == {}


def test_mining_rates_reach_metrics_csv_once_the_queue_is_full(tiny_root, tmp_path):
    from cmmc_lib.runs import read_metrics
    from cmmc_lib.train import pretrain
    cfg = preset("tiny", ["ssl.method=coclr", "optim.epochs=1", "run.progress=false", "knn_every=0",
                          f"data.root={tiny_root}", "run.log_every=100"])     # one flush for the whole run
    pretrain(cfg, tmp_path / "coclr")
    steps = [r for r in read_metrics(tmp_path / "coclr") if r["kind"] == "step"]
    # queue 16, batch 8: full after 2 steps; the rates appear from then on, in the same flush
    assert [r["mined_same_class"] is not None for r in steps] == [False, False] + [True] * (len(steps) - 2)
    assert all(0 <= r["queue_same_class"] <= 1 for r in steps[2:])


def test_coclr_learns_nothing_until_its_queue_is_full_then_trains(tiny_root, tmp_path):
    """CoCLR's warm-up: the first steps fill the queue (forward only), the optimiser starts after."""
    from cmmc_lib.runs import read_metrics
    from cmmc_lib.ssl.factory import load_backbone
    from cmmc_lib.train import pretrain
    common = ["ssl.method=coclr", "run.progress=false", "knn_every=0", f"data.root={tiny_root}", "run.log_every=1"]
    pretrain(preset("tiny", common + ["run.max_steps=2"]), tmp_path / "warm")
    pretrain(preset("tiny", common + ["run.max_steps=3"]), tmp_path / "three")
    # queue 16, batch 8: steps 1 and 2 fill it without an update, step 3 is the first to learn
    assert [r["warmup"] for r in read_metrics(tmp_path / "three") if r["kind"] == "step"] == [1.0, 1.0, 0.0]
    warm, _ = load_backbone(tmp_path / "warm")
    three, _ = load_backbone(tmp_path / "three")
    weights = lambda net: [p for n, p in net.state_dict().items() if "running" not in n and "num_batches" not in n]
    fresh = pretrain(preset("tiny", common + ["run.max_steps=0"]), tmp_path / "fresh")
    zero, _ = load_backbone(tmp_path / "fresh")
    assert fresh["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(weights(warm), weights(zero)))        # two steps: no update
    assert not all(torch.equal(a, b) for a, b in zip(weights(three), weights(zero)))   # the third updates


def test_coclr_cmmc_spreads_its_target_over_the_partners_positive_set_in_moco_s_layout():
    torch.manual_seed(0)
    step = build_method(preset("tiny", ["ssl.method=coclr-cmmc", "ssl.queue_size=4", "ssl.self_mask=0"])).eval()
    step.queue_source.copy_(torch.tensor([10, 1, 11, 12]))           # entry 1 shares clip 1's source
    step.queue_filled.fill_(4)
    dim = step.moco.dim
    c = step.moco.contrast(torch.nn.functional.normalize(torch.randn(4, dim), dim=1),
                           torch.nn.functional.normalize(torch.randn(4, dim), dim=1), torch.tensor([1, 0, 3, 2]))
    queue_pos = torch.zeros(4, 4, dtype=torch.bool)
    queue_pos[1, 1] = True                                            # clip 1's sibling in the queue
    pos, partner = step.positive_sets(c, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), queue_pos,
                                      torch.tensor([1, 0, 3, 2]), drop_own=False)
    # columns: own key, partner's key, queue 0..3
    assert pos[0].tolist() == [True, False, False, False, False, False]
    assert pos[1].tolist() == [True, False, False, True, False, False]
    assert partner[0].tolist() == [False, True, False, True, False, False]   # clip 0's partner is clip 1
