"""Run an export with ONNX Runtime on the CPU, as a :class:`~densevlm.dense.DenseRuntime`.

    >>> model = load_onnx_model("export/")                 # checks the sha256 of every file
    >>> x, plan = model.prepare(pil_image)                 # [3, H, W], letterbox geometry
    >>> dense = model.encode_dense(x[None])                # [1, C, H/p, W/p], unit norm per token
    >>> text = model.embed_vocabulary(vocab)               # [K, C], the exported embeddings

Anything written against :class:`~densevlm.dense.DenseRuntime` (the ``segment`` command is)
runs on this or on a :class:`~densevlm.model.DenseModel`; ``transform``, ``encode_boxes``,
``image_size``, ``embed_dim`` and ``device`` are also offered as on the PyTorch model.

The runtime computes in numpy and imports no PyTorch unless asked to: with ``tensors="torch"``
(the default where PyTorch is installed) arrays come out as CPU ``torch.Tensor``s, as from a
``DenseModel``; with ``tensors="numpy"`` (the default without PyTorch, and what ``densevlm
segment --engine onnx|openvino`` uses) they come out as ``numpy.ndarray``. Inputs may be either.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from densevlm.dense import as_array
from densevlm.errors import DenseVLMError
from densevlm.export.manifest import (
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    REGION_FILE,
    export_root,
    read_manifest,
    verify_files,
)
from densevlm.imaging import Letterbox, letterbox_array
from densevlm.vocab import Vocabulary

__all__ = ["ExportSpec", "OnnxDenseModel", "load_onnx_model", "require_packages", "default_tensors"]

TENSOR_KINDS = ("torch", "numpy")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """What an export says about the model it came from: the :class:`~densevlm.dense.RuntimeSpec`
    fields of its ``BackboneSpec`` (documented there), read from the manifest."""

    family: str
    arch: str
    source: str
    image_size: int
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    templates: str


def require_packages(*names: str) -> None:
    """Raise a one-line error naming the install command unless every module in ``names`` is importable."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise DenseVLMError(
            f"ONNX export needs {', '.join(missing)}; install them with: pip install 'densevlm[export]'"
        )


def default_tensors() -> str:
    """``"torch"`` where PyTorch is installed, else ``"numpy"`` (what the runtimes return by default)."""
    return "torch" if importlib.util.find_spec("torch") is not None else "numpy"


def _session(path: Path, threads: Optional[int]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DenseVLMError(f"{path}: ONNX Runtime cannot load this graph ({reason}); re-export") from None


class OnnxDenseModel:
    """An exported image encoder plus its vocabulary's text embeddings, run by ONNX Runtime.

    The ONNX Runtime :class:`~densevlm.dense.DenseRuntime`. Build it with :func:`load_onnx_model`.
    Inputs may be numpy arrays or torch tensors; outputs are of the kind :attr:`tensors` names.

    Attributes:
        directory: the export directory.
        manifest: the parsed ``densevlm_export.json``.
        vocabulary: the :class:`Vocabulary` the embeddings were made for.
        spec: the :class:`ExportSpec` of the exported weights; ``patch_size`` and ``image_size``
            (native input side of the position embeddings) are its fields.
        dynamic: True when the graph accepts any H, W that are multiples of the patch.
        input_size, default_size: the side the graph was exported at (pixels): the longest side
            :meth:`prepare` uses when given none.
        logit_scale: the model's multiplier of the cosines, CLIP's ``exp(logit_scale)`` capped at
            100, as recorded at export.
        tensors: ``"torch"`` (outputs are CPU ``torch.Tensor``) or ``"numpy"`` (``numpy.ndarray``).
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], threads: Optional[int] = None,
                 tensors: Optional[str] = None) -> None:
        tensors = tensors or default_tensors()
        if tensors not in TENSOR_KINDS:
            raise DenseVLMError(f"tensors must be one of {', '.join(TENSOR_KINDS)}, got {tensors!r}")
        self.tensors = tensors
        self.directory = directory
        self.manifest = manifest
        model, pre, voc = manifest["model"], manifest["preprocess"], manifest["vocabulary"]
        self.spec = ExportSpec(
            family=str(model["family"]),
            arch=str(model["arch"]),
            source=str(model["source"]),
            image_size=int(model["image_size"]),
            patch_size=int(model["patch_size"]),
            mean=tuple(float(v) for v in pre["mean"]),
            std=tuple(float(v) for v in pre["std"]),
            templates=str(voc["templates"]),
        )
        self.patch_size, self.image_size = self.spec.patch_size, self.spec.image_size
        self.dynamic = bool(manifest["export"]["dynamic"])
        self.input_size = self.default_size = int(manifest["export"]["size"])
        self.logit_scale = float(model["logit_scale"])
        self.vocabulary = Vocabulary(
            names=tuple(voc["names"]),
            synonyms=tuple(tuple(s) for s in voc["synonyms"]),
            is_thing=tuple(bool(t) for t in voc["is_thing"]),
        )
        self.adapted: Optional[str] = voc.get("adapted")  # the vocab adapt method of a stored fitted table, or None
        self._embeddings = self._read_embeddings(directory / EMBEDDINGS_FILE)
        self._open_graphs(threads)

    def _open_graphs(self, threads: Optional[int]) -> None:
        """Open the encoder (and region classifier) graphs; runtimes for other formats override
        this, :meth:`_run_encoder` and :meth:`_run_region`."""
        self._encoder = _session(self.directory / ENCODER_FILE, threads)
        self._encoder_input = self._encoder.get_inputs()[0].name
        has_region = REGION_FILE in self.manifest["files"]
        self._region = _session(self.directory / REGION_FILE, threads) if has_region else None

    def _run_encoder(self, array: np.ndarray) -> np.ndarray:
        """``[B, C, h, w]`` dense map for a float32 ``[B, 3, H, W]`` array."""
        try:
            (dense,) = self._encoder.run(None, {self._encoder_input: array})
        except Exception as e:  # onnxruntime's own error types: a graph that cannot take this input
            raise DenseVLMError(
                f"{self.directory / ENCODER_FILE}: ONNX Runtime failed on input {list(array.shape)} "
                f"({str(e).strip().splitlines()[0][:200]}); re-export with the new exporter"
            ) from None
        return dense

    def _run_region(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``[K, T]`` logits for ``{"dense": [B, C, h, w], "boxes": [K, 5]}``."""
        (logits,) = self._region.run(None, feeds)
        return logits

    def _out(self, array: np.ndarray) -> Any:
        """``array`` as the kind :attr:`tensors` names."""
        if self.tensors == "numpy":
            return array
        import torch

        return torch.from_numpy(array)

    def _read_embeddings(self, path: Path) -> np.ndarray:
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DenseVLMError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]}); re-export") from None
        if table.ndim != 2 or table.shape[0] != len(self.vocabulary) or table.dtype not in (np.float32, np.float16):
            raise DenseVLMError(
                f"{path}: expected a [{len(self.vocabulary)}, C] float32/float16 table, got {table.dtype} "
                f"{list(table.shape)}; re-export"
            )
        return np.ascontiguousarray(table, dtype=np.float32)

    # ---- properties (DenseRuntime's other members are the attributes set in __init__) ---------
    @property
    def embed_dim(self) -> int:
        return int(self._embeddings.shape[1])

    @property
    def device(self) -> Any:
        """Where inputs go: the CPU (a ``torch.device`` when :attr:`tensors` is ``"torch"``, else ``"cpu"``)."""
        if self.tensors == "numpy":
            return "cpu"
        import torch

        return torch.device("cpu")

    @property
    def has_region_classifier(self) -> bool:
        return self._region is not None

    # ---- preprocessing -----------------------------------------------------------------------
    def prepare(
        self, image: Image.Image, size: Optional[int] = None, square: bool = False
    ) -> tuple[Any, Letterbox]:
        """Letterbox ``image`` for this export: ``([3, H, W] float32, geometry)``.

        A dynamic export pads to multiples of the patch (or a square) like
        :meth:`DenseModel.prepare`; a fixed-size export always gives ``input_size`` squared.

        Raises:
            DenseVLMError: a fixed-size export is asked for another size.
        """
        if not self.dynamic:
            self.check_size(size)
            size, square = self.input_size, True
        array, plan = letterbox_array(image, size or self.input_size, self.patch_size, self.spec.mean,
                                      self.spec.std, square)
        return self._out(array), plan

    def check_size(self, size: Optional[int]) -> None:
        """Check an input side before any image is read (None: the export's own size).

        Raises:
            DenseVLMError: a fixed-size export is asked for another size.
        """
        if not self.dynamic and size is not None and size != self.input_size:
            raise DenseVLMError(
                f"{self.directory} was exported for {self.input_size}x{self.input_size} inputs, not size {size}; "
                "re-export with --dynamic or --size"
            )

    def transform(self, image: Image.Image, size: Optional[int] = None) -> Any:
        """``[3, H, W]`` normalised input for a PIL image (see :meth:`prepare`)."""
        return self.prepare(image, size)[0]

    # ---- encoders ----------------------------------------------------------------------------
    def _check_images(self, images: Any) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DenseVLMError(f"images must be a [B, 3, H, W] tensor, got shape {tuple(images.shape)}")
        h, w = int(images.shape[-2]), int(images.shape[-1])
        p = self.patch_size
        if h == 0 or w == 0 or h % p or w % p:
            raise DenseVLMError(
                f"image size {h}x{w} is not a multiple of the patch size {p}; use transform(), which pads"
            )
        if not self.dynamic and (h, w) != (self.input_size, self.input_size):
            raise DenseVLMError(
                f"{self.directory} was exported for {self.input_size}x{self.input_size} inputs, got {h}x{w}; "
                "use transform(), or re-export with --dynamic"
            )

    def encode_dense(self, images: Any) -> Any:
        """``[B, C, H/p, W/p]`` dense map, unit norm per token, computed by the export's runtime.

        Args:
            images: ``[B, 3, H, W]`` normalised, a numpy array or a tensor (any device and float
                dtype; run as float32 on the CPU).
        """
        self._check_images(images)
        return self._out(self._run_encoder(np.ascontiguousarray(as_array(images))))

    def encode_boxes(self, images: Any, boxes: Sequence[Any]) -> Any:
        """RoI features ``[sum N_i, C]`` (unit norm, box order) pooled from the exported map.

        Needs PyTorch (``roi_align`` of :func:`densevlm.regions.pooling.roi_pool`); without it use
        :meth:`classify_boxes`, which runs the exported region graph.

        Args:
            images: ``[B, 3, H, W]``.
            boxes: B arrays ``[N_i, 4]``, XYXY in input pixels.
        """
        import torch

        from densevlm.regions.pooling import roi_pool

        dense = torch.from_numpy(as_array(self.encode_dense(images)))
        feats = roi_pool(dense, [torch.as_tensor(as_array(np.asarray(b))) for b in boxes], self.patch_size)
        return self._out(feats.numpy())

    def classify_boxes(self, dense: Any, boxes: Sequence[Any]) -> Any:
        """``[sum N_i, K]`` box logits (``logit_scale`` x cosine) from the exported region classifier.

        Args:
            dense: ``[B, C, h, w]`` from :meth:`encode_dense`.
            boxes: B tensors ``[N_i, 4]``, XYXY in input pixels.

        Raises:
            DenseVLMError: the export has no region classifier.
        """
        if self._region is None:
            raise DenseVLMError(f"{self.directory}: this export has no {REGION_FILE}; re-export without --no-regions")
        if len(boxes) != dense.shape[0]:
            raise DenseVLMError(f"got boxes for {len(boxes)} images but {dense.shape[0]} images")
        # rows (batch index, x1, y1, x2, y2) in input pixels: the graph divides by the patch itself
        rois = [np.concatenate([np.full((len(b), 1), i, np.float32), as_array(np.asarray(b)).reshape(-1, 4)], axis=1)
                for i, b in enumerate(boxes)]
        rois = np.concatenate(rois, axis=0) if rois else np.zeros((0, 5), np.float32)
        if rois.shape[0] == 0:
            return self._out(np.zeros((0, len(self.vocabulary)), np.float32))
        feeds = {"dense": np.ascontiguousarray(as_array(dense)), "boxes": np.ascontiguousarray(rois)}
        return self._out(self._run_region(feeds))

    def embed_vocabulary(
        self, vocab: Vocabulary, templates: Optional[str] = None, use_cache: bool = True
    ) -> Any:
        """``[K, C]`` float32 unit-norm class embeddings: the ones stored at export.

        Args:
            vocab: must equal the exported vocabulary (names, synonyms, sections, order).
            templates: None or the template set used at export.
            use_cache: ignored (kept for interface compatibility with :class:`DenseModel`).

        Raises:
            DenseVLMError: ``vocab`` or ``templates`` differ from the exported ones.
        """
        mine = self.vocabulary
        if (vocab.names, vocab.synonyms, vocab.is_thing) != (mine.names, mine.synonyms, mine.is_thing):
            shown = ", ".join(mine.names[:4]) + (", ..." if len(mine) > 4 else "")
            loaded_as = (self.manifest["model"].get("load") or {}).get("model") or self.spec.arch
            raise DenseVLMError(
                f"{self.directory} was exported for another vocabulary ({len(mine)} classes: {shown}; given "
                f"{len(vocab)} classes); re-export with `densevlm export --model {loaded_as} --vocab FILE "
                f"--out DIR` for this one"
            )
        if templates is not None and templates != self.spec.templates:
            raise DenseVLMError(
                f"{self.directory} was exported with the '{self.spec.templates}' prompt templates, "
                f"not '{templates}'; re-export"
            )
        return self._out(self._embeddings.copy())

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else f"{self.input_size}x{self.input_size}"
        return f"OnnxDenseModel({self.directory}, {self.spec.arch}, {kind}, {len(self.vocabulary)} classes)"


def open_runtime(cls: type, directory: Path, manifest: dict[str, Any], threads: Optional[int],
                 tensors: Optional[str] = None) -> Any:
    """``cls(directory, manifest, threads=threads, tensors=tensors)``; a malformed manifest is one line naming it."""
    try:
        return cls(directory, manifest, threads=threads, tensors=tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise DenseVLMError(
            f"{directory / MANIFEST_FILE}: missing or malformed field ({type(e).__name__}: {e}); re-export"
        ) from None


def load_onnx_model(path_or_dir: str | Path, threads: Optional[int] = None, verify: bool = True,
                    tensors: Optional[str] = None) -> OnnxDenseModel:
    """Open an export made by ``densevlm export``.

    Args:
        path_or_dir: the export directory, or any file inside it (e.g. its ``image_encoder.onnx``).
        threads: ONNX Runtime intra-op threads (None: ONNX Runtime's default, one per core).
        verify: check the size and sha256 of every file against the manifest first.
        tensors: ``"torch"`` or ``"numpy"`` outputs (default :func:`default_tensors`).

    Raises:
        DenseVLMError: one line naming the missing, changed or unreadable file.
    """
    require_packages("onnxruntime")
    directory = export_root(path_or_dir)
    manifest = read_manifest(directory)
    if manifest["export"].get("format", "onnx") != "onnx":
        raise DenseVLMError(
            f"{directory} holds a {manifest['export']['format']} export, not ONNX; open it with densevlm.export.load_export()"
        )
    if verify:
        verify_files(directory, manifest)
    if manifest.get("parity") and not manifest["parity"].get("passed", True):
        log.warning("%s: the parity check at export time FAILED; see %s", directory, MANIFEST_FILE)
    model = open_runtime(OnnxDenseModel, directory, manifest, threads, tensors)
    log.info("loaded ONNX export %s (%s, %s exporter)", directory, model.spec.arch, manifest["export"].get("exporter"))
    return model
