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


def unknown_name(what: str, name: object, known, error: type[TddfaError] = InputError) -> TddfaError:
    """The error for a name that is not one of ``known``: it suggests the closest known name and
    lists them all, e.g. ``unknown model 'mb5'; did you mean 'mb05'? (known: mb05, mb1)``."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return error(f"unknown {what} {name!r}{hint} (known: {', '.join(map(str, known))})")


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
