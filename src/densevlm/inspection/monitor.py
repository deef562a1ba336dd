"""Drift monitoring: is a production batch still like the reference the thresholds were set on?

Eight signals, each a test of "batch and reference come from the same line" on per-image
statistics (images are the independent units; pixels of one image are not):

* ``class_shares`` -- population stability index (PSI) of the predicted class shares,
  ``sum_k (b_k - r_k) ln(b_k / r_k)`` over the mean per-image pixel shares (floored at 1e-4);
  p-value by permuting images between the two sets (``scipy.stats.permutation_test``).
* ``defect_mix`` -- the same PSI over the shares of each defect class and of "not a defect"
  (the vocabulary's ``[defects]``): the mix of defects changed, e.g. a defect the vocabulary
  does not name is called one it does. Absent without defects.
* ``scores`` -- two-sample Kolmogorov-Smirnov test of the NG scores (``scipy.stats.ks_2samp``).
* ``defect_scores`` -- MMD (below) of the per-image vectors of the ``D`` defect scores: the
  joint pattern of how much each image looks like each defect. A defect the reference never had
  changes that pattern: the defects it replaces go missing, and its images score on the known
  defects in proportions the reference's images did not; the NG score (their maximum) and the
  argmax shares see only part of that.
  ``BENCHMARKS.md`` ("Drift monitoring") measures it against the alternatives tried. Absent
  without defects.
* ``low_confidence`` -- one-sided Mann-Whitney U test that the batch's per-image shares of
  low-confidence pixels are larger (``scipy.stats.mannwhitneyu``).
* ``embeddings`` -- maximum mean discrepancy (MMD, Gretton et al., JMLR 2012) of the pooled
  image embeddings with a Gaussian kernel (bandwidth: median pairwise distance of the pooled
  sets), p-value by permutation (``scipy.stats.permutation_test``). alibi-detect's MMDDrift
  would be the library choice, but ``pip install --dry-run alibi-detect`` beside this project's
  numpy 2.4.6 finds no release that resolves (0.13.0, the newest, requires ``numpy<2``), so the
  statistic is computed here and tested against hand-computed values and an exact permutation
  p-value in ``tests/inspection/test_monitor.py``.
* ``brightness`` and ``sharpness`` -- two-sample KS tests of the image statistics of
  :mod:`densevlm.inspection.image_stats` (mean luma; variance of the Laplacian), which move
  with the lamps, the focus and the camera distance whatever the model makes of the images.

The false-drift rate is controlled over the whole family of ``m`` signals by a weighted Simes
test (Simes, Biometrika 1986; weights: Benjamini & Hochberg, Scand. J. Statist. 1997). Each
signal's p-value is divided by its weight (:func:`signal_weights`, mean 1): ``defect_scores``
gets half of the false-drift budget (weight ``m / 2``), the other signals share the rest
(``m / (2 (m - 1))`` each; all weights 1 without defects). With the weighted p-values
``q_i = min(1, p_i / w_i)`` sorted ascending, the batch drifted when ``q_(i) <= i alpha / m`` for
some ``i``, i.e. when the smallest Benjamini-Hochberg adjusted ``q`` is ``<= alpha`` (``alpha`` =
0.05 by default). So one signal fires alone at ``p <= w alpha / m`` (``defect_scores``: 0.025;
the others: 0.0036 with eight signals), and several moderately small p-values make drift
together. On an unchanged line this holds the false-drift rate at ``alpha`` when the p-values
are independent or positively dependent (PRDS; Sarkar, Ann. Statist. 2008), which is what these
signals look like: several read the same scores and images and move together. PRDS is an
assumption, not proved for these tests (two-sided KS among them); ``BENCHMARKS.md`` checks the
false-drift rate on unchanged batches.

Why the weights: a defect the vocabulary does not name is the drift that costs most and the one
the other signals barely see (its batches show ``defect_scores`` p-values of 0.005-0.03 and
little else), while lighting, blur, a new surface or a camera change move several signals to
p-values far below any level. ``BENCHMARKS.md`` ("Drift monitoring") measures equal-weight
Simes, Bonferroni, the Cauchy combination and these weights on the same batches, and the
weights on a fresh reference and fresh batches. The signals named as fired are those whose
adjusted ``q`` (``scipy.stats.false_discovery_control(q, method="bh")``) is ``<= alpha``: at least
one exactly when the batch drifted, and of the named signals at most a share ``alpha`` is
expected to be false (weighted false-discovery rate; Genovese, Roeder & Wasserman, Biometrika
2006). p-values that could not be computed (NaN) count as 1. Each fired signal names the action
it calls for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.inspection.image_stats import IMAGE_STATS

__all__ = ["BatchStats", "psi", "mmd2", "median_bandwidth", "permutation_pvalue", "decide", "compare", "ACTIONS",
           "signal_weights", "DEFAULT_ALPHA", "DEFECT_SCORES_SHARE", "RULE", "SCHEMA"]

DEFAULT_ALPHA = 0.05
RULE = "weighted-simes"
"""The decision rule's name in drift reports: weighted Simes' test, signals named by Benjamini-Hochberg (:func:`decide`)."""
DEFECT_SCORES_SHARE = 0.5
"""Share of the false-drift budget ``alpha`` given to ``defect_scores`` (:func:`signal_weights`)."""
SCHEMA = "densevlm.monitor_reference/3"
_PSI_FLOOR = 1e-4
ACTIONS = {
    "class_shares": "re-evaluate on labelled images of this batch: the mix of predicted classes changed",
    "defect_mix": ("review the NG regions of this batch (densevlm retrieve + review): the mix of defects changed, "
                   "perhaps a defect the vocabulary does not name; add it, then re-calibrate"),
    "scores": "re-calibrate the operating point (densevlm calibrate) on labelled images of the new line",
    "defect_scores": ("review the images with unusual defect scores (densevlm retrieve + review): a defect appeared "
                      "or went missing, perhaps one the vocabulary does not name; add it, then re-calibrate"),
    "low_confidence": "review new regions (densevlm retrieve + review): the model is unsure of what it sees",
    "embeddings": "re-evaluate: the images look different (lighting, focus, camera, surface)",
    "brightness": "check the lighting (lamps, exposure, white balance), then re-calibrate on the fixed line",
    "sharpness": "check focus and camera distance (lens, mounting), then re-evaluate on labelled images",
}


@dataclass
class BatchStats:
    """Per-image statistics of a set of images (see :class:`~densevlm.inspection.scores.ImageAnalysis`).

    Attributes:
        class_shares: ``[N, K]`` share of each predicted class per image.
        defect_scores: ``[N, D]`` score of each defect per image (``D = len(defect_indices)``).
        low_confidence: ``[N]`` share of low-confidence pixels per image.
        embeddings: ``[N, C]`` unit-norm image embeddings.
        image_stats: ``[N, 2]`` brightness and sharpness (:mod:`densevlm.inspection.image_stats`).
        defect_indices: the columns of ``class_shares`` that are defects (the vocabulary's ``[defects]``).
    """

    class_shares: np.ndarray
    defect_scores: np.ndarray
    low_confidence: np.ndarray
    embeddings: np.ndarray
    image_stats: np.ndarray
    defect_indices: tuple[int, ...] = ()

    _ARRAYS = ("class_shares", "defect_scores", "low_confidence", "embeddings", "image_stats")

    def __len__(self) -> int:
        return int(self.class_shares.shape[0])

    @property
    def scores(self) -> np.ndarray:
        """``[N]`` NG scores: the largest defect score per image (0 without defects)."""
        return self.defect_scores.max(axis=1) if self.defect_scores.shape[1] else np.zeros(len(self))

    @property
    def defect_mix(self) -> np.ndarray:
        """``[N, D + 1]`` per-image shares of each defect class and of everything else."""
        d = self.class_shares[:, list(self.defect_indices)]
        return np.concatenate([d, np.clip(1.0 - d.sum(axis=1, keepdims=True), 0.0, 1.0)], axis=1)

    @classmethod
    def from_analyses(cls, analyses: Sequence[Any], defect_indices: Sequence[int] = ()) -> "BatchStats":
        if not analyses:
            raise DenseVLMError("no images to take statistics of")
        return cls(np.stack([a.class_shares for a in analyses]),
                   np.stack([a.defect_scores for a in analyses]).reshape(len(analyses), len(defect_indices)),
                   np.array([a.low_confidence for a in analyses]), np.stack([a.embedding for a in analyses]),
                   np.stack([a.image_stats for a in analyses]), tuple(int(k) for k in defect_indices))

    def to_json(self) -> dict[str, Any]:
        def rounded(a: np.ndarray) -> list:
            return np.round(a.astype(np.float64), 8).tolist()

        return {**{k: rounded(getattr(self, k)) for k in self._ARRAYS}, "defect_indices": list(self.defect_indices)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> "BatchStats":
        try:
            arrays = [np.asarray(data[k], dtype=np.float64) for k in cls._ARRAYS]
            defects = tuple(int(k) for k in data["defect_indices"])
            arrays[1] = arrays[1].reshape(len(arrays[0]), len(defects))
        except (KeyError, TypeError, ValueError) as e:
            raise DenseVLMError(f"{where}: reference statistics are missing or malformed ({e})") from None
        return cls(*arrays, defects)


def psi(reference: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Population stability index of share vectors ``[..., K]`` (each floored at 1e-4 and renormalised)."""
    r = np.maximum(reference, _PSI_FLOOR)
    b = np.maximum(batch, _PSI_FLOOR)
    r = r / r.sum(axis=-1, keepdims=True)
    b = b / b.sum(axis=-1, keepdims=True)
    return ((b - r) * np.log(b / r)).sum(axis=-1)


def median_bandwidth(x: np.ndarray) -> float:
    """Median pairwise Euclidean distance between the rows of ``x`` (distinct pairs; 1.0 if all equal)."""
    d = np.sqrt(np.maximum(_sq_dists(x, x), 0.0))
    values = d[np.triu_indices(x.shape[0], k=1)]
    median = float(np.median(values)) if values.size else 0.0
    return median if median > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def _kernel(x: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-np.maximum(_sq_dists(x, x), 0.0) / (2.0 * bandwidth**2))


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: Optional[float] = None) -> float:
    """Biased squared MMD of samples ``x [m, C]`` and ``y [n, C]`` with ``k(a, b) = exp(-|a-b|^2 / 2 s^2)``.

    ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` over all pairs (self-pairs included); ``s``
    defaults to :func:`median_bandwidth` of the pooled samples.
    """
    z = np.concatenate([x, y]).astype(np.float64)
    k = _kernel(z, bandwidth or median_bandwidth(z))
    w = np.r_[np.full(len(x), 1.0 / len(x)), np.full(len(y), -1.0 / len(y))]
    return float(w @ k @ w)


def permutation_pvalue(statistic, n_x: int, n_y: int, n_resamples: int, seed: int) -> tuple[float, float]:
    """``(observed, p)`` of ``statistic(weights [B, n])`` under random relabelling of the pooled items.

    ``weights`` rows are ``+1/n_x`` on the items playing the first set and ``-1/n_y`` on the
    others; the p-value is ``scipy.stats.permutation_test``'s (one-sided, larger is more
    extreme; exact when ``n_resamples`` covers every split).
    """
    from scipy.stats import permutation_test

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        single = a.ndim == 1
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        w = np.zeros((a.shape[0], n_x + n_y))
        rows = np.arange(a.shape[0])[:, None]
        w[rows, a.astype(np.int64)] = 1.0 / n_x
        w[rows, b.astype(np.int64)] = -1.0 / n_y
        out = statistic(w)
        return out[0] if single else out

    res = permutation_test((np.arange(n_x), np.arange(n_x, n_x + n_y)), stat, permutation_type="independent",
                           vectorized=True, n_resamples=n_resamples, alternative="greater",
                           rng=np.random.default_rng(seed), batch=200)
    return float(np.ravel(res.statistic)[0]), float(res.pvalue)


def signal_weights(names: Sequence[str]) -> np.ndarray:
    """``[m]`` weights of mean 1 for the signals ``names``: ``defect_scores`` gets the share
    :data:`DEFECT_SCORES_SHARE` of ``alpha`` (weight ``m * share``), the others split the rest
    equally (``m (1 - share) / (m - 1)`` each); all 1 when ``defect_scores`` is not among them."""
    names = list(names)
    m = len(names)
    if "defect_scores" not in names or m < 2:
        return np.ones(m)
    return np.array([m * DEFECT_SCORES_SHARE if n == "defect_scores" else m * (1.0 - DEFECT_SCORES_SHARE) / (m - 1)
                     for n in names])


def decide(p_values: Sequence[float] | np.ndarray, alpha: float,
           weights: Optional[Sequence[float] | np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(adjusted, fired)``: Benjamini-Hochberg adjusted weighted p-values ``[m]`` and which are ``<= alpha``.

    The weighted p-values are ``q = min(1, p / w)`` (``weights`` default to 1: plain Simes);
    ``adjusted`` is ``scipy.stats.false_discovery_control(q, method="bh")``: sorted ascending,
    ``q_(i) m / i``, made monotone from the largest down (``min`` over ``j >= i``), capped at 1.
    Its minimum is (weighted) Simes' global p-value, so ``fired.any()`` is Simes' test of "no
    signal moved" at level ``alpha``, and ``fired`` names the signals at false-discovery rate
    ``alpha`` (module docstring). NaN p-values (a test that could not be computed) count as 1.

    Raises:
        DenseVLMError: no p-values, one outside [0, 1], or weights that are not positive with
            mean 1, one per p-value.
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64).ravel()
    p = np.where(np.isnan(p), 1.0, p)
    if p.size == 0 or np.any((p < 0.0) | (p > 1.0)):
        raise DenseVLMError(f"p-values must be a non-empty list of numbers in [0, 1], not {p.tolist()}")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != p.shape or np.any(w <= 0.0) or not np.isclose(w.mean(), 1.0):
        raise DenseVLMError(f"weights must be {p.size} positive numbers of mean 1, not {w.tolist()}")
    adjusted = false_discovery_control(np.minimum(p / w, 1.0), method="bh")
    return adjusted, adjusted <= alpha


def _psi_signal(ref_shares: np.ndarray, batch_shares: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    shares = np.concatenate([ref_shares, batch_shares])
    n_x = len(ref_shares)

    def statistic(w: np.ndarray) -> np.ndarray:
        r = np.where(w > 0, w, 0.0) @ shares
        b = np.where(w < 0, -w, 0.0) @ shares
        return psi(r, b)

    return permutation_pvalue(statistic, n_x, len(batch_shares), n_resamples, seed)


def _mmd_signal(ref: np.ndarray, batch: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    z = np.concatenate([ref, batch]).astype(np.float64)
    k = _kernel(z, median_bandwidth(z))

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.einsum("bi,ij,bj->b", w, k, w)

    return permutation_pvalue(statistic, len(ref), len(batch), n_resamples, seed)


def compare(reference: BatchStats, batch: BatchStats, alpha: float = DEFAULT_ALPHA, n_resamples: int = 1000,
            seed: int = 0) -> dict[str, Any]:
    """The drift report of ``batch`` against ``reference`` (signals and decision rule in the module docstring).

    Args:
        alpha: family-wise false-drift rate in (0, 1).
        n_resamples: permutations for the PSI and MMD p-values (their smallest possible value
            is ``1 / (n_resamples + 1)``: keep it well below the level of a signal alone,
            ``alpha * min(weights) / m``; 0.0036 with eight signals at 0.05, so at least 280).

    Returns:
        ``{"verdict": "stable"|"drift", "fired": [...], "actions": [...], "rule": "weighted-simes", "alpha",
        "n_reference", "n_batch", "signals": {name: {"statistic", "p_value", "weight", "p_adjusted", "fired",
        "test", ...}}}``; ``p_adjusted`` is the Benjamini-Hochberg adjusted ``p_value / weight``
        (:func:`decide`): the batch drifted when one is ``<= alpha``, and those signals are named as fired.
    """
    from scipy.stats import ks_2samp, mannwhitneyu

    if len(reference) < 2 or len(batch) < 2:
        raise DenseVLMError(f"drift tests need at least 2 images on each side (reference {len(reference)}, batch {len(batch)})")
    if reference.class_shares.shape[1] != batch.class_shares.shape[1] or reference.defect_indices != batch.defect_indices:
        raise DenseVLMError("reference and batch were scored with different vocabularies")
    signals: dict[str, dict[str, Any]] = {}
    value, p = _psi_signal(reference.class_shares, batch.class_shares, n_resamples, seed)
    signals["class_shares"] = {"statistic": value, "p_value": p, "test": "PSI, permutation"}
    if reference.defect_indices:
        value, p = _psi_signal(reference.defect_mix, batch.defect_mix, n_resamples, seed)
        signals["defect_mix"] = {"statistic": value, "p_value": p, "test": "PSI of defect shares, permutation"}
    ks = ks_2samp(reference.scores, batch.scores)
    signals["scores"] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue), "test": "two-sample KS",
                         "reference_mean": float(reference.scores.mean()), "batch_mean": float(batch.scores.mean())}
    if reference.defect_indices:
        value, p = _mmd_signal(reference.defect_scores, batch.defect_scores, n_resamples, seed)
        signals["defect_scores"] = {"statistic": value, "p_value": p,
                                    "test": "MMD^2 of per-image defect scores (Gaussian, median bandwidth), permutation"}
    mw = mannwhitneyu(batch.low_confidence, reference.low_confidence, alternative="greater")
    signals["low_confidence"] = {"statistic": float(batch.low_confidence.mean()), "p_value": float(mw.pvalue),
                                 "test": "Mann-Whitney U, batch greater",
                                 "reference_mean": float(reference.low_confidence.mean())}
    value, p = _mmd_signal(reference.embeddings, batch.embeddings, n_resamples, seed)
    signals["embeddings"] = {"statistic": value, "p_value": p, "test": "MMD^2 (Gaussian, median bandwidth), permutation"}
    for j, name in enumerate(IMAGE_STATS):
        ks = ks_2samp(reference.image_stats[:, j], batch.image_stats[:, j])
        signals[name] = {"statistic": float(ks.statistic), "p_value": float(ks.pvalue), "test": "two-sample KS",
                         "reference_mean": float(reference.image_stats[:, j].mean()),
                         "batch_mean": float(batch.image_stats[:, j].mean())}
    names = list(signals)
    weights = signal_weights(names)
    level = alpha * weights.min() / len(names)  # the smallest p-value one signal needs to fire alone
    if 1.0 / (n_resamples + 1) >= level:
        raise DenseVLMError(f"{n_resamples} permutations cannot give a p-value below {level:.4g}, the level of a "
                            f"signal alone; use at least {int(np.ceil(1.0 / level))} permutations")
    adjusted, rejected = decide([signals[n]["p_value"] for n in names], alpha, weights)
    for name, weight, p_adjusted, hit in zip(names, weights, adjusted, rejected):
        signals[name].update(weight=float(weight), p_adjusted=float(p_adjusted), fired=bool(hit))
    fired = [name for name in names if signals[name]["fired"]]
    return {"verdict": "drift" if fired else "stable", "fired": fired, "actions": [ACTIONS[n] for n in fired],
            "rule": RULE, "alpha": alpha, "n_reference": len(reference), "n_batch": len(batch), "signals": signals}


def save_reference(path: str | Path, stats: BatchStats, meta: dict[str, Any], overwrite: bool = False) -> Path:
    """Write reference statistics (``densevlm.monitor_reference/3``, :data:`SCHEMA`) with the model and vocabulary they belong to."""
    from densevlm.fileio import atomic_write_text

    path = Path(path)
    if path.exists() and not overwrite:
        raise DenseVLMError(f"{path} exists; pass --overwrite to replace it")
    doc = {"schema": SCHEMA, **meta, "stats": stats.to_json()}
    return atomic_write_text(path, json.dumps(doc) + "\n")


def load_reference(path: str | Path) -> tuple[BatchStats, dict[str, Any]]:
    """``(stats, meta)`` of a file written by :func:`save_reference`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DenseVLMError(f"{path}: not a readable reference file ({e})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("densevlm.monitor_reference/"):
        raise DenseVLMError(f"{path}: not a reference file (written by `densevlm monitor --save-reference`)")
    if doc["schema"] != SCHEMA:
        raise DenseVLMError(f"{path}: reference statistics of an older format ({doc['schema']}); "
                            "rebuild it with --save-reference")
    stats = BatchStats.from_json(doc.get("stats", {}), str(path))
    return stats, {k: v for k, v in doc.items() if k not in ("stats", "schema")}
