"""``tddfa serve``: the REST API and web page (FastAPI + uvicorn, the ``serve`` extra)."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("tddfa")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP API (/v1) and the web page with a 3-D viewer",
        description=(
            "Serve POST /v1/align, /v1/render, /v1/export, /v1/live, GET /v1/models, /healthz, "
            "/metrics, the API docs at /docs and a web page at /. Models are loaded once; "
            "inference runs on --workers threads with --queue more requests waiting (a full "
            "queue answers 503 with Retry-After). Needs: pip install 'tddfa[serve]'."
        ),
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every /v1 call and /metrics")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body, MiB (20)")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="largest image (declared width x height), megapixels (40)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; default: CORS off)")
    p.add_argument("--workers", type=int, default=1, help="inference threads (1)")
    p.add_argument("--queue", type=int, default=16, help="requests that may wait for a worker (16)")
    p.add_argument("--model", default="mb05", help="regressor: mb05 (default) or mb1")
    p.add_argument("--threshold", type=float, default=0.5, help="detector score threshold (0.5)")
    p.add_argument("--min-face", type=float, default=0.0, metavar="PX",
                   help="photos: ignore faces under PX (sqrt(w*h) of the landmark box; 0 = no "
                        "limit); the detector then runs on a smaller image")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per session (0 = auto)")
    p.add_argument("--spin", default="off", choices=["off", "run", "on"],
                   help="how ONNX Runtime's idle threads wait (off: sleep, the default for a "
                        "server; run: spin within a run; on: keep spinning)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (info)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tddfa.errors import InputError, require

    require("fastapi", "serve")
    require("uvicorn", "serve")
    require("multipart", "serve")
    import uvicorn

    from tddfa.serve.app import create_app
    from tddfa.serve.engine import ServeConfig

    if args.workers < 1 or args.queue < 0:
        raise InputError(f"--workers must be >= 1 and --queue >= 0, got {args.workers}, {args.queue}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise InputError("--max-upload-mb and --max-megapixels must be > 0")
    if args.host not in _LOOPBACK and not args.token:
        print(f"tddfa serve: WARNING: listening on {args.host} without --token: anyone who can reach "
              "this port can use the API. Pass --token SECRET (and put TLS in front).", file=sys.stderr)
    config = ServeConfig(model=args.model, threshold=args.threshold, min_face=args.min_face,
                         spin=args.spin, threads=args.threads,
                         workers=args.workers, queue=args.queue, token=args.token,
                         max_upload_mb=args.max_upload_mb,
                         max_pixels=int(args.max_megapixels * 1e6), cors=tuple(args.cors))
    app = create_app(config)
    print(f"tddfa serve: http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
    return 0
