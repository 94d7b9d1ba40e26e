"""Shared test set-up: headless plotting, few threads, and where the real-data fixtures live."""
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CMMC_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata (or $CMMC_REALDATA); tests using it are skipped when it is absent."""
    if not (REALDATA / "decoded_frames.csv").is_file():
        pytest.skip(f"real-data fixtures not found at {REALDATA} (set CMMC_REALDATA)")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    """The synthetic tiny set in data/synthetic/tiny (written once, then reused)."""
    from cmmc_lib.data.synthetic import write_synthetic_dataset
    root = REPO / "data" / "synthetic" / "tiny"
    write_synthetic_dataset(root, size="tiny", seed=0, progress=False)
    return root


@pytest.fixture
def one_thread():
    """torch on one thread for the test (timings and kernels that compare against a single-threaded
    reference), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
