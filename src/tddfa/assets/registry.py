"""Named model and data files: where they are looked for, how they are fetched and verified.

Resolution order for an asset: an explicit path given by the caller, then ``$TDDFA_HOME``, then
the per-user cache (``platformdirs.user_cache_dir("tddfa")``). Inside an asset folder each file
lives at its registry ``relpath`` (the layout of ``shared/assets``: ``3ddfa_v2/tri.pkl``, ...).

A missing *official* file is downloaded (when ``TDDFA_OFFLINE`` is not set) from its public
repository path into the per-user cache (never into ``TDDFA_HOME``, which may be shared or
read-only), verified by size and SHA-256 or git blob id,
and only then moved into place. Offline, :class:`~tddfa.errors.AssetError` names the file, the
URL and the folder to put it in. Every file found is verified once per process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tddfa.errors import AssetError, unknown_name

__all__ = [
    "AssetSpec",
    "AssetStatus",
    "REGISTRY",
    "asset_dirs",
    "cache_dir",
    "resolve",
    "verify_file",
    "asset_status",
    "list_assets",
    "install_from",
]

log = logging.getLogger(__name__)

_V2 = "cleardusk/3DDFA_V2"
_V1 = "cleardusk/3DDFA"
BFM_LICENCE = "Basel Face Model derived data: academic/non-commercial use (BFM licence)"


@dataclass(frozen=True)
class AssetSpec:
    """One registered file.

    Attributes:
        name: registry key, e.g. ``"mb05"``.
        relpath: path inside an asset folder.
        size: bytes, or ``None`` if unknown.
        sha256: hex digest, or ``None``.
        git_blob: git blob id (SHA-1 of ``"blob <size>\\0" + data``), or ``None``.
        repo, repo_path: public GitHub location (``None`` for files made here).
        description: one line for ``tddfa assets``.
        licence: licence of the data.
    """

    name: str
    relpath: str
    size: int | None
    sha256: str | None
    git_blob: str | None
    repo: str | None
    repo_path: str | None
    description: str
    licence: str = "MIT (3DDFA_V2 release)"

    @property
    def url(self) -> str | None:
        if self.repo is None or self.repo_path is None:
            return None
        return f"https://github.com/{self.repo}/raw/master/{self.repo_path}"


def _spec(name, relpath, size, sha, blob, repo, rpath, desc, licence="MIT (3DDFA_V2 release)"):
    return AssetSpec(name, relpath, size, sha, blob, repo, rpath, desc, licence)


REGISTRY: dict[str, AssetSpec] = {
    s.name: s
    for s in [
        _spec("mb05", "3ddfa_v2/mb05_120x120.pth", 3752462,
              "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280",
              "6b7be882d53da54cc84732b295695d5c89c93bc3", _V2, "weights/mb05_120x120.pth",
              "MobileNet-V1 x0.5 regressor, 120x120 input, 62 params (PyTorch checkpoint)"),
        _spec("mb1", "3ddfa_v2/mb1_120x120.pth", None, None,
              "bb78e0cd616fa578febb725b4be3a3ddd546f6b4", _V2, "weights/mb1_120x120.pth",
              "MobileNet-V1 x1.0 regressor, 120x120 input, 62 params (PyTorch checkpoint)"),
        _spec("faceboxes", "3ddfa_v2/FaceBoxesProd.pth", 4072492,
              "c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09",
              "89c411c20eb55668e224b04cba549687ea242b57", _V2, "FaceBoxes/weights/FaceBoxesProd.pth",
              "FaceBoxes face detector weights (PyTorch state dict)"),
        _spec("param_mean_std", "3ddfa_v2/param_mean_std_62d_120x120.pkl", 713,
              "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795",
              "110c0f3eda9f7c610dd20a4ac96de848b76de443", _V2,
              "configs/param_mean_std_62d_120x120.pkl",
              "mean/std (62,) used to de-normalise the regressor output"),
        _spec("tri", "3ddfa_v2/tri.pkl", 913040,
              "0562a594d8369f7d1c86306522ff76fd3a2c81cf90ba9443893c1191ad0abbb8",
              "31b52dcfb1a823649a6157f784ce39304c96ca6d", _V2, "configs/tri.pkl",
              "(3, 76073) triangles of the 38,365-vertex noneck BFM mesh", BFM_LICENCE),
        _spec("indices", "3ddfa_v2/indices.npy", 153588,
              "b341debcdf26492332c1f96ced438e727e74164d1524cab9cca0aedf6ccd39c8",
              "8dc0fbd5fcd3f46528ce0c8cb40fd5fa8432bed4", _V2, "configs/indices.npy",
              "(38365,) noneck vertex -> full-BFM vertex index", BFM_LICENCE),
        _spec("ncc_code", "3ddfa_v2/ncc_code.npy", 460508,
              "edab94fb09d2e25660d62eb068316becf8998e793dfe2ae3ac89196ebc0af981",
              "b1411ff3a716a1d87d43c865525007e6d65fd2f0", _V2, "configs/ncc_code.npy",
              "(3, 38365) normalised coordinate code for PNCC", BFM_LICENCE),
        _spec("bfm_uv", "3ddfa_v2/BFM_UV.mat", 779401,
              "60be915f601563e274d9737abd54c6b925e8e737fa1c89d3cd64933315629ce1",
              "fa205443b62307647358facf6fd92b13166d0d86", _V2, "configs/BFM_UV.mat",
              "UV coordinates of the full BFM", BFM_LICENCE),
        _spec("bfm_noneck", "3ddfa_v2/bfm_noneck_v3.pkl", None, None,
              "7a44e1e29d658fc5d7303eb07cd820b23daab34a", _V2, "configs/bfm_noneck_v3.pkl",
              "official dense noneck BFM (u, w_shp, w_exp, keypoints)", BFM_LICENCE),
        _spec("bfm_noneck_approx", "derived/bfm_noneck_approx.npz", 22136630,
              "8d73f926bf35f7811a3b502b9b08445bb1fdd2474f90f1db9677b9f4e3a10a40", None, None,
              None, "approximate dense noneck BFM (exact mean, triangles and landmark bases)",
              BFM_LICENCE),
        _spec("u_base", "3ddfa_v1/u_base.txt", 2728,
              "1ea7c3116070aeee720605a4a44ca9db582ac550095c321c3cf65ec925fe43cf",
              "21f288f22d47dfbb5a02db5610269298a61b8f33", _V1, "c++/weights/u_base.txt",
              "68-landmark mean shape (204,)", BFM_LICENCE),
        _spec("w_shp_base", "3ddfa_v1/w_shp_base.txt", 77567,
              "bec9a2189eb77c61ff940c801dcd9e5cd7f1973b6d91949494d9cd7ac121b7f6",
              "c269d8766dc5b442446593a45ffae62d8efe3640", _V1, "c++/weights/w_shp_base.txt",
              "68-landmark shape basis (204, 40)", BFM_LICENCE),
        _spec("w_exp_base", "3ddfa_v1/w_exp_base.txt", 22424,
              "4dc637c92c34bfd69faab74cafce23913f2b6181ff00c57a7ab69c1204d20b18",
              "6f5f879fdaeb05b768c8c1e2520aac6693567a50", _V1, "c++/weights/w_exp_base.txt",
              "68-landmark expression basis (204, 10)", BFM_LICENCE),
        _spec("keypoints_sim", "3ddfa_v1/keypoints_sim.npy", 1760,
              "065053f041b03ed32e36641d26fcd9aefef36f6c518899091cdc6038a6246c13",
              "6554439dd046233333c2f5f49c283e4863d48372", _V1, "train.configs/keypoints_sim.npy",
              "(204,) landmark xyz indices in the full BFM vector", BFM_LICENCE),
        _spec("model_paf", "3ddfa_v1/Model_PAF.pkl", 2507052,
              "418713edd25e6c5938cb49e989ff8461d59a6c8bbe5aba3a643e9e77f9bc5e4d",
              "568ce4a60167d7d89ab253b54be6518840d80e3c", _V1, "train.configs/Model_PAF.pkl",
              "BFM sampled at 64x64 PAF anchors", BFM_LICENCE),
        _spec("param_whitening", "3ddfa_v1/param_whitening.pkl", 725,
              "df3ee06d60db5435e238f6918b2ee6825e3341959273337c7319474102c06f3a",
              "219ef670e4cb7899dd3ec851a47183fe2bb32907", _V1, "train.configs/param_whitening.pkl",
              "3DDFA v1 62-d parameter mean/std"),
        _spec("v1_wpdc_vdc", "3ddfa_v1/phase1_wpdc_vdc.pth.tar", None, None,
              "411f37c2c6f91f8f8c0e4a3402be8b46da70a1e5", _V1, "models/phase1_wpdc_vdc.pth.tar",
              "3DDFA v1 MobileNet-V1 x1.0 regressor (WPDC then VDC), 62 whitened params "
              "(PyTorch checkpoint, state_dict keys module.conv1 ... module.fc)", "MIT (3DDFA release)"),
        _spec("model_shape_sim", "aflw2000_code/Model_Shape_Sim.mat", None, None, None, None,
              None, "full BFM mean shape and mean texture (AFLW2000-3D release)", BFM_LICENCE),
    ]
}


def cache_dir() -> Path:
    """The per-user cache folder: downloaded assets and converted ONNX graphs.

    ``$TDDFA_CACHE`` overrides the platform default (``~/.cache/tddfa`` on Linux).
    """
    override = os.environ.get("TDDFA_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tddfa", appauthor=False))


def asset_dirs() -> list[Path]:
    """Asset folders in search order: ``$TDDFA_HOME`` (if set), then the per-user cache."""
    dirs = []
    home = os.environ.get("TDDFA_HOME")
    if home:
        dirs.append(Path(home).expanduser())
    dirs.append(cache_dir())
    return dirs


def git_blob_id(path: Path) -> str:
    """Git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` + contents."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(spec: AssetSpec, path: Path) -> None:
    """Check size and SHA-256 (or git blob id) of ``path`` against ``spec``.

    Raises:
        AssetError: stating expected vs actual.
    """
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise AssetError(
            f"asset '{spec.name}' at {path} has {size} bytes, expected {spec.size}: "
            "the file is truncated or not the official one; delete it and fetch it again"
        )
    if spec.sha256 is not None:
        got = _sha256(path)
        if got != spec.sha256:
            raise AssetError(
                f"asset '{spec.name}' at {path}: SHA-256 {got[:16]}…, expected "
                f"{spec.sha256[:16]}…; the file is corrupt or tampered with"
            )
    elif spec.git_blob is not None:
        got = git_blob_id(path)
        if got != spec.git_blob:
            raise AssetError(
                f"asset '{spec.name}' at {path}: git blob {got[:12]}…, expected "
                f"{spec.git_blob[:12]}…; the file is corrupt or tampered with"
            )


_verified: dict[Path, float] = {}


def _verified_once(spec: AssetSpec, path: Path) -> Path:
    mtime = path.stat().st_mtime
    if _verified.get(path) != mtime:
        verify_file(spec, path)
        _verified[path] = mtime
    return path


def _download(spec: AssetSpec, dest_dir: Path) -> Path:
    url = spec.url
    assert url is not None
    dest = dest_dir / spec.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    log.info("downloading %s from %s", spec.name, url)
    import urllib.request  # here, not at the top: ~50 ms of every start-up otherwise

    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        verify_file(spec, Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _missing_message(spec: AssetSpec, reason: str) -> str:
    where = asset_dirs()[0] / spec.relpath
    how = f"download {spec.url} and put it at {where}" if spec.url else f"put it at {where}"
    if spec.git_blob and not spec.sha256:
        how += f" (it is verified by its git blob id {spec.git_blob})"
    return (
        f"asset '{spec.name}' ({spec.description}) not found in {', '.join(map(str, asset_dirs()))}"
        f" ({reason}); {how}, or set TDDFA_HOME to a folder that holds {spec.relpath}, "
        "or run: tddfa assets install --from DIR"
    )


def find(name: str) -> Path | None:
    """Path of asset ``name`` in the asset folders if present (not verified), else ``None``."""
    spec = _get_spec(name)
    for d in asset_dirs():
        p = d / spec.relpath
        if p.is_file():
            return p
    return None


def resolve(name: str, path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Path to a verified copy of asset ``name``.

    Args:
        name: registry key (see :data:`REGISTRY`).
        path: explicit file to use instead (verified only if it has the official size).
        download: fetch a missing official file when online (``TDDFA_OFFLINE`` unset).

    Raises:
        AssetError: missing (offline, no URL, or download failed) or failing verification.
    """
    spec = _get_spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AssetError(f"asset '{name}': no file at {p}")
        return p
    found = find(name)
    if found is not None:
        return _verified_once(spec, found)
    if spec.url is None:
        raise AssetError(_missing_message(spec, "it cannot be downloaded"))
    if not download or os.environ.get("TDDFA_OFFLINE"):
        raise AssetError(_missing_message(spec, "offline mode"))
    recent = _recent_failure(spec.name)
    if recent:
        raise AssetError(_missing_message(spec, recent))
    # downloads go to the per-user cache only: TDDFA_HOME may be a shared or read-only data folder
    try:
        path = _verified_once(spec, _download(spec, cache_dir()))
    except AssetError:
        raise
    except OSError as exc:  # unwritable folder, no network
        _note_failure(spec.name, exc)
        raise AssetError(_missing_message(spec, f"download failed: {exc}")) from exc
    _failure_marker(spec.name).unlink(missing_ok=True)
    return path


#: after a failed download, the same asset is not tried again for this long (seconds): without
#: a network every new process would otherwise wait for the failure again (with the 60 s
#: timeout, when a firewall drops the connection instead of refusing it)
RETRY_AFTER = 3600.0


def _failure_marker(name: str) -> Path:
    return cache_dir() / ".failed-downloads" / name


def _note_failure(name: str, exc: BaseException) -> None:
    marker = _failure_marker(name)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=marker.parent, prefix=f".{name}-")
        with os.fdopen(fd, "w") as f:
            f.write(str(exc)[:500])
        os.replace(tmp, marker)
    except OSError as err:  # an unwritable cache: the next process simply tries again
        log.debug("could not record the failed download of %s: %s", name, err)


def _recent_failure(name: str) -> str:
    """Why a download of ``name`` is not tried now ('' when it may be)."""
    marker = _failure_marker(name)
    try:
        age = time.time() - marker.stat().st_mtime
        if not 0 <= age < RETRY_AFTER:
            return ""
        why = marker.read_text().strip()
    except OSError:
        return ""
    return (f"download failed {age / 60:.0f} min ago: {why}; not retried for "
            f"{RETRY_AFTER / 60:.0f} min (delete {marker} to retry now)")


@dataclass(frozen=True)
class AssetStatus:
    """What ``tddfa assets`` reports for one asset."""

    name: str
    path: Path | None
    status: str  # "verified", "missing", or "bad: <reason>"
    spec: AssetSpec


def asset_status(name: str) -> AssetStatus:
    spec = _get_spec(name)
    p = find(name)
    if p is None:
        return AssetStatus(name, None, "missing", spec)
    try:
        _verified_once(spec, p)
    except AssetError as exc:
        return AssetStatus(name, p, f"bad: {exc}", spec)
    unchecked = spec.size is None and spec.sha256 is None and spec.git_blob is None
    return AssetStatus(name, p, "present (no hash)" if unchecked else "verified", spec)


def list_assets() -> list[AssetStatus]:
    """Status of every registered asset, in registry order."""
    return [asset_status(n) for n in REGISTRY]


def install_from(folder: str | os.PathLike, dest: str | os.PathLike | None = None) -> list[str]:
    """Copy every registered file found under ``folder`` (same layout, or flat) into ``dest``
    (default: the first asset folder), verifying each. Returns the names installed."""
    src = Path(folder).expanduser()
    dst = Path(dest) if dest is not None else asset_dirs()[0]
    done = []
    for spec in REGISTRY.values():
        for cand in (src / spec.relpath, src / Path(spec.relpath).name):
            if cand.is_file():
                verify_file(spec, cand)
                target = dst / spec.relpath
                if target.resolve() != cand.resolve():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.tmp")
                    shutil.copyfile(cand, tmp)
                    os.replace(tmp, target)
                done.append(spec.name)
                break
    return done


def _get_spec(name: str) -> AssetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise unknown_name("asset", name, REGISTRY, AssetError) from None
