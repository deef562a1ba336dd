"""``densevlm report``: --review-json rebuilds the demo's review section; bad inputs are one line."""

from __future__ import annotations

import json

from densevlm.cli.main import main
from tests.report.test_report import BIASED, FIXED, _eval, _run
from tests.report.test_review import TAUGHT


def _run_dir(tmp_path):
    return _run(tmp_path, "densevlm", "densevlm", _eval(4.0, 77.0, 45.0, FIXED), _eval(83.0, 8.0, 30.0, BIASED))


def test_review_json_puts_what_review_taught_in_the_page(tmp_path):
    run = _run_dir(tmp_path)
    taught = tmp_path / "review.json"
    taught.write_text(json.dumps({**TAUGHT, "new_words": {"burr": 12, "rivet": 5}, "regions": 17}))
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--review-json", str(taught), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<h2>Expert review</h2>") == 1
    assert ("Review: the expert taught 2 new words (17 regions): their box mAcc 3 % text only -&gt; 31 % with the "
            "reviewed examples; other things 52.1 -&gt; 51.8; stuff 80.0 -&gt; 79.0") in page
    assert "burr (12), rivet (5)" in page
    plain = tmp_path / "plain.html"
    assert main(["report", str(run), "--out", str(plain)]) == 0
    assert "Expert review" not in plain.read_text()


def test_a_bad_review_json_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = _run_dir(tmp_path)
    taught = tmp_path / "review.json"
    taught.write_text(json.dumps({**TAUGHT, "regions": "many"}))
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--review-json", str(taught), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{taught}: 'regions' must be a count" in err and "Traceback" not in err
    assert not out.exists()


def test_the_output_may_not_replace_an_input(tmp_path, capsys):
    run = _run_dir(tmp_path)
    taught = tmp_path / "review.json"
    taught.write_text(json.dumps(TAUGHT))
    assert main(["report", str(run), "--review-json", str(taught), "--out", str(taught), "--overwrite"]) == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert json.loads(taught.read_text()) == TAUGHT
