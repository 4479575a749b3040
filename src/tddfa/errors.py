"""Typed errors. Every message states what was expected and what was found."""

from __future__ import annotations


class TddfaError(Exception):
    """Base class of every error raised on purpose by tddfa."""


class InputError(TddfaError, ValueError):
    """An input (image, video, box, array) is unreadable or has the wrong shape/type."""


class AssetError(TddfaError, FileNotFoundError):
    """A model or data file is missing, truncated, tampered with or of the wrong kind."""


class ModelError(TddfaError, RuntimeError):
    """A network could not be built or run from the given weights."""


class DependencyError(TddfaError, ImportError):
    """An optional dependency needed for this feature is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise :class:`DependencyError` saying how to get it.

    Args:
        module: importable module name, e.g. ``"trimesh"``.
        extra: the pip extra of tddfa that provides it, e.g. ``"export"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise DependencyError(
            f"this feature needs the optional package '{module}', which is not installed; "
            f"install it with: pip install 'tddfa[{extra}]'"
        ) from exc
