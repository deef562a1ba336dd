"""The review page in headless Chromium: two reviewers at once, keyboard only, verdicts persist."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from densevlm.review import session
from densevlm.review.store import ReviewStore

from .conftest import live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
COUNT_COLOURS = """() => {
  const c = document.getElementById('zoom');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 31) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
  return seen.size;
}"""
IMAGES_LOADED = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


class Reviewer:
    """One browser page, with every console error, page error and failed request recorded."""

    def __init__(self, context, base: str, name: str) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.goto(base + "/")
        self.expect(self.page.locator("#reviewer-dialog")).to_be_visible()
        self.page.locator("#reviewer-input").fill(name)
        self.page.keyboard.press("Enter")
        self.settle()

    def settle(self) -> str:
        """Wait until the page is idle and shows a fully drawn region; returns the region key."""
        page = self.page
        self.expect(page.locator("body")).to_have_attribute("data-busy", "0")
        self.expect(page.locator("#status")).not_to_have_class("error")
        key = page.locator("#region-key").text_content()
        self.expect(page.locator("#stage")).to_have_attribute("data-region", key)
        assert page.evaluate(IMAGES_LOADED)
        assert page.evaluate(COUNT_COLOURS) > 10  # the zoomed crop shows image pixels
        return key

    def candidate(self, index: int) -> str:
        return self.page.locator("#candidates button").nth(index).get_attribute("data-category")

    def press(self, *keys: str) -> str:
        for key in keys:
            self.page.keyboard.press(key)
        return self.settle()

    def type_category(self, name: str) -> None:
        self.page.keyboard.press("t")
        self.expect(self.page.locator("#category-input")).to_be_focused()
        self.page.keyboard.type(name)
        self.page.keyboard.press("Enter")


@contextmanager
def one_reviewer(db: Path, name: str = "ann") -> Iterator[Reviewer]:
    """A live review server on ``db`` and one reviewer's page in headless Chromium (skips without it)."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not found at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with live_server(db) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield Reviewer(browser.new_context(viewport={"width": 1280, "height": 900}), base, name)
        finally:
            browser.close()


def status_for(top1: str, category: str) -> tuple[str, str]:
    return ("accepted" if category == top1 else "corrected", category)


def test_two_reviewers_with_the_keyboard(imported):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not found at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with live_server(imported.db) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            alice = Reviewer(browser.new_context(viewport={"width": 1280, "height": 900}), base, "alice")
            bob = Reviewer(browser.new_context(viewport={"width": 1280, "height": 900}), base, "bob")
            want_alice: dict[str, tuple[str, str]] = {}
            want_bob: dict[str, tuple[str, str]] = {}
            page = alice.page

            # small images are shown upscaled, pixelated
            rendering = page.evaluate(
                "() => { const i = document.getElementById('full-image');"
                " return [getComputedStyle(i).imageRendering, i.getBoundingClientRect().width, i.naturalWidth]; }"
            )
            assert rendering[0] == "pixelated" and rendering[1] >= 4 * rendering[2]

            key = alice.settle()
            assert bob.settle() != key  # reviewers working at the same time get different regions
            top1 = alice.candidate(0)
            after = alice.press("1")
            want_alice[key] = ("accepted", top1)
            assert after != key

            key_b = bob.settle()
            bob.press("x")
            want_bob[key_b] = ("rejected", None)

            key = after
            top1 = alice.candidate(0)
            alice.type_category("nut")
            after = alice.settle()
            want_alice[key] = status_for(top1, "nut")

            key = after
            after = alice.press("x")
            want_alice[key] = ("rejected", None)

            key = after
            alice.press("q")
            # undo brings the region back, with no verdict of alice's on it
            assert alice.press("u") == key
            alice.expect(page.locator("#status")).to_contain_text("Undone your verdict on " + key)
            alice.expect(page.locator("#my-verdict")).to_be_hidden()
            alice.type_category("washer")
            alice.expect(page.locator("#new-class")).to_be_visible()
            alice.expect(page.locator("#new-thing")).to_be_focused()
            page.keyboard.press("Enter")
            after = alice.settle()
            want_alice[key] = ("corrected", "washer")

            key_b = bob.settle()
            second = bob.candidate(1)
            bob.press("2")
            want_bob[key_b] = ("corrected", second)

            key = after
            second = alice.candidate(1)
            alice.press("2")
            assert alice.press("Control+z") == key  # Ctrl+Z undoes as well
            alice.expect(page.locator("#my-verdict")).to_be_hidden()
            alice.press("2")
            want_alice[key] = ("corrected", second)
            assert len(want_alice) == 5

            # reload: the verdicts are still there, on the page and in the database
            page.reload()
            alice.settle()
            history = page.locator("#history li")
            alice.expect(history).to_have_count(5)
            shown = set(history.all_text_contents())
            described = {
                f"{k}: {c} ({s})" if c else f"{k}: not a region" for k, (s, c) in want_alice.items()
            }
            assert shown == described
            reviewed = len(set(want_alice) | set(want_bob))
            alice.expect(page.locator("#progress-text")).to_have_text(f"{reviewed} / 8 reviewed · 5 by you")
            assert "washer" in page.locator("#vocabulary-list option").evaluate_all("os => os.map(o => o.value)")
            assert alice.problems == [] and bob.problems == []
        finally:
            browser.close()

    with ReviewStore(imported.db) as store:
        for reviewer, want in (("alice", want_alice), ("bob", want_bob)):
            current = {v["key"]: (v["status"], v["category"]) for v in session.history(store, reviewer, 100)}
            assert current == want, reviewer
        rows = store.conn.execute(
            "SELECT COUNT(*), SUM(undone_at IS NOT NULL) FROM verdicts WHERE reviewer = 'alice'"
        ).fetchone()
        washer = store.find_class("washer")
    assert tuple(rows) == (7, 2)
    assert washer is not None and washer["thing"] == 1 and washer["added_by"] == "alice"


def test_a_new_word_is_typed_once_then_one_key(imported):
    """Type "porosity" once (a new thing); it is pinned to key 6; the next regions take it with "6"."""
    with one_reviewer(imported.db) as ann:
        page = ann.page
        ann.expect(page.locator("#quick")).to_be_hidden()
        first = ann.settle()
        ann.type_category("porosity")
        ann.expect(page.locator("#new-thing")).to_be_focused()
        page.keyboard.press("Enter")
        second = ann.settle()
        ann.expect(page.locator("#quick button")).to_have_text(["6 porosity"])
        third = ann.press("6")
        fourth = ann.press("6")
        page.reload()  # the quick key survives a reload
        ann.settle()
        ann.expect(page.locator("#quick button")).to_have_text(["6 porosity"])
        assert ann.problems == []
    with ReviewStore(imported.db) as store:
        current = {v["key"]: v["category"] for v in session.history(store, "ann", 10)}
    assert current == {first: "porosity", second: "porosity", third: "porosity"} and fourth not in current


def test_a_new_word_can_be_added_as_a_defect(imported):
    """Type "burr", choose "a defect": the class is a thing listed among the database's defects."""
    with one_reviewer(imported.db) as ann:
        first = ann.settle()
        ann.type_category("burr")
        ann.expect(ann.page.locator("#new-defect")).to_be_visible()
        ann.page.locator("#new-defect").click()
        ann.settle()
        ann.expect(ann.page.locator("#quick button")).to_have_text(["6 burr"])
        assert ann.problems == []
    with ReviewStore(imported.db) as store:
        assert store.defect_names() == ["burr"]
        assert next(c for c in store.classes() if c["name"] == "burr")["thing"]
        assert {v["key"]: v["category"] for v in session.history(store, "ann", 10)} == {first: "burr"}
