"""Issue 15 defect 2: output names never collide, and the output folder is never an input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from tddfa.cli.align import _iter_inputs
from tddfa.cli.main import main


def _img(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 40, 3), value, np.uint8))
    return path


def _names(items) -> list[str]:
    return [str(stem) for _, stem in items]


def test_same_stem_different_extension_in_one_folder(tmp_path):
    _img(tmp_path / "in" / "x.jpg")
    _img(tmp_path / "in" / "x.png")
    _img(tmp_path / "in" / "y.png")
    names = _names(_iter_inputs([str(tmp_path / "in")]))
    assert sorted(names) == ["x.jpg", "x.png", "y"]


def test_two_arguments_with_the_same_name(tmp_path):
    a = _img(tmp_path / "cam1" / "IMG_0001.jpg")
    b = _img(tmp_path / "cam2" / "IMG_0001.jpg")
    items = list(_iter_inputs([str(a), str(b)]))
    names = _names(items)
    assert len(set(n.casefold() for n in names)) == 2, names
    assert [p for p, _ in items] == [a, b]
    # two folder arguments holding the same relative name
    names = _names(_iter_inputs([str(a.parent), str(b.parent)]))
    assert len(set(names)) == 2, names
    assert all("IMG_0001" in n for n in names)


def test_names_differing_only_in_case_do_not_collide(tmp_path):
    a = _img(tmp_path / "a" / "Face.jpg")
    b = _img(tmp_path / "b" / "face.jpg")
    names = _names(_iter_inputs([str(a), str(b)]))
    assert len({n.casefold() for n in names}) == 2, names


def test_same_file_twice_is_processed_once(tmp_path):
    a = _img(tmp_path / "x.jpg")
    assert len(list(_iter_inputs([str(a), str(tmp_path / "." / "x.jpg")]))) == 1


def test_output_folder_inside_input_folder_is_not_an_input(tmp_path):
    src = tmp_path / "photos"
    _img(src / "x.jpg")
    _img(src / "out" / "x_landmarks.jpg")  # left by an earlier run
    items = list(_iter_inputs([str(src)], exclude=src / "out"))
    assert _names(items) == ["x"]


def test_cli_keeps_both_results_and_rerun_ignores_its_outputs(shared, tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(shared / "samples" / "JianzhuGuo.jpg", src / "x.jpg")
    _img(src / "x.png")
    out = src / "aligned"
    assert main(["align", str(src), "-o", str(out)]) == 0
    j1 = json.loads((out / "x.jpg.json").read_text())
    j2 = json.loads((out / "x.png.json").read_text())
    assert len(j1["faces"]) == 1 and j2["faces"] == []
    assert (out / "x.jpg_landmarks.jpg").is_file() and (out / "x.png_landmarks.jpg").is_file()
    capsys.readouterr()
    assert main(["align", str(src), "-o", str(out)]) == 0
    assert "2 of 2 image(s)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.json", "x.jpg_landmarks.jpg",
                                                    "x.png.json", "x.png_landmarks.jpg"]


def test_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    _img(tmp_path / "x.png")
    (tmp_path / "out").write_text("a file")
    assert main(["align", str(tmp_path / "x.png"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not a folder" in err and len(err.strip().splitlines()) == 1
