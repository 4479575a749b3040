import shutil

import pytest

from tddfa.assets import registry as assets
from tddfa.errors import AssetError


def test_registry_has_official_sources():
    spec = assets.REGISTRY["mb05"]
    assert spec.url == "https://github.com/cleardusk/3DDFA_V2/raw/master/weights/mb05_120x120.pth"
    assert assets.REGISTRY["bfm_noneck_approx"].url is None


def test_resolve_and_verify_from_home(shared):
    p = assets.resolve("param_mean_std")
    assert p.is_file()
    assert assets.git_blob_id(p) == assets.REGISTRY["param_mean_std"].git_blob


def test_corrupted_asset_is_rejected(shared, tmp_path, monkeypatch):
    src = assets.resolve("param_mean_std")
    bad = tmp_path / assets.REGISTRY["param_mean_std"].relpath
    bad.parent.mkdir(parents=True)
    data = bytearray(src.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setenv("TDDFA_HOME", str(tmp_path))
    with pytest.raises(AssetError, match="SHA-256"):
        assets.resolve("param_mean_std")
    st = assets.asset_status("param_mean_std")
    assert st.status.startswith("bad")


def test_missing_asset_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TDDFA_OFFLINE", "1")
    with pytest.raises(AssetError) as e:
        assets.resolve("mb1")
    msg = str(e.value)
    assert "https://github.com/cleardusk/3DDFA_V2/raw/master/weights/mb1_120x120.pth" in msg
    assert str(tmp_path / "home" / "3ddfa_v2" / "mb1_120x120.pth") in msg


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TDDFA_OFFLINE", raising=False)

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(AssetError, match="download failed"):
        assets.resolve("tri")
    assert not list((tmp_path / "home").rglob("*.pkl"))  # nothing half-written


def test_failed_download_is_not_retried_by_every_process(shared, tmp_path, monkeypatch):
    import io
    import os

    monkeypatch.setenv("TDDFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TDDFA_OFFLINE", raising=False)
    calls = []

    def no_network(*a, **k):
        calls.append(a)
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(AssetError, match="download failed: network unreachable"):
        assets.resolve("param_mean_std")
    # the next call (as a new process would) does not wait for the network again, and says why
    with pytest.raises(AssetError, match=r"download failed 0 min ago: network unreachable; not "
                                         r"retried for 60 min \(delete .* to retry now\)"):
        assets.resolve("param_mean_std")
    assert len(calls) == 1
    marker = tmp_path / "cache" / ".failed-downloads" / "param_mean_std"
    old = marker.stat().st_mtime - assets.RETRY_AFTER - 1
    os.utime(marker, (old, old))  # an hour later it is tried again, and a success clears it
    real = shared / "assets" / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl"
    monkeypatch.setattr("urllib.request.urlopen",
                        lambda *a, **k: io.BytesIO(real.read_bytes()))
    assert assets.resolve("param_mean_std").is_file()
    assert not marker.exists()


def test_download_is_verified(shared, tmp_path, monkeypatch):
    """A 'download' delivering the wrong bytes is rejected and leaves no file behind."""
    import io

    monkeypatch.setenv("TDDFA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TDDFA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TDDFA_OFFLINE", raising=False)
    monkeypatch.setattr("urllib.request.urlopen",
                        lambda *a, **k: io.BytesIO(b"tampered"))
    with pytest.raises(AssetError, match="bytes"):
        assets.resolve("param_mean_std")
    assert not (tmp_path / "home" / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl").exists()

    real = shared / "assets" / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl"
    monkeypatch.setattr("urllib.request.urlopen",
                        lambda *a, **k: io.BytesIO(real.read_bytes()))
    p = assets.resolve("param_mean_std")
    # downloads land in the per-user cache, never in TDDFA_HOME (shared or read-only data folder)
    assert p == tmp_path / "cache" / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl"
    assert not list((tmp_path / "home").rglob("*"))


def test_install_from(shared, tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    shutil.copy(shared / "assets" / "3ddfa_v2" / "tri.pkl", src / "tri.pkl")
    names = assets.install_from(src, tmp_path / "dest")
    assert names == ["tri"]
    assert (tmp_path / "dest" / "3ddfa_v2" / "tri.pkl").is_file()


def test_unknown_asset_suggests():
    with pytest.raises(AssetError, match="did you mean 'mb05'"):
        assets.resolve("mb5")
