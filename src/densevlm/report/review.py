"""The report's expert-review section: what review taught, and the review statistics.

Two JSON files feed it, read by :func:`densevlm.report.write_report`:

* review statistics, as ``densevlm review stats --json`` writes them (agreement, trusted threshold);
* what review taught (``densevlm demo`` writes ``review.json``): ``new_words`` (reviewed regions per
  word the model's vocabulary lacked), ``regions`` (all reviewed regions), ``model``, and box mAcc
  in percent with the text embeddings only (``text_only``) and with the vocabulary adapted from the
  reviewed regions (``reviewed``), each ``{"new_words": .., "other_things": .., "stuff": .., "fg_bias": ..}``
  (``fg_bias``: the share of stuff regions whose top-1 class is a thing).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Optional

from densevlm.errors import DenseVLMError

__all__ = ["check_taught", "review_section", "taught_line"]

_SCORES = ("new_words", "other_things", "stuff", "fg_bias")


def check_taught(doc: Any, source: Any) -> None:
    """Raise one :class:`~densevlm.errors.DenseVLMError` line naming ``source`` unless ``doc`` has the
    layout of the module docstring (``new_words`` an object of counts, ``regions`` a count, two score objects)."""
    problem = None
    if not isinstance(doc, dict):
        problem = "not a JSON object"
    elif not isinstance(doc.get("new_words"), dict) or not all(isinstance(n, int) for n in doc["new_words"].values()):
        problem = "'new_words' must map each word to its count of reviewed regions"
    elif not isinstance(doc.get("regions"), int):
        problem = "'regions' must be a count"
    else:
        for key in ("text_only", "reviewed"):
            scores = doc.get(key)
            if not isinstance(scores, dict) or not all(isinstance(scores.get(s), (int, float)) for s in _SCORES):
                problem = f"'{key}' must hold the numbers {', '.join(_SCORES)}"
                break
    if problem:
        raise DenseVLMError(f"{source}: {problem} (what review taught, as densevlm demo writes it)")


def _pct(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.0f}{unit}" if unit else f"{value:.1f}"


def taught_line(doc: dict[str, Any]) -> str:
    """One plain-text line: ``the expert taught N new words (R regions[, and confirmed C of the known
    classes]): their box mAcc X % text only
    -> Y % with the reviewed examples; other things A -> B; stuff C -> D; background called a part E -> F %``.

    Raises:
        KeyError: ``doc`` lacks a key of the module docstring's layout.
    """
    words = doc["new_words"]
    before, after = doc["text_only"], doc["reviewed"]
    taught = sum(words.values())
    confirmed = f", and confirmed {doc['regions'] - taught} of the known classes" if doc["regions"] > taught else ""
    return (f"the expert taught {len(words)} new word{'s' if len(words) != 1 else ''} ({taught} regions{confirmed}): "
            f"their box mAcc {_pct(before['new_words'], ' %')} text only -> {_pct(after['new_words'], ' %')} "
            f"with the reviewed examples; other things {_pct(before['other_things'])} -> {_pct(after['other_things'])}; "
            f"stuff {_pct(before['stuff'])} -> {_pct(after['stuff'])}; "
            f"background called a part {_pct(before['fg_bias'])} -> {_pct(after['fg_bias'])} %")


def review_section(stats: Optional[dict[str, Any]], taught: Optional[dict[str, Any]]) -> str:
    """The HTML of the section (heading included); empty when neither file was given."""
    if not stats and not taught:
        return ""
    body = ["<h2>Expert review</h2>"]
    if taught:
        words = ", ".join(f"{html.escape(w)} ({n})" for w, n in taught["new_words"].items())
        body.append(f"<p class='verdict'>Review: {html.escape(taught_line(taught))}.</p>"
                    f"<p>New words (reviewed regions): {words}. Box accuracy on the held-out images of "
                    f"{html.escape(str(taught.get('model', 'the model')))}, mean over classes, in percent; the "
                    "tables above use the text embeddings only, where a word the model never learned is near chance.</p>")
    if stats:
        items = []
        for key in ("agreement", "trusted_threshold"):
            if key in stats:
                items.append(f"<li>{html.escape(key.replace('_', ' '))}: {html.escape(str(stats[key]))}</li>")
        body.append("<ul>" + "".join(items) + "</ul><details><summary>all statistics</summary><pre>"
                    + html.escape(json.dumps(stats, indent=2, default=str)) + "</pre></details>")
    return "".join(body)
