"""Crash safety: kill -9 the server during a burst of verdicts; every acknowledged verdict survives."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from densevlm.review import session
from densevlm.review.store import ReviewStore

SRC = Path(__file__).resolve().parents[2] / "src"
STATUSES = ("rejected", "unsure")


@pytest.mark.timeout(180)
def test_kill_9_keeps_every_acknowledged_verdict(imported):
    with ReviewStore(imported.db) as store:
        region_ids = [row[0] for row in store.conn.execute("SELECT id FROM regions ORDER BY id")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "densevlm", "review", "serve", "--db", str(imported.db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("review page: http://127.0.0.1:"), line + server.stderr.read()
        base = line.split(": ", 1)[1].strip()
        with httpx.Client(base_url=base, timeout=30) as client:
            acknowledged: list[dict] = []
            failures: list[str] = []
            enough = threading.Event()

            def burst() -> None:
                for i in range(100_000):
                    body = {
                        "region_id": region_ids[i % len(region_ids)],
                        "reviewer": f"rev{i % 3}",
                        "verdict": STATUSES[i % 2],
                    }
                    try:
                        response = client.post("/api/verdict", json=body)
                    except httpx.HTTPError as e:
                        failures.append(type(e).__name__)
                        break
                    if response.status_code == 200:
                        acknowledged.append(response.json())
                    if len(acknowledged) >= 40:
                        enough.set()
                enough.set()

            sender = threading.Thread(target=burst)
            sender.start()
            assert enough.wait(timeout=120)
            os.kill(server.pid, signal.SIGKILL)
            sender.join(timeout=60)
        assert not sender.is_alive()
        assert server.wait(timeout=30) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
        server.stderr.close()

    # the burst was cut off by the kill, not finished
    assert failures, "the server was killed after the burst ended"
    assert len(acknowledged) >= 40

    conn = sqlite3.connect(imported.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = {
            row[0]: row[1:]
            for row in conn.execute("SELECT id, region_id, reviewer, status FROM verdicts WHERE undone_at IS NULL")
        }
    finally:
        conn.close()
    for ack in acknowledged:
        assert rows.get(ack["verdict_id"]) == (ack["region_id"], ack["reviewer"], ack["status"])
    # at most the one request in flight at the kill may be committed without its answer
    assert len(acknowledged) <= len(rows) <= len(acknowledged) + 1
    with ReviewStore(imported.db) as store:
        assert session.add_verdict(store, 1, "after-crash", "unsure")["verdict_id"] > max(rows)
