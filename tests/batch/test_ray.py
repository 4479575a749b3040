"""The Ray engine on a local Ray with 2 CPUs: one aligner actor's process is killed midway and
every input still appears exactly once in the output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import needs_shared

pytestmark = needs_shared


def test_killed_actor_loses_and_duplicates_nothing(tmp_path, shared):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from tddfa.batch.ray_engine import PID_DIR_ENV, run_ray
    from tddfa.batch.work import AlignOptions

    src = tmp_path / "in"
    src.mkdir()
    items = []
    for k in range(12):
        name = ("JianzhuGuo.jpg", "0013.jpg")[k % 2]
        dst = src / f"{k:02d}_{name}"
        shutil.copy(shared / "samples" / name, dst)
        items.append((str(dst), dst.stem))
    (src / "broken.jpg").write_bytes(b"not an image")
    items.append((str(src / "broken.jpg"), "broken"))
    pids = tmp_path / "pids"
    pids.mkdir()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {PID_DIR_ENV: str(pids), "TDDFA_HOME": os.environ["TDDFA_HOME"],
                                       "TDDFA_OFFLINE": "1"}})
    killed: list[int] = []

    def killer():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            for f in pids.iterdir():
                pid = int(f.name)
                os.kill(pid, signal.SIGKILL)  # the actor's worker process, midway
                killed.append(pid)
                break
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        out = tmp_path / "out"
        summary = run_ray(items, AlignOptions(out=str(out), overlay=False), fmt="jsonl", workers=2,
                          batch_size=1, progress=False)
    finally:
        ray.shutdown()
    t.join(1)
    assert killed, "no actor was killed: the fault was not injected"
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    inputs = [r["input"] for r in recs]
    expected = sorted(p for p, _ in items if "broken" not in p)
    assert sorted(inputs) == expected  # none lost, none duplicated
    assert all(r["faces"] for r in recs)
    assert summary.processed == len(expected) and summary.failed == 1
    fails = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [Path(f["input"]).name for f in fails] == ["broken.jpg"]
