"""The run folder: config, checkpoints, metrics.csv, eval.jsonl, and loading nothing that runs code."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmmc_lib.config import preset
from cmmc_lib.files import UnsafeFileError, atomic_write, load_state, save_state
from cmmc_lib.runs import RunFolder
from cmmc_lib.ssl.factory import load_backbone
from cmmc_lib.train import pretrain

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """What an attacker pickles into a checkpoint: loading it with weights_only=False runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_payload(path: Path, marker: Path) -> None:
    """A *valid* checkpoint (every entry of the real one kept) carrying the payload beside them."""
    state = torch.load(path, weights_only=True) if path.is_file() else {"backbone": {}, "config": {}}
    state["extra"] = Payload(marker)
    torch.save(state, path)


def cmmc(*args):
    return subprocess.run([sys.executable, "-m", "cmmc_lib.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-1500:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cmmc: error:") and "Traceback" not in proc.stderr
    return last


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory):
    """A finished tiny flow MoCo run (1 epoch, a step checkpoint every 2 steps)."""
    run_dir = tmp_path_factory.mktemp("runs") / "flow"
    cfg = preset("tiny", [f"data.root={tiny_root}", "run.progress=false", "knn_every=0", "optim.epochs=1",
                          "ssl.modality=flow", "run.ckpt_every=2", "run.keep_ckpts=5"])
    pretrain(cfg, run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


# ----------------------------------------------------------------------------- plain files
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_text("old")

    def broken(tmp):
        assert tmp.suffix == ".mp4" and tmp.name.startswith(".")   # encoders go by the suffix
        tmp.write_text("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_state_files_hold_plain_data_and_payloads_are_refused(tmp_path):
    save_state({"w": torch.ones(2), "meta": {"step": 3, "names": ["a", "b"], "scale": (0.3, 1.0)}},
               tmp_path / "ok.pt")
    back = load_state(tmp_path / "ok.pt")
    assert torch.equal(back["w"], torch.ones(2)) and back["meta"]["scale"] == (0.3, 1.0)
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*evil\.pt.*posix\.system"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable torch file"):
        load_state(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------- the folder
def test_run_folder_holds_config_checkpoints_and_metrics(run_copy):
    run = RunFolder(run_copy)
    assert run.exists() and run.is_finished()
    assert run.read_config().ssl.modality == "flow"
    assert [p.name for p in run.step_checkpoints()] == ["step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    ckpt = run.load_checkpoint()
    assert ckpt["format"] == "cmmc-checkpoint-1" and ckpt["step"] == 6 and ckpt["epoch"] == 1
    assert "scheduler" not in ckpt                     # the lr comes from lr_at(epoch): nothing to store
    backbone, cfg = load_backbone(run)
    assert not backbone.training and cfg.ssl.modality == "flow"
    rows = run.metrics.read()
    assert [r["step"] for r in rows if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    run.append_eval({"protocol": "retrieval", "R@1": 0.5})
    assert run.read_evals()[-1]["R@1"] == 0.5


def test_step_checkpoints_are_pruned_to_keep(tmp_path):
    run = RunFolder(tmp_path / "r")
    for step in range(1, 6):
        run.save_checkpoint({"step": step}, step=step, keep=2)
    assert [p.name for p in run.step_checkpoints()] == ["step_0000004.pt", "step_0000005.pt"]
    assert run.load_checkpoint(needs=("step",))["step"] == 5


def test_a_malformed_config_or_a_foreign_checkpoint_is_named_in_one_line(run_copy):
    run = RunFolder(run_copy)
    save_state({"weights": torch.zeros(3)}, run.checkpoint_path())
    with pytest.raises(ValueError, match=r"last\.pt is not a cmmc training checkpoint: it has no 'config', "
                                         r"'backbone' \(it holds: weights\)"):
        load_backbone(run)
    for text, why in [("{not json", "Expecting property name"), ("[1, 2]", "JSON list, not an object"),
                      ('{"ssl": [1]}', "malformed"), ('{"ssl": {"nope": 1}}', "unknown config key")]:
        run.config_path.write_text(text)
        with pytest.raises(ValueError, match=rf"config\.json is malformed: .*{why}|{why}"):
            run.read_config()
    proc = cmmc("eval", "retrieval", "--run", run_copy)
    assert "config.json is malformed" in one_line_error(proc)


def test_metrics_rows_survive_a_reordered_header_and_an_added_column(tmp_path):
    run = RunFolder(tmp_path)
    with open(run.metrics.path, "w", newline="") as f:                # written by another version
        w = csv.writer(f)
        w.writerow(["step", "kind", "epoch", "loss", "note"])
        w.writerows([[1, "step", 0, 2.5, "warm-up"], [2, "step", 0, 2.4, ""], [2, "epoch", 0, 2.45, ""],
                      [3, "step", 1, 2.3, "kept?"]])
    run.metrics.truncate_after(step=2, epoch=1)
    rows = run.metrics.read()
    assert [(r["kind"], r["step"], r["note"]) for r in rows] == [("step", 1, "warm-up"), ("step", 2, ""),
                                                                 ("epoch", 2, "")]
    run.metrics.write({"kind": "step", "epoch": 1, "step": 3, "loss": 2.2, "lr": 0.1})
    rows = run.metrics.read()
    assert rows[-1]["loss"] == 2.2 and rows[-1]["lr"] == 0.1 and rows[0]["note"] == "warm-up"
    with open(run.metrics.path, "a", newline="") as f:
        csv.writer(f).writerow(["x", "step", 1, "lots", "", "", "", "", "", "", "", "", ""])
    with pytest.raises(ValueError, match=r"metrics\.csv line 6: column 'step' holds 'x', not a number"):
        run.metrics.read()


# ----------------------------------------------------------------------------- nothing runs code
def test_a_payload_in_last_pt_is_refused_by_eval_and_by_resume(run_copy, tmp_path):
    marker = tmp_path / "pwned"
    plant_payload(RunFolder(run_copy).checkpoint_path(), marker)
    config_before = (run_copy / "config.json").read_bytes()
    assert "refusing to load" in one_line_error(cmmc("eval", "retrieval", "--run", run_copy))
    assert "refusing to load" in one_line_error(cmmc("pretrain", "--resume", "--run-dir", run_copy))
    assert not marker.exists()
    assert (run_copy / "config.json").read_bytes() == config_before     # a failed resume writes nothing


def test_a_payload_as_the_cmmc_source_or_passed_with_checkpoint_is_refused(run_copy, tiny_root, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    shutil.copy(RunFolder(run_copy).checkpoint_path(), evil)
    plant_payload(evil, marker)
    line = one_line_error(cmmc("eval", "retrieval", "--run", run_copy, "--checkpoint", evil))
    assert "refusing to load" in line and "evil.pt" in line
    plant_payload(RunFolder(run_copy).checkpoint_path(), marker)
    line = one_line_error(cmmc("pretrain", "--preset", "tiny", "--method", "cmmc", f"data.root={tiny_root}",
                               f"ssl.source_run={run_copy}", "--run-dir", tmp_path / "cmmc", "run.max_steps=1"))
    assert "refusing to load" in line and "last.pt" in line
    assert not marker.exists()


# ----------------------------------------------------------------------------- torn files, one writer
def test_a_torn_metrics_row_is_never_read_and_never_kept(tmp_path, caplog):
    run = RunFolder(tmp_path / "r")
    for step in (1, 2, 3):
        run.metrics.write({"kind": "step", "epoch": 0, "step": step, "loss": 1.0 / step})
    data = run.metrics.path.read_bytes()
    run.metrics.path.write_bytes(data[:-9])                       # killed half-way through row 3
    assert [r["step"] for r in run.metrics.read()] == [1, 2] and "torn last row" in caplog.text
    run.metrics.write({"kind": "step", "epoch": 0, "step": 3, "loss": 0.5})
    assert [(r["step"], r["loss"]) for r in run.metrics.read()] == [(1, 1.0), (2, 0.5), (3, 0.5)]
    assert run.metrics.path.read_bytes().count(b"\n") == 4        # header + 3 rows: no junk row


def test_a_run_folder_has_one_writer_and_the_second_is_told_who(tmp_path):
    from cmmc_lib.runs import FolderLockedError
    run = RunFolder(tmp_path / "r")
    with run.lock("cmmc pretrain --run-dir r"):
        with pytest.raises(FolderLockedError, match=r"in use by pid \d+ on .*\(cmmc pretrain --run-dir r, since"):
            with RunFolder(tmp_path / "r").lock():
                pass
    with run.lock():                                              # released: the next writer gets it
        assert (tmp_path / "r" / ".lock").is_file()
    assert not (tmp_path / "r").exists()                          # created for nothing: removed again


def test_a_config_that_asks_to_trust_pickles_is_not_obeyed(tmp_path, caplog):
    """Permission to unpickle travels with the person at the keyboard, never with a run folder."""
    from cmmc_lib.config import Config
    from cmmc_lib.data.datasets import build_dataset
    from cmmc_lib.data.skeleton import pickles_trusted
    marker = tmp_path / "pwned"
    root = tmp_path / "ntu60"
    (root / "preprocessed").mkdir(parents=True)
    with open(root / "preprocessed" / "data.pkl", "wb") as f:
        import pickle
        pickle.dump({"data": Payload(marker), "label": [0], "sample_name": ["S001C001P001R001A001"]}, f)
    cfg = preset("tiny", ["ssl.modality=joint", "data.dataset=ntu60", f"data.root={root}", "data.ntu_source=pickle"])
    saved = cfg.to_dict()
    saved["data"]["trust_pickle"] = True                          # what an older or hostile config.json holds
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    loaded = RunFolder(tmp_path / "run").read_config()
    assert "ignoring data.trust_pickle=True" in caplog.text and not hasattr(loaded.data, "trust_pickle")
    assert not pickles_trusted()
    with pytest.raises(ValueError, match="unpickling a file can run arbitrary code"):
        build_dataset(loaded.data, "test", False, ("joint",))
    assert not marker.exists()
