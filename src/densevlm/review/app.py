"""The review web page and its JSON API (FastAPI; the page is plain HTML/CSS/JS from ``static/``).

HTTP API (JSON; boxes are XYXY in original image pixels, confidences and probabilities in [0, 1]):

* ``GET /`` the page; ``GET /static/{app.js,style.css}`` its script and style.
* ``GET /api/vocabulary`` every class: ``{"classes": [{"id", "name", "synonyms", "thing", "source"}]}``.
* ``GET /api/next?reviewer=R[&category=C][&min_conf=x][&max_conf=y][&order=asc|desc][&exclude=1,2]``
  the next region R has not judged, ``{"region": {...} | null}``; regions nobody judged
  come first, low confidence first by default. A region handed out is held for R for two
  minutes so that reviewers working at the same time get different regions.
* ``GET /api/regions/{id}?reviewer=R`` one region (``my_verdict`` is R's current verdict).
* ``GET /api/images/{image_id}`` an imported image file (by database id only).
* ``POST /api/verdict`` ``{"region_id", "reviewer", "verdict": "category"|"rejected"|"unsure",
  "category"?, "thing"?}``; answers 200 with the stored verdict only after it is committed.
  An unknown category becomes a new class and needs ``"thing": true|false``.
* ``POST /api/classes`` ``{"name", "thing"?, "defect"?, "reviewer"}`` adds a class a reviewer typed
  (``thing`` required when the name is new; ``"defect": true`` makes it a thing that makes an
  inspected item NG, the vocabulary's ``[defects]``), or finds the existing one:
  ``{"class": {...}, "new_class": bool}``.
  The page pins it to a quick key (6-9, 0) so later regions take it with one key press.
* ``POST /api/undo`` ``{"reviewer"}`` undoes R's newest verdict: ``{"undone": {...} | null, "region": {...}}``.
* ``GET /api/progress[?reviewer=R]`` totals, per teacher top-1 category and per status.
* ``GET /api/history?reviewer=R[&limit=n]`` R's newest current verdicts.
* ``GET /api/conflicts`` regions whose reviewers' current verdicts disagree.

With a token, every request needs it: ``Authorization: Bearer T``, or the ``densevlm_review``
cookie that ``GET /?token=T`` sets (HttpOnly, SameSite=Strict) before redirecting to ``/``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from densevlm.errors import DenseVLMError
from densevlm.review import resolve, session
from densevlm.review.progress import review_progress
from densevlm.review.store import ReviewStore

if TYPE_CHECKING:
    import uvicorn

__all__ = ["create_app", "make_server", "page_url", "TOKEN_COOKIE"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
TOKEN_COOKIE = "densevlm_review"
CLAIM_SECONDS = 120.0
_ID = re.compile(r"[0-9]{1,18}")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class VerdictIn(BaseModel):
    region_id: int
    reviewer: str = Field(min_length=1, max_length=64)
    verdict: Literal["category", "rejected", "unsure"]
    category: Optional[str] = Field(default=None, max_length=200)
    thing: Optional[bool] = None


class ClassIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    thing: Optional[bool] = None
    defect: bool = False
    reviewer: str = Field(min_length=1, max_length=64)


class UndoIn(BaseModel):
    reviewer: str = Field(min_length=1, max_length=64)


class _Claims:
    """Regions recently handed to a reviewer by /api/next (in memory, one region per reviewer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_region: dict[int, tuple[str, float]] = {}

    def held_by_others(self, reviewer: str) -> set[int]:
        now = time.monotonic()
        with self._lock:
            return {rid for rid, (who, until) in self._by_region.items() if who != reviewer and until > now}

    def claim(self, region_id: int, reviewer: str) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [rid for rid, (who, until) in self._by_region.items() if who == reviewer or until <= now]
            for rid in stale:
                del self._by_region[rid]
            self._by_region[region_id] = (reviewer, now + CLAIM_SECONDS)

    def release(self, region_id: int, reviewer: str) -> None:
        with self._lock:
            if self._by_region.get(region_id, ("", 0.0))[0] == reviewer:
                del self._by_region[region_id]


def _parse_id(text: str) -> int:
    """A database id from a path segment; anything but plain digits is a 404."""
    if not _ID.fullmatch(text):
        raise HTTPException(status_code=404, detail="not found")
    return int(text)


def _token_ok(supplied: Optional[str], token: str) -> bool:
    return supplied is not None and hmac.compare_digest(supplied.encode("utf-8"), token.encode("utf-8"))


def create_app(db_path: str | Path, token: Optional[str] = None) -> FastAPI:
    """The review app over an existing review database; with ``token``, every request must carry it."""
    db_path = Path(db_path)
    token = token or None
    ReviewStore(db_path).close()  # a one-line error now rather than on the first request
    app = FastAPI(title="densevlm review", docs_url=None, redoc_url=None, openapi_url=None)
    claims = _Claims()
    # the cookie carries a digest of the token (plain hex), not the token itself
    cookie_value = hashlib.sha256(f"densevlm-review:{token}".encode("utf-8")).hexdigest() if token else ""

    def get_store() -> Iterator[ReviewStore]:
        store = ReviewStore(db_path)
        try:
            yield store
        finally:
            store.close()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if token is not None:
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                allowed = _token_ok(auth[7:].strip(), token)
            else:
                allowed = _token_ok(request.cookies.get(TOKEN_COOKIE), cookie_value)
            if not allowed:
                query_token = request.query_params.get("token")
                if request.url.path == "/" and request.method == "GET" and _token_ok(query_token, token):
                    response: Response = RedirectResponse("/", status_code=303)
                    response.set_cookie(TOKEN_COOKIE, cookie_value, httponly=True, samesite="strict", path="/")
                else:
                    response = JSONResponse(
                        {"detail": "missing or wrong token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                    )
                response.headers["Referrer-Policy"] = "no-referrer"
                return response
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/") and not request.url.path.startswith("/api/images/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(DenseVLMError)
    async def user_error(request: Request, exc: DenseVLMError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(session.RegionNotFound)
    async def no_region(request: Request, exc: session.RegionNotFound) -> JSONResponse:
        return JSONResponse({"detail": "no such region"}, status_code=404)

    @app.exception_handler(sqlite3.OperationalError)
    async def busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        logger.warning("database error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"database busy or unavailable ({exc}); try again"}, status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail="not found")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name])

    @app.get("/api/images/{image_id}")
    def image(image_id: str, store: ReviewStore = Depends(get_store)) -> Response:
        path = session.image_file(store, _parse_id(image_id))
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        cache = {"Cache-Control": "private, max-age=3600"}
        if path.suffix.lower() in BROWSER_IMAGE_SUFFIXES:
            return FileResponse(path, headers=cache)
        return Response(_as_png(path), media_type="image/png", headers=cache)  # a TIFF: browsers do not draw it

    @app.get("/api/vocabulary")
    def vocabulary(store: ReviewStore = Depends(get_store)) -> dict:
        return {"classes": store.classes()}

    @app.get("/api/next")
    def next_region(
        reviewer: str = Query(min_length=1, max_length=64),
        category: Optional[str] = Query(default=None, max_length=200),
        min_conf: Optional[float] = None,
        max_conf: Optional[float] = None,
        order: Literal["asc", "desc"] = "asc",
        exclude: str = Query(default="", max_length=20000),
        store: ReviewStore = Depends(get_store),
    ) -> dict:
        reviewer = session.clean_reviewer(reviewer)
        skipped = {int(part) for part in exclude.split(",") if _ID.fullmatch(part.strip())}
        held = claims.held_by_others(reviewer)
        filters = dict(category=category or None, min_conf=min_conf, max_conf=max_conf, order=order)
        region = session.next_region(store, reviewer, exclude=skipped | held, **filters)
        if region is None and held:
            region = session.next_region(store, reviewer, exclude=skipped, **filters)
        if region is not None:
            claims.claim(region["id"], reviewer)
        return {"region": region}

    @app.get("/api/regions/{region_id}")
    def region(region_id: str, reviewer: Optional[str] = None, store: ReviewStore = Depends(get_store)) -> dict:
        found = session.region(store, _parse_id(region_id), reviewer)
        if found is None:
            raise HTTPException(status_code=404, detail="no such region")
        return {"region": found}

    @app.post("/api/verdict")
    def verdict(body: VerdictIn, store: ReviewStore = Depends(get_store)) -> dict:
        stored = session.add_verdict(store, body.region_id, body.reviewer, body.verdict, body.category, body.thing)
        claims.release(body.region_id, stored["reviewer"])
        return stored

    @app.post("/api/classes")
    def add_class(body: ClassIn, store: ReviewStore = Depends(get_store)) -> dict:
        return session.add_class(store, body.name, body.thing, body.reviewer, defect=body.defect)

    @app.post("/api/undo")
    def undo(body: UndoIn, store: ReviewStore = Depends(get_store)) -> dict:
        undone = session.undo(store, body.reviewer)
        region = session.region(store, undone["region_id"], body.reviewer) if undone else None
        if region is not None:
            claims.claim(region["id"], undone["reviewer"])
        return {"undone": undone, "region": region}

    @app.get("/api/progress")
    def progress(reviewer: Optional[str] = Query(default=None, max_length=64), store: ReviewStore = Depends(get_store)) -> dict:
        return review_progress(store, reviewer or None)

    @app.get("/api/history")
    def history(
        reviewer: str = Query(min_length=1, max_length=64),
        limit: int = Query(default=20, ge=1, le=500),
        store: ReviewStore = Depends(get_store),
    ) -> dict:
        return {"verdicts": session.history(store, reviewer, limit)}

    @app.get("/api/conflicts")
    def conflicts(store: ReviewStore = Depends(get_store)) -> dict:
        return {"conflicts": resolve.conflicts(store)}

    return app


BROWSER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
"""Image files every browser draws as they are; the others are sent as PNG."""


def _as_png(path: Path) -> bytes:
    """The image as the PNG bytes a browser draws (EXIF orientation applied, as for the boxes)."""
    import io

    from densevlm.imaging import open_image

    buf = io.BytesIO()
    open_image(path).save(buf, format="PNG")
    return buf.getvalue()


def page_url(host: str, port: int, token: Optional[str] = None) -> str:
    """The URL to open the page (with ``?token=`` when a token is set); wildcard hosts become 127.0.0.1."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}/"
    return url + (f"?token={quote(token, safe='')}" if token else "")


def make_server(
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: Optional[str] = None,
    log_level: str = "warning",
) -> tuple["uvicorn.Server", socket.socket]:
    """A ``uvicorn.Server`` for the app and its bound listening socket (``port`` 0 picks a free port).

    Run it with ``server.run(sockets=[sock])`` (blocks) or in a thread; ``sock.getsockname()[1]``
    is the port. Stop it with ``server.should_exit = True``.
    """
    import uvicorn

    app = create_app(db_path, token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DenseVLMError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, log_config=None, timeout_graceful_shutdown=5)
    return uvicorn.Server(config), sock
