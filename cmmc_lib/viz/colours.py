"""One colour per method in every figure: the registry's (:attr:`cmmc_lib.registry.Method.colour`)."""
from __future__ import annotations

from ..registry import METHODS


def method_colour(method: str) -> str:
    """A method's colour in every figure (:attr:`cmmc_lib.registry.Method.colour`); grey for a name
    the registry does not know."""
    return METHODS[method].colour if method in METHODS else "tab:gray"
