"""Everything between a file on disk and an aligned multimodal clip.

``splits`` (UCF101 / HMDB51 / NTU-60 split files, labels 0-based), ``video`` (PyAV decoding,
probing, encoding, clip windows), ``rawframes`` (the TSN flow/RGB JPEG layout; optical flow
itself is computed and extracted by :mod:`cmmc_lib.flow`), ``skeleton`` (NTU skeletons),
``pose`` (2-D pose as heatmap volumes), ``transforms`` (one random view shared by RGB, flow and
pose), ``render`` (the synthetic stick-figure renderer), ``synthetic`` (the generated default
dataset's writer), ``datasets`` (``build_dataset``), ``check`` (``cmmc data check``). The
layout of a dataset root is in ``data/README.md``.

Submodules are imported on use (``from cmmc_lib.data.datasets import build_dataset``) so that
importing the package stays light.
"""
