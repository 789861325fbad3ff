"""The benchmark command runs end to end on a tiny setting and refuses bad arguments."""

from __future__ import annotations

import json

from snnbench.benchmarks import engine as bench


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
    assert engines == set(bench.ENGINES)
    (ratio,) = report["ratios"]
    assert ratio["fused_over_gemm"] > 0 and ratio["events_over_gemm"] > 0
    assert ratio["events_bf16_total_over_gemm"] > 0 and ratio["gemm_bf16_speedup"] > 0
    assert 0 < ratio["events_data_encoding_share"] < 1
    (parts,) = report["parts"]
    assert parts["T"] == 2 and all(parts[f"{k}_ms"] > 0 for k in bench.PARTS)
    out = capsys.readouterr().out
    assert "snnTorch / fused" in out and "events / GEMM floor" in out
    assert "layer-1 fwd dense / events ms" in out and "bf16-mixed, with encoding" in out
    (goals,) = report["targets"]
    assert goals["T"] == 2 and goals["events_total_over_gemm"] > 0 and "| goal |" in out


def test_bench_refuses_oversized_batch(tmp_path, capsys):
    code = bench.main(["--batch-size", "100000", "--json", str(tmp_path / "b.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 100000" in err[0]
    assert not (tmp_path / "b.json").exists()
