"""What the evaluation protocols share: input checks, metrics, the step schedule, item clips."""
import pytest
import torch

from cmmc_lib.evaluate.common import (as_features, as_labels, check_class_labels, classification_summary,
                                      collate_list, confusion_matrix, item_clips, step_lr, topk_accuracy)


def test_metrics_of_three_predictions():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 5) == 1.0                      # k capped at K
    assert confusion_matrix(scores.argmax(1), labels, 3).tolist() == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]
    s = classification_summary(scores, labels, 3)
    assert s["top1"] == pytest.approx(1 / 3) and s["top5"] == 1.0
    assert torch.equal(s["confusion"], confusion_matrix(scores.argmax(1), labels, 3))


def test_step_lr_drops_tenfold_at_each_milestone():
    assert [step_lr(1.0, e, (60, 80)) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    assert step_lr(0.5, 10, ()) == 0.5                                  # no milestones: constant


def test_input_checks_convert_or_name_what_is_wrong():
    x = as_features([[1, 2], [3, 4]])
    assert x.dtype == torch.float32 and x.shape == (2, 2)
    with pytest.raises(ValueError, match=r"query features must be 2-D \(N, D\)"):
        as_features(torch.zeros(3), "query features")
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_features([[float("nan"), 0.0]])
    assert as_labels([0.0, 2.0], 2).dtype == torch.int64
    with pytest.raises(ValueError, match=r"gallery labels must have shape \(3,\)"):
        as_labels([0, 1], 3, "gallery labels")
    with pytest.raises(ValueError, match="integers"):
        as_labels([0.5, 1.0], 2)
    check_class_labels(torch.tensor([0, 2]), 3, "labels")
    with pytest.raises(ValueError, match=r"test labels must lie in \[0, 3\), got \[0, 3\]"):
        check_class_labels(torch.tensor([0, 3]), 3, "test labels")


def test_item_clips_gives_windows_first_and_collate_keeps_items():
    windows = torch.zeros(4, 3, 2, 8, 8)                                 # (W, C, T, H, W)
    assert item_clips({"rgb": windows}, "rgb").shape == (4, 3, 2, 8, 8)
    assert item_clips({"rgb": windows[0]}, "rgb").shape == (1, 3, 2, 8, 8)   # one clip: W = 1
    with pytest.raises(ValueError, match="no 'flow' entry"):
        item_clips({"rgb": windows}, "flow")
    with pytest.raises(ValueError, match=r"\(W, C, T, H, W\)"):
        item_clips({"rgb": torch.zeros(3, 8)}, "rgb")
    items = [{"rgb": windows, "label": 0}, {"rgb": windows[:1], "label": 1}]
    assert collate_list(items) is items
