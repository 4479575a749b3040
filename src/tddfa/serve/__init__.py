"""HTTP server: a REST API under ``/v1`` and a web page with a 3-D viewer (``tddfa serve``).

Needs the ``serve`` extra (``pip install 'tddfa[serve]'``: FastAPI, uvicorn, python-multipart).

    >>> from tddfa.serve import create_app, ServeConfig
    >>> app = create_app(ServeConfig(workers=1, queue=16))      # any ASGI server can run it
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServeConfig", "Engine"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tddfa.serve.app import create_app

        return create_app
    if name in ("ServeConfig", "Engine"):
        from tddfa.serve import engine

        return getattr(engine, name)
    raise AttributeError(name)
