"""Datasets that skip what they cannot read: an unreadable item is logged once and the next
readable one is returned instead, so one corrupt file never stops a training run."""
from __future__ import annotations

import logging

log = logging.getLogger("cmmc_lib.data")


class SkipsUnreadable:
    """Mixin for a map-style dataset with ``_item(j)`` (may raise one of ``unreadable``),
    ``_skipped`` (a per-item flag array, shared with the loader's workers), ``_warned`` (a set)
    and ``_name(j)``; ``noun`` names an item in messages, ``_origin()`` where the items live."""

    unreadable: tuple[type[BaseException], ...] = (OSError,)
    noun = "item"

    def _name(self, j: int) -> str:
        raise NotImplementedError

    def _origin(self) -> str:
        raise NotImplementedError

    @property
    def num_skipped(self) -> int:
        """Distinct unreadable items met so far (in this process and its loader workers)."""
        return int(sum(self._skipped))

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} {self.noun}s")
        i %= n
        for step in range(n):
            j = (i + step) % n
            if self._skipped[j]:
                continue
            try:
                return self._item(j)
            except self.unreadable as e:
                self._skip(j, e)
        raise RuntimeError(f"no readable {self.noun} among the {n} of {self._origin()}")

    def _skip(self, j: int, err: BaseException) -> None:
        self._skipped[j] = 1
        if j not in self._warned:
            self._warned.add(j)
            log.warning("skipping unreadable %s %s: %s", self.noun, self._name(j), err)
