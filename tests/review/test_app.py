"""The HTTP API over a real uvicorn server: verdicts, undo, claims, path traversal, token and cookie."""

from __future__ import annotations

import http.client
import sqlite3
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import live_server

TOKEN = "t0ken-with/odd+chars"


def raw_get(base: str, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2e``)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def test_review_flow_over_http(imported):
    with live_server(imported.db) as base, httpx.Client(base_url=base, timeout=30) as client:
        vocab = client.get("/api/vocabulary").json()["classes"]
        assert [c["name"] for c in vocab] == ["bolt", "scratch", "nut", "conveyor belt", "steel plate"]
        first = client.get("/api/next", params={"reviewer": "ann"}).json()["region"]
        assert first["key"] == "c.png#0"
        # a second reviewer at the same time gets another region (the first is held for ann)
        other = client.get("/api/next", params={"reviewer": "bob"}).json()["region"]
        assert other["key"] == "sub/b.png#0"

        saved = client.post("/api/verdict", json={"region_id": first["id"], "reviewer": "ann", "verdict": "category", "category": "nut"})
        assert saved.status_code == 200
        assert (saved.json()["status"], saved.json()["category"]) == ("corrected", "nut")
        conn = sqlite3.connect(imported.db)
        stored = conn.execute("SELECT reviewer, status FROM verdicts WHERE id = ?", (saved.json()["verdict_id"],)).fetchone()
        conn.close()
        assert stored == ("ann", "corrected")

        missing_thing = client.post(
            "/api/verdict", json={"region_id": other["id"], "reviewer": "bob", "verdict": "category", "category": "rust"}
        )
        assert missing_thing.status_code == 400 and "thing or stuff" in missing_thing.json()["detail"]
        added = client.post(
            "/api/verdict",
            json={"region_id": other["id"], "reviewer": "bob", "verdict": "category", "category": "rust", "thing": False},
        ).json()
        assert added["new_class"] is True
        assert {"name": "rust", "thing": False} in [
            {"name": c["name"], "thing": c["thing"]} for c in client.get("/api/vocabulary").json()["classes"]
        ]
        client.post("/api/verdict", json={"region_id": other["id"], "reviewer": "ann", "verdict": "rejected"})
        conflicts = client.get("/api/conflicts").json()["conflicts"]
        assert [c["key"] for c in conflicts] == ["sub/b.png#0"]

        undone = client.post("/api/undo", json={"reviewer": "ann"}).json()
        assert undone["undone"]["status"] == "rejected" and undone["region"]["key"] == "sub/b.png#0"
        assert client.get("/api/conflicts").json()["conflicts"] == []
        progress = client.get("/api/progress", params={"reviewer": "ann"}).json()
        assert (progress["total"], progress["reviewed"], progress["mine"]) == (8, 2, 1)
        history = client.get("/api/history", params={"reviewer": "ann"}).json()["verdicts"]
        assert [(v["key"], v["category"]) for v in history] == [("c.png#0", "nut")]

        assert client.post("/api/verdict", json={"region_id": 9999, "reviewer": "ann", "verdict": "unsure"}).status_code == 404
        assert client.post("/api/verdict", json={"region_id": 1, "reviewer": "ann", "verdict": "maybe"}).status_code == 422
        form = client.post("/api/verdict", content=b"region_id=1&reviewer=ann&verdict=unsure",
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 422
        image = client.get(first["image_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == (imported.images / "c.png").read_bytes()
        page = client.get("/")
        assert "<script src=\"/static/app.js\"" in page.text and "https://" not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]


TRAVERSALS = [
    "/api/images/../../../../etc/passwd",
    "/api/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/images/%2E%2E/%2E%2E/etc/passwd",
    "/api/images/%252e%252e%252fetc%252fpasswd",
    "/api/images//etc/passwd",
    "/api/images/%2Fetc%2Fpasswd",
    "/api/images/1%2F..%2F..%2Fcandidates.jsonl",
    "/api/images/-1",
    "/api/images/1.png",
    "/api/images/99",
    "/api/regions/..%2F1",
    "/api/regions/%2e%2e",
    "/static/../review/store.py",
    "/static/..%2Fstore.py",
    "/static/%2e%2e%2fstore.py",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/index.html/../../store.py",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/a.png",
    "/images/a.png",
    "/api/images/a.png",
]


def test_path_traversal_is_404(imported):
    secret = (imported.root / "candidates.jsonl").read_bytes()
    with live_server(imported.db) as base:
        assert raw_get(base, "/api/images/1").status == 200
        assert raw_get(base, "/static/app.js").status == 200
        for path in TRAVERSALS:
            response = raw_get(base, path)
            assert response.status == 404, path
            assert b"root:" not in response.body and secret not in response.body


def test_token_header_cookie(imported):
    with live_server(imported.db, token=TOKEN) as base:
        for path in ["/", "/static/app.js", "/api/progress", "/api/images/1", "/api/next?reviewer=ann"]:
            assert raw_get(base, path).status == 401, path
            assert raw_get(base, path, {"Authorization": "Bearer wrong"}).status == 401, path
            assert raw_get(base, path, {"Authorization": f"Bearer {TOKEN}"}).status == 200, path
            assert raw_get(base, path, {"Cookie": "densevlm_review=wrong"}).status == 401, path
        # the query token is only taken on the page, and is exchanged for a cookie
        from urllib.parse import quote

        assert raw_get(base, f"/api/progress?token={quote(TOKEN, safe='')}").status == 401
        assert raw_get(base, "/?token=wrong").status == 401
        # the token check comes before routing: traversal without the token is refused too
        assert raw_get(base, "/api/images/..%2F..%2Fetc%2Fpasswd").status == 401
        assert raw_get(base, "/api/images/..%2F..%2Fetc%2Fpasswd", {"Authorization": f"Bearer {TOKEN}"}).status == 404

        with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
            first = client.get("/", params={"token": TOKEN})
            assert first.status_code == 303 and first.headers["location"] == "/"
            cookie = first.headers["set-cookie"]
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
            assert client.cookies.get("densevlm_review")
            assert client.get("/").status_code == 200
            assert client.get("/api/images/1").status_code == 200
            region = client.get("/api/next", params={"reviewer": "ann"}).json()["region"]
            saved = client.post("/api/verdict", json={"region_id": region["id"], "reviewer": "ann", "verdict": "unsure"})
            assert saved.status_code == 200
        with httpx.Client(base_url=base, timeout=30) as stranger:
            refused = stranger.post("/api/verdict", json={"region_id": region["id"], "reviewer": "eve", "verdict": "rejected"})
            assert refused.status_code == 401
    conn = sqlite3.connect(imported.db)
    assert conn.execute("SELECT reviewer, status FROM verdicts").fetchall() == [("ann", "unsure")]
    conn.close()


def test_create_app_needs_a_database(tmp_path):
    from densevlm.errors import DenseVLMError
    from densevlm.review.app import create_app

    with pytest.raises(DenseVLMError, match="review database not found"):
        create_app(tmp_path / "missing.sqlite")


def test_page_url_carries_token():
    from densevlm.review.app import page_url

    assert page_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"
    assert page_url("0.0.0.0", 80, "a b/c") == "http://127.0.0.1:80/?token=a%20b%2Fc"
    assert page_url("::1", 1) == "http://[::1]:1/"


def test_a_typed_class_is_added_once_then_assigned_by_name(imported):
    with live_server(imported.db) as base, httpx.Client(base_url=base, timeout=30) as client:
        missing = client.post("/api/classes", json={"name": "porosity", "reviewer": "ann"})
        assert missing.status_code == 400 and "thing or stuff" in missing.json()["detail"]
        added = client.post("/api/classes", json={"name": "  porosity ", "thing": True, "reviewer": "ann"}).json()
        assert added["new_class"] is True and added["class"]["name"] == "porosity" and added["class"]["thing"] is True
        again = client.post("/api/classes", json={"name": "Porosity", "reviewer": "bob"}).json()
        assert again == {"class": added["class"], "new_class": False}
        assert "porosity" in [c["name"] for c in client.get("/api/vocabulary").json()["classes"]]
        bad = client.post("/api/classes", json={"name": "a,b", "thing": True, "reviewer": "ann"})
        assert bad.status_code == 400 and "not allowed" in bad.json()["detail"]
        for _ in range(2):  # later regions take it by name, no thing flag needed
            region = client.get("/api/next", params={"reviewer": "ann"}).json()["region"]
            saved = client.post("/api/verdict", json={"region_id": region["id"], "reviewer": "ann",
                                                      "verdict": "category", "category": "porosity"}).json()
            assert (saved["category"], saved["new_class"]) == ("porosity", False)


def test_an_image_browsers_cannot_draw_is_sent_as_png(dataset, tmp_path):
    import io

    from PIL import Image

    from densevlm.review.importing import import_candidates

    from .conftest import header, region, write_candidates

    Image.open(dataset.images / "c.png").save(dataset.images / "c.tif")
    regions = [region("c.tif#0", "c.tif", (48, 32), [2.0, 2.0, 24.0, 30.0], [("bolt", 0.5)]),
               region("a.png#0", "a.png", (64, 64), [4.0, 4.0, 20.0, 20.0], [("bolt", 0.8)])]
    import_candidates(dataset.db, write_candidates(tmp_path / "tif.jsonl", header(dataset.images), regions))
    with live_server(dataset.db) as base:
        tif, png = raw_get(base, "/api/images/1"), raw_get(base, "/api/images/2")
    assert tif.status == 200 and tif.getheader("content-type") == "image/png"
    drawn = Image.open(io.BytesIO(tif.body))
    assert drawn.format == "PNG" and drawn.size == (48, 32)
    assert drawn.convert("RGB").tobytes() == Image.open(dataset.images / "c.png").convert("RGB").tobytes()
    assert png.body == (dataset.images / "a.png").read_bytes()  # a PNG goes out as it is
