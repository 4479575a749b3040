"""REST API through FastAPI's test client: results, renders, meshes, every error status, the
token, the body limit and the bounded queue."""

from __future__ import annotations

import json
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'tddfa[serve]'")
pytest.importorskip("multipart", reason="python-multipart (serve extra) is not installed")

from tddfa.serve.schemas import AlignResponse, ErrorResponse  # noqa: E402

# fixtures live here, not in a tests/serve/conftest.py: the test folders have no __init__.py, so
# a second conftest module would shadow the top-level one (`from conftest import needs_shared`)


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


def _error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = ErrorResponse.model_validate(r.json())
    if code:
        assert body.error.code == code, body
    return r.json()["error"]


def test_align_two_faces_same_json_as_the_library(engine, make_client, photo):
    c = make_client()
    r = c.post("/v1/align", content=photo, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    got = r.json()
    AlignResponse.model_validate(got)
    img = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    want = json.loads(engine.aligner.align(img).to_json())
    assert got == want                       # exactly what `tddfa align` writes (image: null)
    assert len(got["faces"]) == 2 and (got["width"], got["height"]) == (1536, 689)


def test_multipart_upload_and_options(make_client, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = make_client()
    name = "../../evil name.jpg"
    r = c.post("/v1/align?dense=true&refine=true", files={"file": (name, photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 2 and len(faces[0]["vertices"]) == 38365
    assert r.json()["image"] is None
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent.parent / "evil name.jpg").exists()
    # user boxes skip detection: one box → one face with score 1
    box = [[228.9, 103.1, 466.1, 390.7]]
    r = c.post(f"/v1/align?boxes={json.dumps(box)}", content=photo)
    assert [f["score"] for f in r.json()["faces"]] == [1.0]
    _error(c.post("/v1/align?boxes=[[1,2", content=photo), 400, "bad_boxes")
    _error(c.post("/v1/align?boxes=[[5,5,1,1]]", content=photo), 422, "invalid_input")
    _error(c.post("/v1/align?dense=maybe", content=photo), 422, "invalid_parameter")
    _error(c.post("/v1/align", files={"other": ("x.jpg", photo, "image/jpeg")}), 400, "missing_file")


def test_no_face(make_client):
    c = make_client()
    ok, buf = cv2.imencode(".png", np.full((240, 320, 3), 90, np.uint8))
    r = c.post("/v1/align", content=buf.tobytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["faces"] == []
    _error(c.post("/v1/export?format=glb", content=buf.tobytes()), 422, "invalid_input")
    r = c.post("/v1/render?kind=landmarks", content=buf.tobytes())
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(make_client, photo):
    c = make_client()
    _error(c.post("/v1/align", content=b"definitely not an image"), 415, "unsupported_media_type")
    _error(c.post("/v1/align", content=photo, headers={"Content-Type": "text/plain"}), 415)
    _error(c.post("/v1/align", content=photo[:3000]), 400, "bad_image")
    _error(c.post("/v1/align", content=b""), 400, "empty_body")
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0" * 100)
    err = _error(c.post("/v1/align", content=bomb), 413, "image_too_large")
    assert "60000x60000" in err["message"]
    _error(c.post("/v1/render?kind=nope", content=photo), 422, "invalid_parameter")
    _error(c.post("/v1/export?format=stl", content=photo), 422, "invalid_parameter")
    _error(c.post("/v1/export?format=obj&face=7", content=photo), 422, "invalid_input")
    _error(c.get("/v1/nothing"), 404, "not_found")


def test_body_limit_while_reading(make_client, photo):
    c = make_client(max_upload_mb=0.05)          # 52,428 bytes; the photo is larger
    assert len(photo) > 0.05 * 1024 * 1024
    _error(c.post("/v1/align", content=photo), 413, "body_too_large")

    def chunks():                                # no Content-Length: chunked transfer
        for i in range(0, len(photo), 8192):
            yield photo[i:i + 8192]

    _error(c.post("/v1/align", content=chunks()), 413, "body_too_large")
    _error(c.post("/v1/align", files={"file": ("a.jpg", photo, "image/jpeg")}), 413, "body_too_large")


def test_render_and_export(make_client, photo):
    c = make_client()
    for kind in ("mesh", "pose"):
        r = c.post(f"/v1/render?kind={kind}", content=photo)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (689, 1536, 3)
    r = c.post("/v1/export?format=glb&face=1&frame=centered_yup", content=photo)
    assert r.status_code == 200 and r.content[:4] == b"glTF"
    assert r.headers["content-type"] == "model/gltf-binary"
    assert r.headers["content-disposition"] == 'attachment; filename="face1.glb"'
    r = c.post("/v1/export?format=ply", content=photo)
    assert r.content.startswith(b"ply\n") and b"element vertex 38365" in r.content[:400]
    r = c.post("/v1/export?format=obj", content=photo)
    assert r.text.count("\nv ") + r.text.startswith("v ") >= 38365


def test_live_session_tracks_ids(make_client, photo):
    c = make_client()
    ids = []
    for t in (0, 40, 80):
        r = c.post(f"/v1/live?session=testsession1&t={t}", content=photo)
        assert r.status_code == 200, r.text
        ids.append(sorted(f["track_id"] for f in r.json()["faces"]))
    assert ids == [[0, 1]] * 3
    _error(c.post("/v1/live?session=testsession1&t=10", content=photo), 422, "invalid_input")
    _error(c.post("/v1/live?session=../x&t=10", content=photo), 422, "invalid_parameter")


def test_token(make_client, photo):
    c = make_client(token="s3cret")
    err = _error(c.post("/v1/align", content=photo), 401, "unauthorized")
    assert "Bearer" in err["message"]
    _error(c.post("/v1/align", content=photo, headers={"Authorization": "Bearer wrong"}), 401)
    _error(c.get("/v1/models", headers={"Authorization": "Basic s3cret"}), 401)
    _error(c.get("/metrics"), 401)
    r = c.post("/v1/align", content=photo, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and len(r.json()["faces"]) == 2
    assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_full_queue_answers_503_with_retry_after(engine, make_client, photo):
    from tddfa.serve.engine import Engine, ServeConfig

    small = Engine(ServeConfig(workers=1, queue=1), aligner=engine.aligner)
    from fastapi.testclient import TestClient

    from tddfa.serve.app import create_app

    c = TestClient(create_app(small.config, small, warm_up=False))
    held = [small.admit(), small.admit()]         # one running, one waiting: the queue is full
    r = c.post("/v1/align", content=photo)
    _error(r, 503, "busy")
    assert int(r.headers["Retry-After"]) >= 1
    for s in held:
        s.release()
    assert c.post("/v1/align", content=photo).status_code == 200
    assert small.admitted == 0
    small.close()


def test_engine_bounds_concurrent_jobs():
    import asyncio

    from tddfa.serve.engine import Busy, Engine, ServeConfig

    eng = Engine(ServeConfig(workers=1, queue=1), aligner=object())
    gate = threading.Event()

    async def main():
        jobs = [asyncio.ensure_future(eng.run(eng.admit(), gate.wait, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            eng.admit()
        assert eng.admitted == 2
        gate.set()
        assert await asyncio.gather(*jobs) == [True, True]

    asyncio.run(main())
    assert eng.admitted == 0
    eng.close()


def test_models_health_metrics_docs(make_client, photo):
    c = make_client()
    c.post("/v1/align", content=photo)
    c.post("/v1/align", content=b"nope")
    m = c.get("/v1/models").json()
    assert m["loaded"]["name"] == "mb05" and {"mesh", "uv"} <= set(m["render_kinds"])
    assert [e["name"] for e in m["models"] if e["loaded"]] == ["mb05"]
    h = c.get("/healthz").json()
    assert h["status"] == "ok" and h["capacity"] == 5
    text = c.get("/metrics").text
    assert 'tddfa_requests_total{method="POST",route="/v1/align",status="200"}' in text
    assert 'tddfa_errors_total{code="unsupported_media_type"}' in text
    assert 'tddfa_request_duration_seconds_bucket{route="/v1/align",le="+Inf"}' in text
    faces = [ln for ln in text.splitlines() if ln.startswith("tddfa_faces_total ")]
    assert faces and int(faces[0].split()[1]) >= 2
    spec = c.get("/openapi.json").json()
    ref = spec["paths"]["/v1/align"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref["$ref"].endswith("/AlignResponse")
    assert "image/*" in spec["paths"]["/v1/render"]["post"]["requestBody"]["content"]
    docs = c.get("/docs").text
    assert "/static/vendor/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert c.get("/static/vendor/swagger-ui-bundle.js").status_code == 200


def test_page_is_self_contained(make_client):
    c = make_client()
    r = c.get("/")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/three-viewer.min.js",
                 "/static/vendor/LICENSE-three.txt"):
        assert c.get(path).status_code == 200, path
    for text in (r.text, c.get("/static/app.js").text):
        assert "http://" not in text and "https://" not in text
    _error(c.get("/static/../app.py"), 404)


def test_cors_is_off_unless_asked(make_client):
    pre = {"Origin": "http://example.org", "Access-Control-Request-Method": "POST"}
    r = make_client().options("/v1/align", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = make_client(cors=("http://example.org",)).options("/v1/align", headers=pre)
    assert r.headers["access-control-allow-origin"] == "http://example.org"


def test_cli_warns_on_public_host_without_token(monkeypatch, capsys):
    import uvicorn

    import tddfa.serve.app
    from tddfa.cli.main import main

    seen = {}
    monkeypatch.setattr(tddfa.serve.app, "create_app", lambda config: seen.update(config=config))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(run=kw))
    assert main(["serve", "--host", "0.0.0.0", "--port", "9", "--cors", "http://a.example"]) == 0
    assert "WARNING" in capsys.readouterr().err
    assert seen["run"]["host"] == "0.0.0.0" and seen["config"].cors == ("http://a.example",)
    assert main(["serve", "--token", "t"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert seen["run"]["host"] == "127.0.0.1"


def test_boxes_of_a_result_reproduce_it(make_client, photo):
    """The page sends the detected boxes (with scores) back for renders and exports: the server
    must then find exactly the same faces without detecting again."""
    c = make_client()
    first = c.post("/v1/align?refine=true", content=photo).json()
    boxes = json.dumps([f["box"] + [f["score"]] for f in first["faces"]])
    again = c.post("/v1/align", params={"refine": "true", "boxes": boxes}, content=photo).json()
    assert again == first


def test_min_face_setting_reaches_the_aligner(shared):
    from tddfa.errors import InputError
    from tddfa.serve.engine import Engine, ServeConfig

    eng = Engine(ServeConfig(min_face=5000))
    try:
        assert eng.aligner.min_face_size == 5000
    finally:
        eng.close()
    with pytest.raises(InputError, match="min_face_size"):
        Engine(ServeConfig(min_face=-1))


def test_server_spin_mode_is_off_by_default_and_reaches_the_sessions(shared, ort_config_entries):
    from tddfa.serve.engine import Engine, ServeConfig

    assert ServeConfig().spin == "off"
    seen = ort_config_entries
    eng = Engine(ServeConfig(spin="run"))
    try:
        eng.aligner.detector  # noqa: B018 - builds the detector's session
    finally:
        eng.close()
    assert seen.count(("session.force_spinning_stop", "1")) == 2
