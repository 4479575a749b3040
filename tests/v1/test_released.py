"""The released 3DDFA V1 regressor (``v1-wpdc-vdc``): checkpoint layout, graph, asset errors."""

from __future__ import annotations

import numpy as np
import pytest

from tddfa.errors import AssetError, ModelError
from tddfa.models.registry import get_model_info

pytestmark = pytest.mark.usefixtures("shared")


def test_registry_entry_describes_v1():
    info = get_model_info("v1-wpdc-vdc")
    assert info.width == 1.0 and info.checkpoint_layout == "v1"
    assert info.param_stats == "param_whitening"
    from tddfa.assets.registry import REGISTRY

    spec = REGISTRY[info.weights]
    assert spec.git_blob == "411f37c2c6f91f8f8c0e4a3402be8b46da70a1e5"
    assert spec.url.endswith("cleardusk/3DDFA/raw/master/models/phase1_wpdc_vdc.pth.tar")


def _v1_checkpoint(path, seed=0):
    torch = pytest.importorskip("torch")
    from tddfa.v1.net import V1MobileNet

    torch.manual_seed(seed)
    net = V1MobileNet(1.0)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained network has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        net.fc.weight.mul_(10)
    net.eval()
    # V1's layout: {"state_dict": {"module.<name>": tensor}} in the legacy (pre-zip) container
    sd = {"module." + k: v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 50}, path, _use_new_zipfile_serialization=False)
    return net


def test_v1_layout_graph_matches_pytorch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from tddfa.models.regressor import Regressor, load_param_stats

    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "phase1_wpdc_vdc.pth.tar"
    net = _v1_checkpoint(ckpt)
    reg = Regressor("v1-wpdc-vdc", checkpoint=ckpt)
    assert reg.width == 1.0
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
    got = reg.predict(crops)
    mean, std = load_param_stats("param_whitening")
    with torch.no_grad():
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        ref = net(x).numpy()
    # compared in the network's (whitened) units: the graph folds × std + mean into its last layer
    assert np.abs(ref).max() > 0.1  # the outputs are not trivially zero
    np.testing.assert_allclose((got - mean) / std, ref, atol=1e-4, rtol=0)


def test_v2_checkpoint_is_not_a_v1_model(tmp_path, monkeypatch, shared):
    from tddfa.models.regressor import Regressor

    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="not a 3DDFA V1 checkpoint"):
        Regressor("v1-wpdc-vdc", checkpoint=shared / "assets/3ddfa_v2/mb05_120x120.pth")


def test_missing_offline_names_url_and_blob(tmp_path, monkeypatch):
    from tddfa.models.regressor import Regressor

    monkeypatch.setenv("TDDFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TDDFA_OFFLINE", "1")
    with pytest.raises(AssetError) as err:
        Regressor("v1-wpdc-vdc")
    msg = str(err.value)
    assert "https://github.com/cleardusk/3DDFA/raw/master/models/phase1_wpdc_vdc.pth.tar" in msg
    assert "411f37c2c6f91f8f8c0e4a3402be8b46da70a1e5" in msg
    assert "3ddfa_v1/phase1_wpdc_vdc.pth.tar" in msg


def test_tampered_file_is_rejected(tmp_path, monkeypatch):
    from tddfa.models.regressor import Regressor

    home = tmp_path / "home"
    target = home / "3ddfa_v1" / "phase1_wpdc_vdc.pth.tar"
    target.parent.mkdir(parents=True)
    _v1_checkpoint(target)  # a valid V1-layout checkpoint, but not the released file
    monkeypatch.setenv("TDDFA_HOME", str(home))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TDDFA_OFFLINE", "1")
    with pytest.raises(AssetError, match="tampered"):
        Regressor("v1-wpdc-vdc")


def test_truncated_checkpoint_is_an_asset_error(tmp_path, monkeypatch):
    from tddfa.models.regressor import Regressor

    ckpt = tmp_path / "v1.pth.tar"
    _v1_checkpoint(ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetError):
        Regressor("v1-wpdc-vdc", checkpoint=ckpt)


def test_model_card_lists_v1_published_figures_and_cascade_stages():
    from tddfa.evaluation.model_card import render_model_card

    fake = {"_file": "cascade.json", "protocol": "crop", "n": 1,
            "nme": {"0-30": 1.1, "30-60": 2.1, "60-90": 3.1, "mean": 2.1, "all": 1.6},
            "stages": [{"stage": 0, "buckets": [1.0, 2.0, 3.0], "mean": 2.0, "all": 1.5},
                       {"stage": 1, "buckets": [1.1, 2.1, 3.1], "mean": 2.1, "all": 1.6}]}
    text = render_model_card([fake])
    for v in ("5.644", "5.030", "4.759", "4.252"):
        assert f"{v} (published, not measured here)" in text
    assert "| 1 | 1.100 | 2.100 | 3.100 | **2.100** | 1.600 |" in text
    assert "v1-wpdc-vdc" in text
