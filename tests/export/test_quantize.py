"""NNCF int8 quantisation: which operations stay in float, and that they do."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from densevlm.errors import DenseVLMError  # noqa: E402
from densevlm.export.quantize import DEFAULT_KEEP_FLOAT, FLOAT_SCOPES, float_operations, quantize_openvino  # noqa: E402


def _encoder() -> "ov.Model":
    """A small ViT-shaped graph: patch Convolution, two attention blocks (SDPA), a value-path block, projection."""
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    dim = 16

    def weight(*shape: int) -> "ov.Node":
        return ops.constant(rng.normal(0, 0.3, shape).astype(np.float32))

    def linear(x, name: str):
        node = ops.matmul(x, weight(dim, dim), False, False)
        node.set_friendly_name(name)
        return node

    image = ops.parameter([1, 3, 16, 16], np.float32, name="images")
    patches = ops.convolution(image, weight(dim, 3, 4, 4), [4, 4], [0, 0], [0, 0], [1, 1])
    patches.set_friendly_name("patch_embed")
    x = ops.transpose(ops.reshape(patches, ops.constant(np.array([1, dim, 16], np.int64)), False),
                      ops.constant(np.array([0, 2, 1], np.int64)))
    for block in range(2):
        q, k, v = (linear(x, f"b{block}.{n}") for n in "qkv")
        attention = ops.scaled_dot_product_attention(q, k, v, causal=False)
        attention.set_friendly_name(f"b{block}.attention")
        x = ops.add(x, linear(attention, f"b{block}.out"))
        x = ops.add(x, linear(ops.gelu(linear(x, f"b{block}.fc1"), "erf"), f"b{block}.fc2"))
    x = ops.add(x, linear(linear(x, "last.v"), "last.out"))
    x = linear(x, "proj")
    return ov.Model([ops.result(x)], [image], "encoder")


def _generated_inputs(n: int = 16) -> list[np.ndarray]:
    """Smooth generated images (gradients and stripes of varying phase), normalised like a CLIP input."""
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    return [np.stack([np.sin(2 * np.pi * (xx * (i % 4 + 1) + c / 3)) + yy for c in range(3)])[None].astype(np.float32)
            for i in range(n)]


def test_scopes_name_the_ends_and_the_tail():
    model = _encoder()
    assert float_operations(model, "none") == []
    ends = float_operations(model, "ends")
    assert ends == ["patch_embed", "b0.q", "b0.k", "proj"]
    tail = float_operations(model, "ends+tail")
    assert tail == ends + ["b1.out", "b1.fc1", "b1.fc2", "last.v", "last.out"]
    assert DEFAULT_KEEP_FLOAT in FLOAT_SCOPES
    with pytest.raises(DenseVLMError, match="--keep-float"):
        float_operations(model, "everything")


def _quantized_inputs(model: "ov.Model") -> dict[str, bool]:
    """Per Convolution/MatMul: does any input come through a FakeQuantize (i.e. is it computed in int8)?"""
    result = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            sources = [op.input_value(i).get_node() for i in range(op.get_input_size())]
            result[op.get_friendly_name()] = any(s.get_type_name() == "FakeQuantize" for s in sources)
    return result


@pytest.mark.parametrize("keep_float", ["ends", "ends+tail"])
def test_kept_operations_stay_float_and_the_rest_is_quantised(keep_float):
    model = _encoder()
    int8, record = quantize_openvino(model, _generated_inputs(), keep_float=keep_float)
    assert record["keep_float"] == keep_float and record["subset_size"] == 16
    assert record["fp32_operations"] == float_operations(_encoder(), keep_float)
    quantized = _quantized_inputs(int8)
    kept = set(record["fp32_operations"])
    assert not [name for name in kept if quantized[name]], "an operation of the float scope was quantised"
    assert [name for name, q in quantized.items() if name not in kept and not q] == [], "a layer stayed float"
    assert set(quantized) - kept, "nothing left to quantise"
