"""Model files: the registry of named assets with sizes and hashes, lookup in ``TDDFA_HOME`` and
the user cache, verified downloads (:mod:`.registry`), and the restricted loaders that read
PyTorch checkpoints and pickles without executing code (:mod:`.serialization`).
"""

from tddfa.assets.registry import (
    REGISTRY,
    AssetSpec,
    AssetStatus,
    asset_dirs,
    asset_status,
    cache_dir,
    find,
    install_from,
    list_assets,
    resolve,
    verify_file,
)
from tddfa.assets.serialization import load_pickle, load_torch_checkpoint, state_dict_from_checkpoint

__all__ = [
    "REGISTRY",
    "AssetSpec",
    "AssetStatus",
    "asset_dirs",
    "asset_status",
    "cache_dir",
    "find",
    "install_from",
    "list_assets",
    "resolve",
    "verify_file",
    "load_pickle",
    "load_torch_checkpoint",
    "state_dict_from_checkpoint",
]
