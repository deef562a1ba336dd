"""The report's review section: what the expert taught (``review.json``) and the review statistics."""

from __future__ import annotations

import json

import pytest

from densevlm.errors import DenseVLMError
from densevlm.report import write_report
from densevlm.report.review import review_section, taught_line
from tests.report.test_report import BIASED, FIXED, _eval, _run

TAUGHT = {"model": "densevlm/last.pt", "new_words": {"burr": 10, "weld spatter": 10, "rivet": 7}, "regions": 27,
          "shots": 10, "text_only": {"new_words": 3.4, "other_things": 52.14, "stuff": 80.0, "fg_bias": 5.0},
          "reviewed": {"new_words": 31.2, "other_things": 51.75, "stuff": 79.04, "fg_bias": 7.25}}


def test_the_line_counts_the_new_words_and_gives_both_scores():
    assert taught_line(TAUGHT) == ("the expert taught 3 new words (27 regions): their box mAcc 3 % text only -> 31 % "
                                   "with the reviewed examples; other things 52.1 -> 51.8; stuff 80.0 -> 79.0; "
                                   "background called a part 5.0 -> 7.2 %")
    one = {**TAUGHT, "new_words": {"burr": 1}, "regions": 1, "reviewed": {**TAUGHT["reviewed"], "new_words": float("nan")}}
    assert taught_line(one).startswith("the expert taught 1 new word (1 regions): their box mAcc 3 % text only -> n/a ")
    confirmed = {**TAUGHT, "regions": 187}  # 160 regions of the known classes confirmed besides the new words
    assert taught_line(confirmed).startswith("the expert taught 3 new words (27 regions, and confirmed 160 of the known "
                                             "classes): their box mAcc 3 %")


def test_the_section_shows_what_was_given_and_nothing_without_files():
    assert review_section(None, None) == ""
    html = review_section(None, TAUGHT)
    assert html.startswith("<h2>Expert review</h2>") and "the expert taught 3 new words (27 regions)" in html
    assert "burr (10), weld spatter (10), rivet (7)" in html and "<ul>" not in html
    both = review_section({"agreement": {"rate": 0.75}}, TAUGHT)
    assert both.count("<h2>") == 1 and "<li>agreement:" in both


def test_the_report_reads_review_json(tmp_path):
    before = _eval(83.0, 8.0, 30.0, BIASED)
    runs = [_run(tmp_path, "densevlm", "densevlm", _eval(4.0, 77.0, 45.0, FIXED), before)]
    path = tmp_path / "review.json"
    path.write_text(json.dumps(TAUGHT))
    page = write_report(runs, tmp_path / "r.html", taught=path).read_text()
    assert "Review: the expert taught 3 new words (27 regions): their box mAcc 3 % text only -&gt; 31 %" in page
    with pytest.raises(DenseVLMError, match="missing.json: not found"):
        write_report(runs, tmp_path / "r2.html", taught=tmp_path / "missing.json")
    path.write_text(json.dumps({**TAUGHT, "reviewed": {"new_words": 31.2}}))
    with pytest.raises(DenseVLMError, match=r"review.json: 'reviewed' must hold the numbers new_words, other_things, stuff, fg_bias"):
        write_report(runs, tmp_path / "r3.html", taught=path)
    assert not (tmp_path / "r3.html").exists()
