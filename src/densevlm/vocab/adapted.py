"""Few-shot class embeddings: text embeddings blended with prototypes of reviewed regions.

A VLM does not know a plant's own words: "porosity" gets a token but no meaning. Reviewed
regions do: the mean feature of the regions an expert labelled "porosity" points where porosity
lies in the model's embedding space. This module holds the pure math and the file format; the
feature extraction is :func:`densevlm.training.fewshot.adapt_vocabulary`.

Blend, per class ``k`` with text embedding ``t_k``, prototype ``p_k`` and ``n_k`` reviewed regions::

    w_k  = n_k / (n_k + k0)
    e'_k = normalise((1 - w_k) t_k + w_k p_k)

This is the posterior mean of a class direction under a conjugate (normal) prior centred on the
text embedding with the weight of ``k0`` pseudo-regions, after ``n_k`` observed regions whose
mean is ``p_k`` (the same shrinkage as a Dirichlet/normal prior in Bayesian few-shot learning;
Tip-Adapter, Zhang et al., ECCV 2022, blends text and few-shot cache logits in the same spirit).
It needs no tuning per class: one region moves a class a quarter of the way (``k0 = 3``), ten
regions 77 %, and a class no one reviewed keeps its text embedding exactly. A class with no
text embedding (reviewed, but new to the vocabulary) is its prototype.

Prototypes live on the image side of CLIP's *modality gap* (Liang et al., NeurIPS 2022: image
and text embeddings occupy two separate cones): an image region is far more similar to another
image region than to any text, so a raw prototype would win every argmax. ``gap_shift``
moves a prototype into the text cone first: ``p~ = normalise(p - mu_image + mu_text)``, with
``mu_image`` the mean of the model's unit-norm dense features over the reviewed images and
``mu_text`` the mean of the vocabulary's text embeddings.

A mean prototype of a box a token or two wide is mostly the surface under it. The
*discriminant* prototype (:func:`discriminant`, the default of ``vocab adapt``) is Fisher's
linear discriminant against the expert's negative regions (below)::

    d_k = normalise((S + lambda * tr(S) / C * I)^-1 (m_k - m_neg))

with ``m_k`` the class's mean RoI feature, ``m_neg`` and ``S`` the mean and covariance of the
negative regions' features, and ``lambda`` a ridge in units of their mean variance (the
regularised discriminant of Friedman, JASA 1989; 0.1 by default: 10 examples estimate
``m_k`` too poorly for the plain inverse, and the ridge keeps ``d_k`` near ``m_k - m_neg``). It
points where the class differs from the surfaces and parts the word is not, and, as a
difference of two image means, it has no modality gap to cross: it is blended with the text
embedding as it is.

The shift alone does not stop a new class from stealing: a plant-word box a token or two wide
(9-12 px on 8 px tokens in the worlds before December 2026) is mostly the surface under it, so
its prototype is mostly "surface", and it wins on bare surfaces and on other parts. The expert's
own images say where the word is *not*: every region outside the reviewed boxes.
:func:`calibrate_bias` gives each reviewed class ``k`` the logit bias ``b_k`` at which it beats
the best unreviewed class on at most a
fraction ``rate`` of those negative regions (an open-set calibration: a false-positive rate
fixed on the expert's images, no held-out labels; the same idea as a detector's per-class
threshold set at a target false-alarm rate). The bias is folded into the embedding,
``e''_k = e'_k + b_k u`` with ``u = mu_image / |mu_image|^2`` (:func:`bias_direction`): every
unit-norm dense feature ``f`` of these models lies in a narrow cone around ``mu_image``, so
``<f, u>`` is close to 1 and ``<f, e''_k> = <f, e'_k> + b_k <f, u>`` is the cosine plus (about)
``b_k``. The calibration itself uses the exact ``<f_i, u>`` of each negative, so on the
expert's images the rate holds exactly. Folding keeps the table a plain ``[K, C]`` matrix, so
segment, eval, inspect and export use it unchanged; a biased row is no longer unit norm.

``vocab adapt``'s default, ``--method fit``, fits the reviewed rows instead
(:mod:`densevlm.vocab.fitted`); its table is stored the same way, with ``bias`` all 0.

File (``.npz``, numpy only, no pickles): ``names`` ``[K]`` str, ``is_thing`` ``[K]`` bool,
``defects`` ``[D]`` str, ``embeddings`` ``[K, C]`` float32 (unit rows plus the folded bias), ``counts``
``[K]`` int64 (reviewed regions per class), ``k0`` float, ``bias`` ``[K]`` float64 (the folded
logit biases, 0 for unreviewed classes), ``negative_rate`` float (NaN: not calibrated), ``model_sha256`` str (see
:meth:`densevlm.backbones.base.Backbone.weights_sha256`), ``vocabulary`` str (the vocabulary
file text, synonyms and sections included), ``format`` str, and (files written since the fitted
method; older ones read as ``blend``) ``method`` str, ``anchor`` and ``distill`` float (NaN for
``blend``), ``model_name`` str (the ``--model`` it was adapted with, for messages; may be empty).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from densevlm.errors import DenseVLMError
from densevlm.vocab.vocabulary import Vocabulary, parse_vocabulary

__all__ = ["AdaptedVocabulary", "bias_direction", "blend", "calibrate_bias", "discriminant", "gap_shift",
           "load_adapted", "save_adapted", "FORMAT", "METHODS", "SHRINKAGE"]

FORMAT = "densevlm.adapted_vocabulary/2"
METHODS = ("fit", "blend")  # how a table was made: vocab adapt --method (fit: densevlm.vocab.fitted)
_OLDER = ("densevlm.adapted_vocabulary/1",)
_TIE = 1e-6  # calibrate_bias: a bias this far below a negative's threshold
SHRINKAGE = 0.1  # discriminant: default ridge, in units of the negatives' mean variance


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def blend(text: np.ndarray, prototypes: np.ndarray, counts: np.ndarray, k0: float = 3.0) -> np.ndarray:
    """``[K, C]`` unit-norm blended class embeddings (formula in the module docstring).

    Args:
        text: ``[K, C]`` text embeddings (unit rows; an all-zero row means "no text": the
            class is its prototype).
        prototypes: ``[K, C]`` prototype directions (any norm; normalised here; ignored where
            ``counts`` is 0).
        counts: ``[K]`` number of reviewed regions per class (>= 0).
        k0: prior strength in regions (> 0).
    """
    text, prototypes = np.asarray(text, np.float64), np.asarray(prototypes, np.float64)
    counts = np.asarray(counts, np.float64)
    if text.shape != prototypes.shape or text.ndim != 2 or counts.shape != (text.shape[0],):
        raise DenseVLMError(f"blend: text {text.shape}, prototypes {prototypes.shape} and counts {counts.shape} "
                            "do not match ([K, C], [K, C], [K])")
    if k0 <= 0 or (counts < 0).any():
        raise DenseVLMError(f"blend: k0 must be > 0 (got {k0}) and counts >= 0")
    no_text = np.linalg.norm(text, axis=1) == 0
    if (no_text & (counts == 0)).any():
        raise DenseVLMError("blend: a class has neither a text embedding nor reviewed regions")
    w = np.where(no_text, 1.0, counts / (counts + k0))[:, None]
    p = np.where(counts[:, None] > 0, _unit(prototypes), 0.0)
    return _unit((1.0 - w) * text + w * p).astype(np.float32)


def gap_shift(prototypes: np.ndarray, image_mean: np.ndarray, text_mean: np.ndarray) -> np.ndarray:
    """``[K, C]`` prototypes moved across the modality gap: ``normalise(p - image_mean + text_mean)``.

    Args:
        prototypes: ``[K, C]`` unit-norm prototypes.
        image_mean: ``[C]`` mean of unit-norm image (dense) features.
        text_mean: ``[C]`` mean of unit-norm class text embeddings.
    """
    return _unit(np.asarray(prototypes, np.float64) - np.asarray(image_mean)[None] + np.asarray(text_mean)[None])


def discriminant(means: np.ndarray, counts: np.ndarray, negatives: np.ndarray, shrinkage: float = SHRINKAGE
                 ) -> np.ndarray:
    """``[K, C]`` unit discriminant prototypes (formula in the module docstring); zero rows where ``counts`` is 0.

    Args:
        means: ``[K, C]`` mean feature of each class's reviewed regions.
        counts: ``[K]`` reviewed regions per class.
        negatives: ``[M, C]`` features of regions outside every reviewed box (``M >= 2``).
        shrinkage: the ridge ``lambda`` (> 0).

    Raises:
        DenseVLMError: fewer than 2 negatives, or ``shrinkage <= 0``.
    """
    neg = np.asarray(negatives, np.float64)
    if neg.ndim != 2 or len(neg) < 2:
        raise DenseVLMError(f"discriminant: need at least 2 negative regions, got {len(neg)}")
    if shrinkage <= 0:
        raise DenseVLMError(f"discriminant: shrinkage must be > 0, got {shrinkage}")
    cov = np.cov(neg, rowvar=False)
    cov += shrinkage * max(np.trace(cov) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
    d = np.linalg.solve(cov, (np.asarray(means, np.float64) - neg.mean(axis=0)).T).T
    return np.where(np.asarray(counts)[:, None] > 0, _unit(d), 0.0)


def bias_direction(image_mean: np.ndarray) -> np.ndarray:
    """``[C]`` direction ``u = mu / |mu|^2`` along which a logit bias is folded (``<mu, u> = 1``).

    Args:
        image_mean: ``[C]`` mean of unit-norm dense features (not normalised; non-zero).

    Raises:
        DenseVLMError: ``image_mean`` is zero (no image features to define the direction).
    """
    mu = np.asarray(image_mean, np.float64)
    sq = float(mu @ mu)
    if sq <= 0.0:
        raise DenseVLMError("bias_direction: the mean image feature is zero")
    return mu / sq


def calibrate_bias(embeddings: np.ndarray, reviewed: np.ndarray, negatives: np.ndarray, direction: np.ndarray,
                   rate: float) -> np.ndarray:
    """``[K]`` logit biases: each reviewed class wins on at most ``floor(rate * M)`` negative regions.

    For a reviewed class ``k`` and negative ``i`` (a region the expert's boxes do not cover), with
    ``s_ik = <f_i, e_k>``, ``c_i = max_j <f_i, e_j>`` over the unreviewed classes ``j`` and
    ``g_i = <f_i, u>``, the folded score ``s_ik + b_k g_i`` beats ``c_i`` iff
    ``b_k > t_ik = (c_i - s_ik) / g_i``. ``b_k`` is the ``(floor(rate * M) + 1)``-th smallest
    ``t_ik`` minus ``1e-6`` (so that float32 rounding of the stored table does not turn that
    negative's tie into a win), so at most ``floor(rate * M)`` negatives have ``t_ik < b_k``. Negatives with
    ``g_i <= 0`` (outside the feature cone, where a bias along ``u`` acts backwards) are left out
    of ``M``. Unreviewed classes get 0; so do all classes when none is unreviewed (no competitor)
    or no negative is left.

    Args:
        embeddings: ``[K, C]`` class embeddings before the bias.
        reviewed: ``[K]`` bool, the classes with reviewed regions.
        negatives: ``[M, C]`` unit-norm features of regions outside every reviewed box.
        direction: ``[C]`` the bias direction ``u`` (:func:`bias_direction`).
        rate: largest share of negatives a reviewed class may win, in ``[0, 1)``.
    """
    emb = np.asarray(embeddings, np.float64)
    reviewed = np.asarray(reviewed, bool)
    neg = np.asarray(negatives, np.float64).reshape(-1, emb.shape[1])
    if not 0.0 <= rate < 1.0:
        raise DenseVLMError(f"calibrate_bias: rate must be in [0, 1), got {rate}")
    if reviewed.shape != (emb.shape[0],):
        raise DenseVLMError(f"calibrate_bias: reviewed {reviewed.shape} does not match {emb.shape[0]} classes")
    bias = np.zeros(emb.shape[0])
    g = neg @ np.asarray(direction, np.float64)
    neg, g = neg[g > 0], g[g > 0]
    if reviewed.all() or not len(neg):
        return bias
    scores = neg @ emb.T
    best_other = scores[:, ~reviewed].max(axis=1)
    allowed = int(np.floor(rate * len(neg)))
    for k in np.nonzero(reviewed)[0]:
        bias[k] = np.sort((best_other - scores[:, k]) / g)[allowed] - _TIE
    return bias


@dataclass(frozen=True, eq=False)
class AdaptedVocabulary(Vocabulary):
    """A vocabulary that carries its own class embeddings, valid for one model only.

    :func:`densevlm.vocab.embed.class_embeddings` returns ``embeddings`` instead of encoding
    prompts, after checking ``model_sha256`` against the model's weights, so every command that
    takes ``--vocab`` (segment, eval, export, inspect) uses the adapted classes unchanged.

    Attributes:
        embeddings: ``[K, C]`` float32, in vocabulary order: unit rows plus the folded bias.
        model_sha256: the model's :meth:`~densevlm.backbones.base.Backbone.weights_sha256`.
        counts: ``[K]`` reviewed regions per class.
        k0: the prior strength used.
        bias: ``[K]`` logit biases folded into ``embeddings`` (:func:`calibrate_bias`; all 0
            when not calibrated).
        negative_rate: the calibration's target rate, ``None`` when not calibrated.
        method: ``"fit"`` or ``"blend"``; ``anchor`` and ``distill`` are the fit's weights
            (``None`` for ``blend``).
        model_name: the model as the user named it when adapting (messages only; may be empty).

    ``source`` (inherited) names the ``.npz`` it was read from, for messages.
    """

    embeddings: Optional[np.ndarray] = None
    model_sha256: str = ""
    counts: tuple[int, ...] = ()
    k0: float = 3.0
    bias: tuple[float, ...] = ()
    negative_rate: Optional[float] = None
    method: str = "blend"
    anchor: Optional[float] = None
    distill: Optional[float] = None
    model_name: str = ""

    @property
    def adaptation(self) -> Optional[str]:
        return self.method if self.embeddings is not None else None

    def check_model(self, sha256: str) -> None:
        """Raise one line unless the vocabulary was adapted for the model with weights ``sha256``."""
        if sha256 != self.model_sha256:
            raise DenseVLMError(
                f"{self.source or 'adapted vocabulary'}: adapted for another model "
                f"({self.model_name + ', ' if self.model_name else ''}weights sha256 {self.model_sha256[:12]}...; "
                f"this one {sha256[:12]}...); run `densevlm vocab adapt` with this --model"
            )


def adapted(vocab: Vocabulary, embeddings: np.ndarray, model_sha256: str, counts: np.ndarray, k0: float,
            source: str = "adapted vocabulary", bias: Optional[np.ndarray] = None,
            negative_rate: Optional[float] = None, method: str = "blend", anchor: Optional[float] = None,
            distill: Optional[float] = None) -> AdaptedVocabulary:
    """``vocab`` (every field kept, [defects] included) with its adapted embeddings attached.

    ``bias`` (default zeros) records what is already folded into ``embeddings``; ``method``,
    ``anchor`` and ``distill`` how the table was made (:class:`AdaptedVocabulary`)."""
    base = {f.name: getattr(vocab, f.name) for f in dataclasses.fields(Vocabulary)}
    base["source"] = source
    embeddings = np.asarray(embeddings, np.float32)
    bias = np.zeros(len(vocab)) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    if embeddings.shape[0] != len(vocab) or len(counts) != len(vocab) or len(bias) != len(vocab):
        raise DenseVLMError(f"{source}: {embeddings.shape[0]} embeddings, {len(counts)} counts and {len(bias)} "
                            f"biases for {len(vocab)} classes")
    return AdaptedVocabulary(**base, embeddings=embeddings, model_sha256=model_sha256,
                             counts=tuple(int(c) for c in counts), k0=float(k0),
                             bias=tuple(float(b) for b in bias),
                             negative_rate=None if negative_rate is None else float(negative_rate), method=method,
                             anchor=None if anchor is None else float(anchor),
                             distill=None if distill is None else float(distill))


def save_adapted(vocab: AdaptedVocabulary, path: str | Path) -> Path:
    """Write ``vocab`` as an ``.npz`` (module docstring), atomically."""
    from densevlm.fileio import atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise DenseVLMError(f"{path}: an adapted vocabulary is written as .npz")
    arrays = {
        "format": np.array(FORMAT),
        "names": np.array(vocab.names, dtype=str),
        "is_thing": np.array(vocab.is_thing, dtype=bool),
        "defects": np.array(tuple(getattr(vocab, "defects", ())), dtype=str),
        "embeddings": np.asarray(vocab.embeddings, np.float32),
        "counts": np.array(vocab.counts, dtype=np.int64),
        "k0": np.array(vocab.k0, dtype=np.float64),
        "bias": np.array(vocab.bias or [0.0] * len(vocab), dtype=np.float64),
        "negative_rate": np.array(np.nan if vocab.negative_rate is None else vocab.negative_rate, dtype=np.float64),
        "model_sha256": np.array(vocab.model_sha256),
        "vocabulary": np.array(vocab.to_text()),
        "method": np.array(vocab.method),
        "anchor": np.array(np.nan if vocab.anchor is None else vocab.anchor, dtype=np.float64),
        "distill": np.array(np.nan if vocab.distill is None else vocab.distill, dtype=np.float64),
        "model_name": np.array(vocab.model_name),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_adapted(path: str | Path) -> AdaptedVocabulary:
    """Read an adapted vocabulary ``.npz``; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DenseVLMError(f"{path}: adapted vocabulary file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        raise DenseVLMError(f"{path}: not a readable adapted vocabulary (.npz written by densevlm vocab adapt): "
                            "damaged or another kind of file") from None
    if "format" in arrays and str(arrays["format"]) in _OLDER:
        raise DenseVLMError(f"{path}: an adapted vocabulary of an older densevlm ({arrays['format']}, no calibrated "
                            "biases: its new classes steal other classes); run `densevlm vocab adapt` again")
    keys = ("format", "embeddings", "model_sha256", "vocabulary", "counts", "k0", "bias", "negative_rate")
    missing = [k for k in keys if k not in arrays]
    if missing or str(arrays["format"]) != FORMAT:
        raise DenseVLMError(f"{path}: not an adapted vocabulary (expected {FORMAT}; made by `densevlm vocab adapt`)")
    vocab = parse_vocabulary(str(arrays["vocabulary"]), source=str(path))
    emb = arrays["embeddings"]
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise DenseVLMError(f"{path}: embeddings must be a finite [K, C] table, got shape {emb.shape}")
    rate = float(arrays["negative_rate"])
    method = str(arrays.get("method", "blend"))
    if method not in METHODS:
        raise DenseVLMError(f"{path}: unknown adaptation method {method!r} (a newer densevlm's file?)")
    weights = {k: float(arrays[k]) for k in ("anchor", "distill") if k in arrays and not np.isnan(float(arrays[k]))}
    result = adapted(vocab, emb, str(arrays["model_sha256"]), arrays["counts"], float(arrays["k0"]), source=str(path),
                     bias=arrays["bias"], negative_rate=None if np.isnan(rate) else rate, method=method, **weights)
    return dataclasses.replace(result, model_name=str(arrays.get("model_name", "")))
