"""The README's measured figures come from files their commands wrote: each file says which command,
commit, machine and date, and the README's table is what those files say."""
import json
from pathlib import Path

import pytest

from cmmc_lib.bench import measured
from cmmc_lib.bench.measured import Measurement

README = Path(__file__).resolve().parents[1] / "README.md"
SHIPPED = sorted(measured.BENCH.glob("*.json"))


def test_a_measurement_runs_its_commands_in_a_fresh_process_and_records_where_it_ran(tmp_path):
    mask = Measurement("mask", "one tesseract", (("mask", "--shape", "4,8,8,8", "--seed", "3"),),
                       lambda results: f"kept {results[0]['lam']:.3f}")
    path = measured.measure(mask, tmp_path)
    record = json.loads(path.read_text())
    assert path == tmp_path / "mask.json"
    assert record["commands"] == ["cmmc mask --shape 4,8,8,8 --seed 3"]
    assert set(record) >= {"commit", "machine", "date", "wall_s"} and record["machine"]["cores"] >= 1
    assert 0 < record["results"][0]["lam"] < 1 and record["results"][0]["box_volume"] > 0
    assert "one tesseract" not in measured.table(tmp_path, tmp_path / "no-study.json")   # not one of its rows
    assert "Not measured in this checkout: step-cpu" in measured.table(tmp_path, tmp_path / "no-study.json")


def test_scratch_and_realdata_are_filled_in_and_shown_by_their_defaults(tmp_path):
    synth = Measurement("synth-tiny", "tiny data", (("data", "synth", "--size", "tiny", "--videos", "12", "--out",
                                                      "{scratch}/d"),), measured._synth)
    record = json.loads(measured.measure(synth, tmp_path).read_text())
    assert record["commands"] == ["cmmc data synth --size tiny --videos 12 --out $TMP/d"]
    assert record["results"][0]["videos"] == 12 and record["results"][0]["path"] == "$TMP/d"   # not this machine's
    assert measured.shown(("bench", "flow", "--videos", measured.UCF + "a.avi")) == \
        "cmmc bench flow --videos ../shared/realdata/ucf101/videos/a.avi"


def test_a_failing_command_raises_its_message_and_writes_nothing(tmp_path):
    broken = Measurement("broken", "a wrong path", (("data", "probe", str(tmp_path / "missing.avi")),), str)
    with pytest.raises(RuntimeError, match=r"broken: `cmmc data probe .*missing.avi` failed \(exit 2\): cmmc: error"):
        measured.measure(broken, tmp_path)
    assert not (tmp_path / "broken.json").exists()


def test_every_measurement_of_the_readme_is_shipped_with_the_commands_it_names_now():
    assert sorted(p.stem for p in SHIPPED) == sorted(measured.BY_NAME)
    for path in SHIPPED:
        record, m = json.loads(path.read_text()), measured.BY_NAME[path.stem]
        assert record["commands"] == [measured.shown(a) for a in m.commands], path.name   # changed: measure again
        assert record["commit"] and not record["commit"].endswith("+dirty"), path.name
        assert m.figure(record["results"])
        assert str(measured.ROOT.parent) not in path.read_text(), path.name      # no machine's own folders


def test_the_readmes_measured_table_is_what_the_shipped_files_say():
    # refreshed by `python -m cmmc_lib.bench.measured readme README.md` after `... run`
    assert measured.readme_block(README) == measured.table()
