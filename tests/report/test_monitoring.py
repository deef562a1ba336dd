"""The report's line-monitoring section, from drift reports the real ``densevlm monitor --history`` wrote."""

from __future__ import annotations

import json
import math
import shutil
import time
from html.parser import HTMLParser

import pytest

from densevlm.cli.main import main
from densevlm.errors import DenseVLMError
from densevlm.report import write_report
from densevlm.report.monitoring import P_CAP, load_history, monitoring_section, neg_log10, summary_line
from tests.report.test_report import BIASED, FIXED, _eval, _run

# (batch folder, synth seed, shift); checked in this order, one second apart so each has its own time stamp
BATCHES = [("same", 22, None), ("dark", 23, "lighting"), ("again", 24, None)]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """``monitor --history`` of three 20-image batches against a 20-image reference: same line, darker, same."""
    root = tmp_path_factory.mktemp("line")
    assert main(["synth", "--out", str(root / "ref"), "--n", "20", "--seed", "21", "--defect-rate", "0.5", "-q"]) == 0
    for name, seed, shift in BATCHES:
        argv = ["synth", "--out", str(root / name), "--n", "20", "--seed", str(seed), "--defect-rate", "0.5", "-q"]
        assert main(argv + (["--shift", shift] if shift else [])) == 0
    reference = ["--reference", str(root / "ref"), "--save-reference", str(root / "ref.json")]
    for i, (name, _, _) in enumerate(BATCHES):
        if i:
            time.sleep(1.0)  # `created` has one-second resolution
        argv = ["monitor", "--model", "tiny-student", *reference, "--batch", str(root / name),
                "--history", str(root / "history"), "--permutations", "300", "-q"]
        assert main(argv) == 0
        reference = ["--reference", str(root / "ref.json")]
    return root / "history"


@pytest.fixture
def runs(tmp_path):
    return [_run(tmp_path, "densevlm", "densevlm", _eval(4.0, 77.0, 45.0, FIXED), _eval(83.0, 8.0, 30.0, BIASED))]


class _Tables(HTMLParser):
    """The cell texts of every ``<table class='monitor'>`` row, and the page's text paragraphs."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._in_table = False
        self._cell = self._para = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in_table = ("class", "monitor") in attrs
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "p":
            self._para = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "p" and self._para is not None:
            self.paragraphs.append("".join(self._para))
            self._para = None

    def handle_data(self, data):
        for part in (self._cell, self._para):
            if part is not None:
                part.append(data)


def _parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def _reports(folder) -> dict[str, dict]:
    return {json.loads(p.read_text())["batch"][0].rsplit("/", 1)[-1]: json.loads(p.read_text())
            for p in folder.glob("*.json")}


def test_the_real_history_has_the_verdicts_the_worlds_call_for(history):
    reports = _reports(history)
    assert sorted(p.name for p in history.iterdir()) == ["0001-same.json", "0002-dark.json", "0003-again.json"]
    assert reports["same"]["verdict"] == reports["again"]["verdict"] == "stable"
    assert reports["dark"]["verdict"] == "drift" and "brightness" in reports["dark"]["fired"]


def test_the_section_lists_batches_in_time_order_not_file_order(history, runs, tmp_path):
    reports = _reports(history)
    # file names now say again, dark, same; the recorded times still say same, dark, again
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for src, dst in (("0001-same", "0003-x"), ("0002-dark", "0002-x"), ("0003-again", "0001-x")):
        shutil.copy(history / f"{src}.json", shuffled / f"{dst}.json")
    page = write_report(runs, tmp_path / "r.html", monitor_history=shuffled).read_text()
    parsed = _parse(page)
    header, *rows = parsed.rows
    assert header == ["batch", "checked (UTC)", "images", "verdict", "signals fired", "suggested action"]
    assert [r[0].rsplit("/", 1)[-1] for r in rows] == ["same", "dark", "again"]
    times = [r[1] for r in rows]
    assert times == sorted(times) and len(set(times)) == 3
    for row, name in zip(rows, ("same", "dark", "again")):
        rep = reports[name]
        assert row[1] == rep["created"].replace("T", " ").rstrip("Z")
        assert row[2] == str(rep["n_batch"]) == "20"
        assert row[3] == rep["verdict"]
        assert row[4] == (", ".join(rep["fired"]) or "\u2013")
        assert row[5] == ("\n".join(rep["actions"]) or "\u2013")
    assert rows[1][3] == "drift" and "brightness" in rows[1][4] and "check the lighting" in rows[1][5]
    assert [r[3] for r in rows] == ["stable", "drift", "stable"]
    assert "1 of 3 batches drifted; last: stable." in parsed.paragraphs
    assert page.index("<h2>Line monitoring</h2>") < page.index("<h2>How this was made</h2>")
    assert page.count("<img ") == 1 + write_report(runs, tmp_path / "plain.html").read_text().count("<img ")


def test_the_summary_counts_drift_and_names_the_last_batchs_signals(history):
    batches = load_history(history)
    assert summary_line(batches) == "1 of 3 batches drifted; last: stable"
    dark = [b for b in batches if b.verdict == "drift"]
    assert summary_line(dark) == f"1 of 1 batch drifted; last: drift ({', '.join(dark[0].fired)})"
    assert summary_line(batches[:1]) == "0 of 1 batch drifted; last: stable"


def test_plotted_values_and_threshold(history):
    assert neg_log10(0.001) == pytest.approx(3.0)
    assert neg_log10(0.0) == neg_log10(P_CAP / 10) == pytest.approx(-math.log10(P_CAP))
    assert math.isnan(neg_log10(math.nan))
    batches = load_history(history)
    for b in batches:  # the threshold line is alpha and the points are adjusted p-values: a point on or above it fired
        assert b.rule == "weighted-simes" and b.alpha == 0.05 and len(b.p_values) == 8
        assert sorted(b.fired) == sorted(n for n, q in b.p_adjusted.items() if neg_log10(q) >= neg_log10(b.alpha))
        assert (b.verdict == "drift") == bool(b.fired)
        assert all(b.p_adjusted[n] >= p / 4 for n, p in b.p_values.items())  # the largest weight is 8 / 2
    assert monitoring_section([]) == ""


def test_a_report_of_the_earlier_bonferroni_rule_is_read_as_bonferroni_adjusted_p_values(history, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    report = json.loads((history / "0002-dark.json").read_text())
    old = {k: v for k, v in report.items() if k not in ("rule", "alpha")}
    old["signals"] = {n: {k: v for k, v in s.items() if k != "p_adjusted"} for n, s in report["signals"].items()}
    old["alpha_per_signal"] = 0.05 / 8
    (folder / "0001-old.json").write_text(json.dumps(old))
    (batch,) = load_history(folder)
    assert batch.rule == "bonferroni" and batch.alpha == pytest.approx(0.05)
    assert batch.p_adjusted == pytest.approx({n: min(1.0, 8 * s["p_value"]) for n, s in report["signals"].items()})
    unknown = {**report, "rule": "fisher"}
    (folder / "0001-old.json").write_text(json.dumps(unknown))
    with pytest.raises(DenseVLMError, match=r"0001-old.json: unknown decision rule 'fisher'"):
        load_history(folder)
    name = report["fired"][0]
    lying = {**report, "signals": {**report["signals"], name: {**report["signals"][name], "p_adjusted": 0.5}}}
    (folder / "0001-old.json").write_text(json.dumps(lying))
    with pytest.raises(DenseVLMError, match=r"0001-old.json: 'fired' disagrees with the adjusted p-values at 'alpha'"):
        load_history(folder)


def test_a_file_of_the_wrong_layout_or_unreadable_is_one_line_naming_it(history, runs, tmp_path):
    folder = tmp_path / "h"
    shutil.copytree(history, folder)
    shutil.copy(history.parent / "ref.json", folder / "ref.json")  # a reference saved beside the reports by mistake
    with pytest.raises(DenseVLMError, match=r"ref.json: 'verdict' must be \"stable\" or \"drift\" \(expected a drift "
                                            r"report of `densevlm monitor --history DIR`\)"):
        write_report(runs, tmp_path / "r.html", monitor_history=folder)
    (folder / "ref.json").unlink()
    report = json.loads((folder / "0002-dark.json").read_text())
    (folder / "0002-dark.json").write_text(json.dumps({**report, "verdict": "stable"}))
    with pytest.raises(DenseVLMError, match=r"0002-dark.json: verdict 'stable' disagrees with the fired signals"):
        write_report(runs, tmp_path / "r.html", monitor_history=folder)
    (folder / "0002-dark.json").write_text(json.dumps({**report, "fired": [1, "brightness"]}))
    with pytest.raises(DenseVLMError, match=r"0002-dark.json: 'fired' must list the signals marked fired"):
        write_report(runs, tmp_path / "r.html", monitor_history=folder)
    (folder / "0002-dark.json").write_text(json.dumps({**report, "created": "yesterday"}))
    with pytest.raises(DenseVLMError, match=r"0002-dark.json: 'created' must be a time YYYY-MM-DDTHH:MM:SSZ, not 'yesterday'"):
        write_report(runs, tmp_path / "r.html", monitor_history=folder)
    (folder / "0002-dark.json").write_text(json.dumps(report)[:-20])
    with pytest.raises(DenseVLMError, match=r"0002-dark.json: not readable JSON"):
        write_report(runs, tmp_path / "r.html", monitor_history=folder)
    assert not (tmp_path / "r.html").exists()


def test_an_empty_or_missing_folder_is_one_clear_line(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DenseVLMError, match=r"empty: no batch reports \(\*.json\) in this monitoring history"):
        write_report(runs, tmp_path / "r.html", monitor_history=tmp_path / "empty")
    with pytest.raises(DenseVLMError, match=r"nowhere: monitoring history folder not found"):
        load_history(tmp_path / "nowhere")


def test_the_report_command_takes_the_history(history, runs, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(runs[0]), "--monitor-history", str(history), "--out", str(out)]) == 0
    rows = _parse(out.read_text()).rows[1:]
    assert [r[3] for r in rows] == ["stable", "drift", "stable"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0001-x.json").write_text("{not json")
    capsys.readouterr()
    assert main(["report", str(runs[0]), "--monitor-history", str(bad), "--out", str(tmp_path / "bad.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0001-x.json: not readable JSON" in err and "Traceback" not in err
    assert not (tmp_path / "bad.html").exists()
