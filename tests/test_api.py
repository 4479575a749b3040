"""Pins the public API surface and the rule that inference needs no PyTorch."""

import subprocess
import sys

import tddfa


def test_public_api_surface():
    assert sorted(tddfa.__all__) == sorted([
        "FaceAligner", "VideoAligner", "Face", "Pose", "ImageResult", "TddfaError", "InputError",
        "AssetError", "ModelError", "DependencyError", "list_models", "__version__",
    ])
    assert tddfa.list_models() == ["mb05", "mb1"]
    assert tddfa.FaceAligner.__module__ == "tddfa.pipeline"
    assert tddfa.VideoAligner.__module__ == "tddfa.video"


def test_inference_does_not_import_torch():
    code = (
        "import sys, tddfa, tddfa.pipeline, tddfa.detection, tddfa.cli; "
        "tddfa.cli.build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
