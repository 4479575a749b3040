"""Pins the public API surface and the rule that inference needs no PyTorch."""

import subprocess
import sys

import tddfa


def test_public_api_surface():
    assert sorted(tddfa.__all__) == sorted([
        "FaceAligner", "VideoAligner", "Face", "Pose", "ImageResult", "TddfaError", "InputError",
        "AssetError", "ModelError", "DependencyError", "list_models", "__version__",
    ])
    assert tddfa.list_models() == ["mb05", "mb1", "v1-wpdc-vdc"]
    assert tddfa.FaceAligner.__module__ == "tddfa.pipeline.aligner"
    assert tddfa.VideoAligner.__module__ == "tddfa.video.tracker"


def test_inference_does_not_import_torch():
    code = (
        "import sys, tddfa, tddfa.pipeline, tddfa.detection, tddfa.cli; "
        "tddfa.cli.build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_package_entry_points_keep_their_names():
    import tddfa.export
    import tddfa.render
    import tddfa.video

    assert callable(tddfa.render.render) and "mesh" in tddfa.render.RENDERERS
    assert callable(tddfa.export.export_mesh) and {"obj", "ply", "glb"} <= set(tddfa.export.WRITERS)
    assert tddfa.video.VideoAligner is tddfa.VideoAligner
    for pkg in (tddfa.render, tddfa.export, tddfa.video):
        missing = [n for n in pkg.__all__ if not hasattr(pkg, n)]
        assert not missing, f"{pkg.__name__}.__all__ names missing attributes: {missing}"


def test_cli_commands():
    import argparse

    from tddfa.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"align", "assets", "bench", "data", "eval", "models", "train", "video"} <= set(sub.choices)
