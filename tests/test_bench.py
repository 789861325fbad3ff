"""The benchmark command runs end to end on a tiny setting and refuses bad arguments."""

from __future__ import annotations

import json

from snnbench import bench


def test_bench_runs_and_writes_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--repeats",
            "1",
            "--steps",
            "2",
            "--batch-size",
            "32",
            "--devices",
            "cpu",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    engines = {r["engine"] for r in report["results"]}
    assert engines == {"snntorch", "fused", "gemm"}
    (ratio,) = report["ratios"]
    assert ratio["fused_over_gemm"] > 0
    assert "snnTorch / fused" in capsys.readouterr().out


def test_bench_refuses_oversized_batch(tmp_path, capsys):
    code = bench.main(["--batch-size", "100000", "--json", str(tmp_path / "b.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 100000" in err[0]
    assert not (tmp_path / "b.json").exists()
