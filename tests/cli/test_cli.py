"""The command line end to end on real photos, including a batch with bad files."""

import json
import shutil
import subprocess
import sys

import pytest

from tddfa.cli.main import main


def test_help_and_typo_suggestion(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "align" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["algn", "x"])
    assert e.value.code == 2
    assert "did you mean: align" in capsys.readouterr().err


def test_align_batch_reports_bad_files_and_continues(shared, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(shared / "samples" / "JianzhuGuo.jpg", src / "good.jpg")
    shutil.copy(shared / "samples" / "trump_hillary.jpg", src / "sub" / "two.jpg")
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.jpg").write_text("hello")
    data = (shared / "samples" / "0013.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[:300])
    import cv2
    import numpy as np

    cv2.imwrite(str(src / "blank.png"), np.full((64, 64), 90, np.uint8))
    out = tmp_path / "out"
    code = main(["align", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    for bad in ("empty.jpg", "text.jpg", "cut.jpg"):
        assert f"skipped {src / bad}" in err
    assert "Traceback" not in err
    good = json.loads((out / "good.json").read_text())
    assert len(good["faces"]) == 1 and (out / "good_landmarks.jpg").stat().st_size > 0
    two = json.loads((out / "sub" / "two.json").read_text())
    assert len(two["faces"]) == 2
    assert json.loads((out / "blank.json").read_text())["faces"] == []
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_assets_command(shared, capsys):
    assert main(["assets"]) == 0
    out = capsys.readouterr().out
    assert "mb05" in out and "verified" in out and "missing" in out  # mb1 is absent here


def test_corrupt_weights_give_one_line_error(shared, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes((shared / "assets" / "3ddfa_v2" / "mb05_120x120.pth").read_bytes()[:1000])
    r = subprocess.run(
        [sys.executable, "-m", "tddfa", "align", str(shared / "samples" / "5.png"), "-o",
         str(tmp_path / "o"), "--checkpoint", str(bad)],
        capture_output=True, text=True,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_model_suggests(shared, capsys):
    assert main(["align", str(shared / "samples" / "5.png"), "-o", "/tmp/x", "--model", "mb5"]) == 1
    assert "did you mean 'mb05'" in capsys.readouterr().err


def test_outputs_have_normal_permissions(tmp_path):
    import os

    from tddfa.io.atomic import atomic_write_text

    p = atomic_write_text(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_align_min_face(shared, tmp_path, capsys):
    img = shared / "samples" / "JianzhuGuo.jpg"
    out = tmp_path / "out"
    assert main(["align", str(img), "-o", str(out), "--no-overlay", "--min-face", "5000"]) == 0
    assert json.loads((out / "JianzhuGuo.json").read_text())["faces"] == []
    assert main(["align", str(img), "-o", str(out), "--no-overlay", "--min-face", "64"]) == 0
    assert len(json.loads((out / "JianzhuGuo.json").read_text())["faces"]) == 1
    with pytest.raises(SystemExit) as e:
        main(["align", str(img), "-o", str(out), "--min-face", "-1"])
    assert e.value.code == 2 and "expected a finite number >= 0" in capsys.readouterr().err
