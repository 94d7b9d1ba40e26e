"""Files nothing half-written can fool: the atomic writer (a full disk said as such), state files
read without running code (raw pickles included), and append-only logs that heal a torn last line."""
import errno
import logging
import os
import pickle

import pytest
import torch

from cmmc_lib.files import (UnsafeFileError, append_jsonl, atomic_write, load_state, pickle_imports, read_jsonl,
                            remove_stale_temp_files, save_state)


class Payload:
    """Unpickling this runs ``os.system``: what a poisoned file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_full_disk_is_said_as_such_with_the_file_and_nothing_is_left_behind(tmp_path, monkeypatch):
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real(obj, "/dev/full"))     # the device refuses the bytes
    with pytest.raises(OSError, match=r"no space left on the device: could not write .*ckpt\.pt") as err:
        save_state({"w": torch.zeros(1000)}, tmp_path / "ckpt.pt")
    assert err.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_a_raw_pickle_is_refused_as_unsafe_and_left_in_place(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "features.pt"
    path.write_bytes(pickle.dumps({"feats": Payload(marker)}))     # not torch's zip format: a raw pickle
    assert pickle_imports(path) == ["posix.system"]
    with pytest.raises(UnsafeFileError, match=r"refusing to load .*features\.pt.*posix\.system"):
        load_state(path)
    assert path.is_file() and not marker.exists()


def test_empty_and_torn_state_files_are_named_as_such(tmp_path):
    save_state({"w": torch.ones(10)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_state(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match=r"half\.pt is not a readable torch file \(truncated or corrupt\)"):
        load_state(tmp_path / "half.pt")


def test_what_a_killed_writer_left_is_removed(tmp_path):
    (tmp_path / ".step_0000004.tmp-123-abcd.pt").write_bytes(b"half")
    (tmp_path / "step_0000004.pt").write_bytes(b"whole")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".step_0000004.tmp-123-abcd.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000004.pt"]
    assert atomic_write(tmp_path / "x.txt", lambda tmp: tmp.write_text("x")).read_text() == "x"


# ----------------------------------------------------------------------------- logs
def test_a_log_reads_back_what_was_appended(tmp_path):
    path = tmp_path / "deep" / "results.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"seed": 0, "top1": 0.5})
    append_jsonl(path, {"seed": 1, "top1": 0.25, "name": "a\nb"})
    assert read_jsonl(path) == [{"seed": 0, "top1": 0.5}, {"seed": 1, "top1": 0.25, "name": "a\nb"}]
    assert path.read_text().count("\n") == 2


@pytest.mark.parametrize("torn", ['{"seed": 2, "top1": 0.', '{"seed": 2, "top1": 0.7}', '{"seed": 2, \n'])
def test_a_torn_last_line_is_dropped_with_a_warning_and_healed_by_the_next_append(tmp_path, caplog, torn):
    path = tmp_path / "results.jsonl"
    good = '{"seed": 0, "top1": 0.5}\n{"seed": 1, "top1": 0.6}\n'
    path.write_text(good + torn)                  # cut short: no newline, or half a record
    with caplog.at_level(logging.WARNING, logger="cmmc_lib.files"):
        assert [r["seed"] for r in read_jsonl(path)] == [0, 1]
    assert f"{path}:3" in caplog.text and "torn last line" in caplog.text
    append_jsonl(path, {"seed": 2, "top1": 0.7})
    assert path.read_text() == good + '{"seed": 2, "top1": 0.7}\n'           # healed: one record a line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cmmc_lib.files"):
        assert [r["seed"] for r in read_jsonl(path)] == [0, 1, 2]
    assert not caplog.text


def test_a_torn_middle_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"seed": 0}\n{"seed": 1, "top\n\n{"seed": 2}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not a complete JSON record"):
        read_jsonl(path)
    with pytest.raises(ValueError, match=rf"{path}:2"):
        append_jsonl(path, {"seed": 3})
    assert path.read_text().endswith('{"seed": 2}\n')                         # nothing appended


def test_blank_lines_are_no_records_and_a_line_must_be_an_object(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('[1, 2]\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"r.jsonl:1: .*not a JSON object"):
        read_jsonl(path)
