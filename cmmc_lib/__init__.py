"""cmmc_lib: Cross-modal Manifold Cutmix for self-supervised video representation learning.

Layers (one direction of dependency): ``mixing`` (pure tensor maths) -> ``data`` / ``models``
-> ``ssl`` -> ``train`` / ``evaluate``; ``viz`` draws, ``config`` holds presets, ``cli`` is the
``cmmc`` command.
"""
__version__ = "0.1.0"
