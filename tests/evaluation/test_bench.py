"""``tddfa bench``: functional checks only (which stages run, what is recorded) — never timing
thresholds."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from tddfa.errors import InputError
from tddfa.evaluation import bench


def test_time_stage_counts_calls_and_orders_percentiles():
    calls = []
    r = bench.time_stage(lambda: calls.append(1), repeat=7, warmup=3)
    assert len(calls) == 10
    assert r["n"] == 7
    assert 0 <= r["min"] <= r["p10"] <= r["median"] <= r["p90"]
    with pytest.raises(InputError, match="repeat"):
        bench.time_stage(lambda: None, repeat=0)


@pytest.fixture(scope="module")
def aligner(shared):
    from tddfa.pipeline.aligner import FaceAligner

    return FaceAligner("mb05")


def test_run_bench_records_every_stage(shared, aligner):
    res = bench.run_bench(shared / "samples" / "JianzhuGuo.jpg", aligner=aligner, repeat=2, warmup=1)
    expected = {"decode", "detect", "crop", "regress_b1", "regress_b8", "regress_b8_per_face",
                "reconstruct_sparse"}
    assert expected <= set(res["stages"])
    if aligner.morphable_model.has_dense:
        assert "reconstruct_dense" in res["stages"]
    try:
        import tddfa.render.registry  # noqa: F401

        has_render = True
    except ImportError:
        has_render = False
    if has_render:
        assert "render_mesh" in res["stages"]
    else:
        assert any("render stage skipped" in n for n in res["notes"])
    assert res["faces"] == 1
    assert res["width"] > 0 and res["height"] > 0
    ms = res["stages_ms"]
    assert ms["regress_b8_per_face"] == pytest.approx(ms["regress_b8"] / 8, rel=1e-3)
    assert all(np.isfinite(v) and v >= 0 for v in res["stages_ms"].values())
    assert {"cpu_count", "platform", "onnxruntime"} <= set(res["machine"])
    assert "onnxruntime_intra_op" in res["thread_info"]
    json.dumps(res)  # JSON-ready


def test_bench_no_face_uses_centred_box(shared, aligner, tmp_path):
    import cv2

    p = tmp_path / "blank.png"
    cv2.imwrite(str(p), np.zeros((200, 300, 3), np.uint8))
    res = bench.run_bench(p, aligner=aligner, repeat=1, warmup=0, dense=False, render=False)
    assert res["faces"] == 1 and any("no face detected" in n for n in res["notes"])
    assert "reconstruct_dense" not in res["stages"]


def test_bench_cli_json_and_plot(shared, tmp_path, capsys):
    plt = pytest.importorskip("matplotlib.pyplot")
    p = argparse.ArgumentParser(prog="tddfa")
    bench.add_parser(p.add_subparsers(dest="command"))
    out = tmp_path / "bench.json"
    args = p.parse_args(["bench", str(shared / "samples" / "JianzhuGuo.jpg"), "--repeat", "2",
                         "--json", str(out), "--plot"])
    assert bench.run(args) == 0
    text = capsys.readouterr().out
    assert "regress_b1" in text and "median ms" in text
    d = json.loads(out.read_text())
    assert d["protocol"] == "bench" and d["repeat"] == 2 and "command" in d
    img = plt.imread(tmp_path / "bench-stages.png")
    assert img.shape[0] > 100 and img[..., :3].std() > 0.05


def test_bench_missing_image_is_input_error(tmp_path):
    with pytest.raises(InputError):
        bench.run_bench(tmp_path / "nope.jpg", aligner=object(), repeat=1)
