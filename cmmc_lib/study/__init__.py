"""The gates: can the synthetic data show cross-modal learning at all?

Before CMMC can help an RGB network learn motion from flow, three things must hold on the data
(``cmmc study gates``, :func:`~cmmc_lib.study.gates.run_gates`):

* **G1, the supervised ceiling** (:func:`gate_supervised`): RGB *can* learn the motion: the same
  backbone trained with labels, from scratch, with the pre-training's augmentations, classifies
  the motion-only test clips (outside the class's scene) well above chance.
* **G2, the teacher** (:func:`gate_teacher`): flow MoCo learns the motion without labels
  (linear probe on the motion-only test clips).
* **G3, the gap** (:func:`gate_gap`): RGB MoCo at the same budget does *not* (its probe stays
  far below G1), so there is something for flow to teach.

:func:`premise_diagnostic` (reported, not a gate) asks how well flow features after each block
predict the clip's own RGB MoCo embedding, against a same-class clip's and a random clip's.
Every accuracy comes per test subset (all / scene / motion-only, :mod:`.subsets`) with its chance
level and binomial standard error, on the test split and on a transfer set (the same design
generated with an unseen data seed).
"""
from .gates import GOALS, gate_gap, gate_supervised, gate_teacher, premise_diagnostic, ssl_gate
from .run import run_gates, verdict
from .subsets import subset_accuracy, clip_subsets

__all__ = ["GOALS", "gate_gap", "gate_supervised", "gate_teacher", "premise_diagnostic", "run_gates",
           "ssl_gate", "verdict", "subset_accuracy", "clip_subsets"]
