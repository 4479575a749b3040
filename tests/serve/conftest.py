"""Fixtures of the server tests: one warmed-up engine (models loaded once) shared by the apps."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'tddfa[serve]'")
pytest.importorskip("multipart", reason="python-multipart (serve extra) is not installed")


@pytest.fixture(scope="session")
def engine(shared):
    from tddfa.serve.engine import Engine, ServeConfig

    eng = Engine(ServeConfig(workers=1, queue=4))
    eng.warm_up()
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def photo(shared) -> bytes:
    return (shared / "samples" / "trump_hillary.jpg").read_bytes()


@pytest.fixture(scope="session")
def make_client(engine):
    """``make_client(**config)``: a TestClient of an app on the shared engine, with ServeConfig
    fields (token, max_upload_mb, cors...) overridden."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from tddfa.serve.app import create_app

    def make(**config):
        return TestClient(create_app(replace(engine.config, **config), engine, warm_up=False))

    return make
