"""Accuracy of NNCF int8 settings for one model: agreement with fp32 and the change of box mAcc.

    python benchmarks/int8_variants.py --model tiny-student --calibration W/images --eval-data VAL \\
        --variants '[{"keep_float": "ends"}, {"keep_float": "ends", "activation_ranges": "MINMAX"}]'

Writes an fp32 OpenVINO export of ``--model`` once (``--work``), then for each variant quantises
its encoder IR with ``nncf.quantize`` (TRANSFORMER model type; the variant's scope from
:data:`densevlm.export.quantize.FLOAT_SCOPES`, SmoothQuant alpha, bias correction, activation
range estimator, preset) on the calibration split ``densevlm export`` would use, and prints the
dense-label / box-score agreement on the split's held-back images ("gate") and on every image of
``--eval-data`` ("held-out"), with the box thing / stuff mAcc change on ``--eval-data``. Variant
keys: ``keep_float``, ``smooth_quant_alpha`` (negative: off), ``fast_bias_correction``,
``activation_ranges`` (a ``RangeEstimatorParametersSet`` name, e.g. MINMAX, HISTOGRAM; absent:
NNCF's default), ``preset`` (mixed, performance), ``overflow_fix`` (enable, first_layer_only = NNCF's
default, disable). This is the script behind BENCHMARKS.md "INT8
accuracy"; `densevlm export --precision int8` uses the settings chosen there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from densevlm.cli._common import load_model_arg
from densevlm.data.images import open_image_source
from densevlm.data.panoptic import PanopticDataset
from densevlm.data.synth import default_vocabulary
from densevlm.evaluation.protocol import EvalConfig, evaluate
from densevlm.export.build import export_edge
from densevlm.export.calibration import prepare_images, split_calibration
from densevlm.export.gate import compare_outputs
from densevlm.export.openvino import load_openvino_model, save_ir
from densevlm.export.quantize import float_operations


def quantize(ov_model: Any, inputs: list, variant: dict[str, Any]) -> Any:
    """``nncf.quantize`` of ``ov_model`` with the variant's settings (see the module docstring)."""
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                       OverflowFix)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    keep = float_operations(ov_model, variant.get("keep_float", "ends"))
    ranges = variant.get("activation_ranges")
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=variant.get("smooth_quant_alpha", 0.95)),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, ranges) if ranges else None,
        overflow_fix=OverflowFix(variant.get("overflow_fix", "first_layer_only")))
    preset = nncf.QuantizationPreset(variant["preset"]) if "preset" in variant else None
    return nncf.quantize(ov_model, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER, preset=preset,
                         subset_size=len(inputs), fast_bias_correction=variant.get("fast_bias_correction", True),
                         ignored_scope=nncf.IgnoredScope(names=keep) if keep else None, advanced_parameters=advanced)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="tiny-student, tiny-teacher or a checkpoint")
    parser.add_argument("--calibration", required=True, help="unlabeled images (as `export --calibration`)")
    parser.add_argument("--calibration-size", type=int, default=300)
    parser.add_argument("--eval-data", required=True, help="labelled world directory (as `export --eval-data`)")
    parser.add_argument("--variants", required=True, help="JSON list of variant objects")
    parser.add_argument("--work", required=True, help="folder for the fp32 export and the variants' IR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import openvino as ov

    model = load_model_arg(args.model, None, "cpu")
    work = Path(args.work)
    fp32 = work / "fp32"
    if not (fp32 / "densevlm_export.json").is_file():
        export_edge(model, fp32, default_vocabulary(), precision="fp32", threads=1, parity_images=1,
                    load_args={"model": args.model, "pretrained": None})
    source = open_image_source(args.calibration)
    split = split_calibration(source, args.calibration, size=args.calibration_size)
    calibration, _, _ = prepare_images(model, source, split.calibrate, model.input_size)
    heldback, heldback_plans, _ = prepare_images(model, source, split.heldout, model.input_size)
    held_source = open_image_source(str(Path(args.eval_data) / "images"))
    heldout, heldout_plans, _ = prepare_images(model, held_source, range(len(held_source)), model.input_size)
    dataset = PanopticDataset(args.eval_data)
    config = EvalConfig(size=model.input_size, square=True, crops=False, segmentation=False)
    vocab = default_vocabulary()
    before = evaluate(model, dataset, vocab, config, progress=False).metrics
    print(f"{args.model}: fp32 box thing {before['box.thing.macc1']:.2f} stuff {before['box.stuff.macc1']:.2f}; "
          f"{len(calibration)} calibration, {len(heldback)} held-back, {len(heldout)} held-out images", flush=True)
    encoder = ov.Core().read_model(str(fp32 / "image_encoder.xml"))
    for i, variant in enumerate(json.loads(args.variants)):
        directory = work / f"variant{i}"
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(fp32, directory)
        save_ir(quantize(encoder.clone(), [x[None].numpy() for x in calibration], variant),
                directory / "image_encoder.xml")
        int8 = load_openvino_model(directory, threads=1, verify=False)
        gate = compare_outputs(model, int8, heldback, heldback_plans, int8.vocabulary)
        held = compare_outputs(model, int8, heldout, heldout_plans, int8.vocabulary)
        after = evaluate(int8, dataset, int8.vocabulary, config, progress=False).metrics
        print(f"  {json.dumps(variant):<60} gate {gate['label_agreement']:.2%} / {gate['box_agreement']:.2%}  "
              f"held-out {held['label_agreement']:.2%} / {held['box_agreement']:.2%}  "
              f"d thing {after['box.thing.macc1'] - before['box.thing.macc1']:+.2f}  "
              f"d stuff {after['box.stuff.macc1'] - before['box.stuff.macc1']:+.2f}", flush=True)


if __name__ == "__main__":
    main()
