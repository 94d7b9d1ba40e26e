"""What every dataset of the training loop shares: items seeded by (seed, epoch, index), an epoch
that DataLoader workers see, and unreadable items skipped.

* **Seeded items.** Item i of epoch e draws its random numbers from :meth:`SeededItems.item_rng`,
  ``numpy.random.default_rng([seed, e, i])``, never from global state or a worker id, so a run
  replays the same batches after a resume, with any number of loader workers.
* **The epoch** lives in shared memory: :meth:`~SeededItems.set_epoch` before iterating an epoch
  (with a DataLoader, before ``iter(loader)``) reaches persistent workers too.
* **Unreadable items** are logged once. In training the next readable one is returned instead
  (i + 1, i + 2, ... wrapping), so one corrupt file never stops a run; in evaluation nothing is
  substituted (a test set must not count one video twice): the item comes back as a *skipped
  marker*, ``{"skipped": True, "video", "index", "label"}``, which feature extraction leaves out
  and reports. ``num_skipped`` counts them across the loader's workers.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger("cmmc_lib.data")


class SeededItems(Dataset):
    """Base of a map-style dataset whose subclass defines ``_item(j)`` (which may raise one of
    ``unreadable``), ``_name(j)`` and ``_origin()``, and calls :meth:`_init_items` in its
    constructor; ``noun`` names an item in messages."""

    unreadable: tuple[type[BaseException], ...] = (OSError,)
    noun = "item"

    def _init_items(self, n: int, seed: int, substitute: bool = True) -> None:
        """``substitute``: an unreadable item is replaced by the next readable one (training), or
        returned as a skipped marker (evaluation)."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed, self.substitute = int(seed), substitute
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()     # seen by persistent workers
        self._skipped = torch.zeros(n, dtype=torch.uint8).share_memory_()
        self._warned: set[int] = set()

    def _item(self, j: int) -> dict:
        raise NotImplementedError

    def _name(self, j: int) -> str:
        raise NotImplementedError

    def _origin(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ epochs and randomness
    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random clips, crops and augmentations items are drawn from (call
        it before creating the DataLoader iterator of that epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch[0] = int(epoch)

    def item_rng(self, j: int) -> np.random.Generator:
        """The random numbers of item ``j`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, j])

    # ------------------------------------------------------------------ unreadable items
    @property
    def num_skipped(self) -> int:
        """Distinct unreadable items met so far (in this process and its loader workers)."""
        return int(sum(self._skipped))

    def skipped_items(self) -> list[str]:
        """The names of the unreadable items met so far (in this process and its loader workers)."""
        return [self._name(j) for j in range(len(self._skipped)) if self._skipped[j]]

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} {self.noun}s")
        i %= n
        if not self.substitute:
            if not self._skipped[i]:
                try:
                    return self._item(i)
                except self.unreadable as e:
                    self._skip(i, e)
            return self.skipped_marker(i)
        for step in range(n):
            j = (i + step) % n
            if self._skipped[j]:
                continue
            try:
                return self._item(j)
            except self.unreadable as e:
                self._skip(j, e)
        raise RuntimeError(f"no readable {self.noun} among the {n} of {self._origin()}")

    def skipped_marker(self, j: int) -> dict:
        """What evaluation gets for an unreadable item: its identity, no data."""
        labels = getattr(self, "labels", None)
        return {"skipped": True, "video": self._name(j), "index": j,
                "label": int(labels[j]) if labels is not None else -1}

    def _skip(self, j: int, err: BaseException) -> None:
        self._skipped[j] = 1
        if j not in self._warned:
            self._warned.add(j)
            log.warning("skipping unreadable %s %s: %s", self.noun, self._name(j), err)
