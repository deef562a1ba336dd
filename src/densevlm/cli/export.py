"""Export an image encoder's dense path and a vocabulary's text embeddings to ONNX, then check
that ONNX Runtime (CPU) reproduces PyTorch on synthetic factory scenes.

Writes to --out DIR:
  image_encoder.onnx       images float32 [B, 3, H, W] (normalised) -> dense [B, C, H/p, W/p],
                           unit norm per token; fixed SIZE x SIZE, or any multiple of the
                           patch with --dynamic (B is always dynamic)
  text_embeddings.npy      [K, C] class embeddings (float32; float16 with --fp16-embeddings)
  region_classifier.onnx   (dense, boxes [K, 5]) -> logits [K, T] (skip with --no-regions)
  densevlm_export.json     model, preprocessing, vocabulary, sha256 of every file, parity

Parity passes when the dense maps differ by at most 1e-4 (max abs), 1e-4 (relative L2), every
token cosine is at least 0.9999 and at least 99.9 % of per-token labels agree; the exit status
is 1 when it fails (the files are kept). Load an export with
densevlm.export.load_onnx_model(DIR).

--format openvino writes OpenVINO IR (image_encoder.xml/.bin) instead, into a temporary
directory beside --out that is renamed to --out only when its check passes: parity with PyTorch
for fp32, and for --precision int8 (NNCF post-training quantisation calibrated on --calibration,
your own unlabeled images) the accuracy gate: int8 vs fp32 dense-label and box-score agreement on
held-back calibration images (and box mAcc / fg_bias on --eval-data) must reach --min-agreement.
Otherwise the command fails with one line saying by how much, and writes nothing; --keep-float
ends+tail then leaves more layers in float (slower), or calibrate on more of your images.

Examples:
  densevlm export --model tiny-student --out export/
  densevlm export --model run/last.pt --format openvino --precision int8 --calibration photos/ --out line/
  densevlm export --model ViT-B-16 --pretrained openai --vocab vocab.txt --size 448 --dynamic --out vitb16/
  densevlm export --check vitb16/
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_MODEL = "tiny-student"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from densevlm.cli._common import MODEL_NAMES, PRETRAINED_HELP

    p.add_argument("--model", default=None,
                   help=f"model: {MODEL_NAMES} (default: tiny-student; with --check, the model recorded in the export)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--vocab", default=None, help="vocabulary file (default: the embedded world's 16 classes)")
    p.add_argument("--size", type=int, default=None,
                   help="input side in pixels, a multiple of the patch (default: the model's native size)")
    p.add_argument("--out", default=None, help="export directory to write (required unless --check)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    p.add_argument("--dynamic", action="store_true", help="accept any batch, height and width (multiples of the patch)")
    p.add_argument("--fp16-embeddings", action="store_true", help="store the text embeddings as float16")
    p.add_argument("--no-regions", action="store_true", help="do not export region_classifier.onnx")
    p.add_argument("--skip-parity", action="store_true", help="do not run the parity check after exporting")
    p.add_argument("--check", metavar="DIR", default=None,
                   help="re-run the check of an existing export: parity (fp32) or the accuracy gate on "
                        "its held-back calibration images (int8; with --eval-data also on labels)")
    p.add_argument("--images", type=int, default=4, help="synthetic scenes for the parity check (default: 4)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / OpenVINO threads (default: one per core)")
    p.add_argument("--json", default=None, help="also write the parity result to this JSON file")
    p.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                   help="onnx (ONNX Runtime) or openvino (OpenVINO IR; needs densevlm[edge]) (default: onnx)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32, or int8 (NNCF post-training quantisation; --format openvino) (default: fp32)")
    p.add_argument("--calibration", metavar="IMAGES", default=None,
                   help="int8: your own unlabeled images, any source `train --images` takes (folder, glob, COCO JSON, "
                        "tar shards); a fifth (at most 64) is held back for the accuracy gate")
    p.add_argument("--calibration-size", type=int, default=300,
                   help="int8: calibration images (default: 300, fewer if fewer exist)")
    from densevlm.export.quantize import FLOAT_SCOPES

    p.add_argument("--keep-float", choices=tuple(FLOAT_SCOPES), default=None,
                   help="int8: layers left in float: none; ends = patch embedding, first block's first two "
                        "matrix products, output projection; ends+tail = ends and every matrix product after the "
                        "last attention (slower; try it when the gate fails) (default: ends)")
    p.add_argument("--eval-data", default=None,
                   help="labelled panoptic set for the accuracy gate: also compare box thing/stuff mAcc and fg_bias")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="accuracy gate: least dense-label and box-score agreement with fp32 (default: 0.99)")
    p.add_argument("--max-macc-drop", type=float, default=None,
                   help="accuracy gate with --eval-data: largest drop of box thing/stuff mAcc in points (default: 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing export in --out (and an existing --json file)")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _portable_name(name: str | None) -> str | None:
    """A model or weights argument as ``--check`` can reload it later: files as absolute paths."""
    if name is not None and Path(name).is_file():
        return str(Path(name).resolve())
    return name


def _check(args: argparse.Namespace) -> int:
    from densevlm.cli._common import load_model_arg, write_json
    from densevlm.errors import DenseVLMError
    from densevlm.export import check_export, format_parity, read_manifest

    manifest = read_manifest(args.check)
    model_name, pretrained = args.model, args.pretrained
    if model_name is None:
        recorded = manifest["model"].get("load") or {}
        model_name, pretrained = recorded.get("model"), recorded.get("pretrained")
        if model_name is None:
            raise DenseVLMError(f"{args.check}: the export does not record how to load its model; pass --model")
    model = load_model_arg(model_name, pretrained, "cpu")
    if manifest["export"].get("precision", "fp32") == "int8":
        return _check_gate(args, model)
    gate = [flag for flag, given in (("--calibration", args.calibration), ("--eval-data", args.eval_data),
                                     ("--min-agreement", args.min_agreement), ("--max-macc-drop", args.max_macc_drop))
            if given is not None]
    if gate:
        raise DenseVLMError(f"{args.check}: an fp32 export is checked for parity with PyTorch, not by the int8 "
                            f"accuracy gate, so {', '.join(gate)} cannot apply; drop them")
    result = check_export(model, args.check, count=args.images, threads=args.threads)
    print(format_parity(result))
    if args.json:
        write_json(args.json, result)
    return 0 if result["passed"] else 1


def _check_gate(args: argparse.Namespace, model) -> int:
    """``--check`` of an int8 export: the accuracy gate again, on the recorded held-back images."""
    from densevlm.cli._common import write_json
    from densevlm.export.build import check_gate
    from densevlm.export.gate import format_gate
    from densevlm.export.openvino import load_export
    from densevlm.export.verify import check_same_tower

    exported = load_export(args.check, threads=args.threads)
    check_same_tower(model, exported)
    result = check_gate(model, exported, exported.manifest, calibration=args.calibration, eval_data=args.eval_data,
                        min_agreement=args.min_agreement, max_macc_drop=args.max_macc_drop)
    print(format_gate(result))
    if args.json:
        write_json(args.json, result)
    return 0 if result["passed"] else 1


def _export_edge(args: argparse.Namespace) -> int:
    """``--format openvino``: export behind the parity check (fp32) or the accuracy gate (int8)."""
    from densevlm.cli._common import write_json
    from densevlm.export.build import export_edge
    from densevlm.export.gate import MAX_MACC_DROP, MIN_AGREEMENT, format_gate
    from densevlm.export.verify import format_parity

    model, vocab = _model_and_vocabulary(args)
    manifest = export_edge(
        model, args.out, vocab, fmt=args.format, precision=args.precision, calibration=args.calibration,
        calibration_size=args.calibration_size, keep_float=args.keep_float, eval_data=args.eval_data,
        min_agreement=MIN_AGREEMENT if args.min_agreement is None else args.min_agreement,
        max_macc_drop=MAX_MACC_DROP if args.max_macc_drop is None else args.max_macc_drop, size=args.size,
        dynamic=args.dynamic, regions=not args.no_regions,
        parity_images=args.images, threads=args.threads, overwrite=args.overwrite,
        load_args=_load_args(args),
        progress=print,
    )
    info = manifest["export"]
    print(f"exported {manifest['model']['arch']} ({manifest['model']['source']}) to {args.out}: OpenVINO "
          f"{info['openvino'].split('-')[0]}, {info['precision']}, {info['size']}x{info['size']}"
          + (" (dynamic H/W)" if info["dynamic"] else ""))
    for name, record in manifest["files"].items():
        print(f"  {name:<28} {_human_bytes(record['bytes']):>9}  sha256 {record['sha256'][:16]}")
    result = manifest["gate"] if info["precision"] == "int8" else manifest["parity"]
    print(format_gate(result) if info["precision"] == "int8" else format_parity(result))
    if args.json:
        write_json(args.json, result)
    return 0


def run(args: argparse.Namespace) -> int:
    from densevlm.errors import DenseVLMError

    if args.images < 1:
        raise DenseVLMError(f"--images {args.images}: give at least 1")
    if args.threads is not None and args.threads < 1:
        raise DenseVLMError(f"--threads {args.threads}: give at least 1")
    if args.min_agreement is not None and not 0.0 < args.min_agreement <= 1.0:
        raise DenseVLMError(f"--min-agreement {args.min_agreement}: give a fraction in (0, 1], e.g. 0.99")
    if args.calibration_size < 1:
        raise DenseVLMError(f"--calibration-size {args.calibration_size}: give at least 1")
    if args.format == "onnx" and args.precision == "int8":
        raise DenseVLMError("--precision int8 is made with --format openvino (NNCF on the OpenVINO model)")
    if args.precision == "int8" and not args.calibration and not args.check:
        raise DenseVLMError("--precision int8 needs --calibration IMAGES: your own unlabeled images (a folder, glob, "
                            "COCO JSON or tar shards), never random data")
    if args.keep_float and (args.precision != "int8" or args.check):
        raise DenseVLMError("--keep-float chooses the float layers of a new int8 export; add --precision int8 "
                            "--format openvino (and drop --check)")
    if args.calibration and args.precision != "int8" and not args.check:
        raise DenseVLMError("--calibration calibrates an int8 export; add --precision int8 --format openvino")
    from densevlm.export import require_packages

    require_packages("onnx", "onnxruntime", "onnxscript")
    from densevlm.cli._common import existing_paths
    from densevlm.fileio import check_output

    inputs = existing_paths(args.vocab, args.model, args.pretrained, args.calibration, args.eval_data)
    if args.check:
        if args.out:
            raise DenseVLMError("--check DIR re-checks an existing export; drop --out (or drop --check to export)")
        shaping = [flag for flag, given in (("--vocab", args.vocab), ("--size", args.size), ("--opset", args.opset),
                                            ("--dynamic", args.dynamic), ("--fp16-embeddings", args.fp16_embeddings),
                                            ("--no-regions", args.no_regions), ("--skip-parity", args.skip_parity),
                                            ("--format", args.format != "onnx"),
                                            ("--precision", args.precision != "fp32"),
                                            ("--calibration-size", args.calibration_size != 300))
                   if given]
        if shaping:
            raise DenseVLMError(f"--check DIR re-checks the export as it was made (its manifest says its format "
                                f"and precision), so {', '.join(shaping)} cannot apply; drop them (or export again "
                                "with them)")
        if args.json:
            check_output(args.json, "file", inputs=[*inputs, args.check], overwrite=args.overwrite, flag="--json")
        return _check(args)
    if not args.out:
        raise DenseVLMError("--out DIR is required: where to write the export")
    check_output(args.out, "dir", inputs=inputs, overwrite=args.overwrite)
    if args.json:
        check_output(args.json, "file", inputs=inputs, overwrite=args.overwrite, flag="--json")
    if args.format == "openvino":
        return _export_edge(args)

    from densevlm.cli._common import write_json
    from densevlm.export import export_onnx, format_parity

    model, vocab = _model_and_vocabulary(args)
    manifest = export_onnx(
        model,
        args.out,
        vocab,
        size=args.size,
        opset=args.opset or 18,
        dynamic=args.dynamic,
        fp16_embeddings=args.fp16_embeddings,
        regions=not args.no_regions,
        parity=not args.skip_parity,
        parity_images=args.images,
        threads=args.threads,
        load_args=_load_args(args),
        progress=print,
    )
    info = manifest["export"]
    shape = "dynamic B/H/W" if info["dynamic"] else f"{info['size']}x{info['size']}, dynamic B"
    print(f"exported {manifest['model']['arch']} ({manifest['model']['source']}) to {args.out}: "
          f"{info['exporter']} exporter, opset {info['opset']}, {shape}, {info['seconds']:.1f} s")
    if info["fallback_reason"]:
        print(f"  (the new exporter failed: {info['fallback_reason']})")
    for name, record in manifest["files"].items():
        print(f"  {name:<28} {_human_bytes(record['bytes']):>9}  sha256 {record['sha256'][:16]}")
    emb = manifest["embeddings"]
    print(f"  text embeddings: {emb['shape'][0]} classes x {emb['shape'][1]}, {emb['dtype']}")
    parity = manifest["parity"]
    if parity is None:
        print("parity: skipped (--skip-parity); run `densevlm export --check DIR` later")
        return 0
    print(format_parity(parity))
    if args.json:
        write_json(args.json, parity)
    return 0 if parity["passed"] else 1


def _model_and_vocabulary(args: argparse.Namespace):
    """The model to export (on the CPU, ``--threads`` applied) and its vocabulary (``--vocab`` or the world's)."""
    import torch

    from densevlm.cli._common import load_model_arg
    from densevlm.data.synth import default_vocabulary
    from densevlm.vocab import load_vocabulary

    vocab = load_vocabulary(args.vocab) if args.vocab else default_vocabulary()
    model = load_model_arg(args.model or DEFAULT_MODEL, args.pretrained, "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    return model, vocab


def _load_args(args: argparse.Namespace) -> dict:
    """How the exported model was loaded, for the manifest (``export --check`` reloads it so)."""
    return {"model": _portable_name(args.model or DEFAULT_MODEL), "pretrained": _portable_name(args.pretrained)}
