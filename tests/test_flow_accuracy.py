"""Flow accuracy (cmmc_lib.flow.accuracy): end-point error against known flow, and agreement
between methods, on written videos."""
from __future__ import annotations

import json

from cmmc_lib.flow.accuracy import flow_accuracy, flow_agreement
from tests._gen_fixtures import make_videos


def test_flow_accuracy_and_agreement_on_written_videos(tmp_path):
    paths = make_videos(tmp_path, n=2, frames=4)
    acc = flow_accuracy(paths, methods=["tvl1", "tvl1-torch", "farneback"], max_px=2.0)
    json.dumps(acc)
    assert len(acc["pairs"]) == 4 and acc["size"] == [48, 64]
    epe = {m: r["epe"] for m, r in acc["methods"].items()}
    assert epe["tvl1-torch"] <= 1.10 * epe["tvl1"] + 0.01 and all(0 <= e < 2 for e in epe.values())
    agree = flow_agreement(paths, pairs_per_video=1)
    assert len(agree["pairs"]) == 2 and agree["epe"] < 0.1 and agree["reference"] == "tvl1"


def test_cmmc_bench_flow_accuracy_prints_one_json_and_refuses_a_missing_video(tmp_path, capsys):
    from cmmc_lib import cli
    paths = make_videos(tmp_path, n=1, frames=4)
    assert cli.main(["bench", "flow-accuracy", "--videos", str(paths[0]), "--methods", "farneback", "dis",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["pairs"]) == 2 and set(out["methods"]) == {"farneback", "dis"}
    assert all(0 <= x["epe"] < 2 and "per_pair" not in x for x in out["methods"].values())
    assert cli.main(["bench", "flow-accuracy", "--videos", str(tmp_path / "missing.avi")]) == 2
    assert "needs --videos FILE" in capsys.readouterr().err
