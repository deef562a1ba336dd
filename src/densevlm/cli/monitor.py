"""Compare a production batch with a reference set: `stable`, or `drift` and what to do.

The reference is a set of images from the line as it was when the model was evaluated and
calibrated (e.g. the calibration images), or the statistics of such a set saved once with
--save-reference ref.json. Eight signals are tested on per-image statistics:

  class_shares    population stability index of the predicted class shares (permutation p-value)
  defect_mix      the same for the shares of each defect and of "not a defect"
  scores          two-sample Kolmogorov-Smirnov test of the NG scores
  defect_scores   MMD of the per-image vectors of defect scores (permutation p-value): a new
                  defect, or one gone, changes how much each image looks like each defect
  low_confidence  Mann-Whitney U test: more low-confidence pixels than in the reference
  embeddings      MMD of the pooled image embeddings (Gaussian kernel, permutation p-value)
  brightness      KS test of the mean luma per image
  sharpness       KS test of the variance of the Laplacian per image (focus, camera distance)

--alpha (default 0.05) is the false-drift rate over all of them together (weighted Simes test):
each p-value is divided by its weight, 4 for defect_scores (half of alpha: a defect the
vocabulary does not name shows mostly there) and 4/7 for each other signal (all 1 without
[defects]); with these 8 weighted p-values (6 without [defects]) sorted ascending, the batch
drifted when the i-th smallest is at most i x alpha / 8 for some i, i.e. when a
Benjamini-Hochberg adjusted p-value is at most alpha. One signal alone fires at p <= 0.025
(defect_scores) or p <= 0.0036 (the others); several moderately small ones fire together. The
signals named as fired are those whose adjusted p-value is at most alpha; --json records the
rule ("rule": "weighted-simes") and each signal's p_value, weight and p_adjusted. Each names an
action: re-calibrate (scores, brightness), re-evaluate on labelled images (class shares,
embeddings, sharpness), review new regions (low confidence, defect mix, defect scores).

INPUT for --reference / --batch: image folders (a `densevlm synth` folder means its images/),
files or globs; --reference may also be a ref.json. With --operating-point the scores use its
settings and the model and vocabulary are checked against it.

Exit status: 0, or 1 with --fail-on-drift when the batch drifted.

Examples:
  densevlm monitor --model tuned.pt --reference calib/ --save-reference ref.json
  densevlm monitor --model tuned.pt --reference ref.json --batch today/ --json drift.json --history drift/
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from densevlm.cli._common import add_model_arguments
    from densevlm.inspection.monitor import DEFAULT_ALPHA

    add_model_arguments(p, default=argparse.SUPPRESS,
                        role=" (default: the model of --operating-point or of a ref.json, else tiny-student)")
    p.add_argument("--reference", required=True, metavar="REF", help="reference images, or a ref.json from --save-reference")
    p.add_argument("--batch", nargs="+", default=None, metavar="NEW", help="the production batch: image folders, files or globs")
    p.add_argument("--vocab", default=None, metavar="FILE", help="vocabulary (default: the operating point's, else the embedded world's)")
    p.add_argument("--operating-point", default=None, metavar="OP.JSON", help="take the score settings from this operating point")
    p.add_argument("--save-reference", default=None, metavar="REF.JSON", help="save the reference statistics for later runs")
    p.add_argument("--json", default=None, metavar="FILE", help="write the drift report here")
    p.add_argument("--history", default=None, metavar="DIR", help="also keep the report as DIR/NNNN-BATCH.json (one per batch)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit with status 1 when the batch drifted")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"false-drift rate over all signals together, weighted Simes test (default: {DEFAULT_ALPHA})")
    p.add_argument("--permutations", type=int, default=1000,
                   help="permutations for the PSI and MMD p-values (default: 1000; at least 280 at alpha 0.05)")
    p.add_argument("--seed", type=int, default=0, help="permutation seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json / --save-reference files")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _stats(model, specs: list[str], vocab, cfg, batch_size: int):
    from densevlm.inference.io import collect_inputs
    from densevlm.errors import DenseVLMError
    from densevlm.inspection.monitor import BatchStats
    from densevlm.inspection.scores import analyse_images, readable_images

    images = collect_inputs(specs)
    errors: dict[int, str] = {}
    analyses = list(analyse_images(model, readable_images([im.path for im in images], cfg.size, errors), vocab, cfg,
                                   batch_size))
    if not analyses:
        raise DenseVLMError(f"{' '.join(specs)}: none of the {len(images)} images could be read")
    if errors:
        print(f"{' '.join(specs)}: {len(errors)} of {len(images)} images skipped (listed above); "
              f"the statistics are of the other {len(analyses)}")
    return BatchStats.from_analyses(analyses, vocab.defect_indices)


def _history_path(folder: Path, batch: list[str]) -> Path:
    import re

    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("[0-9][0-9][0-9][0-9]-*.json"))) + 1
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(batch[0].rstrip("/")).name or "batch")[:60]
    return folder / f"{n:04d}-{slug}.json"


def run(args: argparse.Namespace) -> int:
    import time

    from densevlm.cli._common import default_device, existing_paths, load_model_arg, write_json
    from densevlm.cli.calibrate import load_vocab_arg
    from densevlm.errors import DenseVLMError
    from densevlm.fileio import check_output
    from densevlm.imaging import IMAGE_SUFFIXES
    from densevlm.inspection.monitor import compare, load_reference, save_reference
    from densevlm.inspection.operating_point import OperatingPoint
    from densevlm.inspection.scores import ScoreConfig

    if args.batch is None and args.save_reference is None:
        raise DenseVLMError("give --batch NEW to compare, or --save-reference REF.JSON to store the reference")
    inputs = existing_paths(args.reference, *(args.batch or ()), args.vocab, args.operating_point,
                            getattr(args, "model", None), args.pretrained)
    for flag, path in (("--json", args.json), ("--save-reference", args.save_reference)):
        if path:
            check_output(path, "file", inputs=inputs, overwrite=args.overwrite, flag=flag)
    if args.history:  # one new numbered file per batch: an existing folder is the point
        check_output(args.history, "dir", inputs=inputs, overwrite=True, flag="--history")
    if not 0.0 < args.alpha < 1.0:
        raise DenseVLMError(f"--alpha {args.alpha} must be in (0, 1)")
    reference_path = Path(args.reference)
    if (reference_path.is_file() and reference_path.suffix.lower() != ".json"
            and reference_path.suffix.lower() not in IMAGE_SUFFIXES):
        raise DenseVLMError(f"--reference {args.reference}: neither images (a folder, a glob or an image file) nor "
                            "a ref.json saved by --save-reference")
    op = OperatingPoint.load(args.operating_point) if args.operating_point else None
    vocab = load_vocab_arg(args.vocab) if args.vocab or op is None else op.vocab
    saved = load_reference(args.reference) if args.reference.endswith(".json") else None
    if not hasattr(args, "model"):
        ref_model = saved[1].get("model") if saved is not None else None
        recorded = op.model_name if op is not None else ref_model.get("name") if isinstance(ref_model, dict) else None
        args.model = recorded if isinstance(recorded, str) and recorded else "tiny-student"
    model = load_model_arg(args.model, args.pretrained, default_device(args.device))
    checksum = model.backbone.weights_sha256()
    if op is not None:
        op.check(checksum, vocab)
    cfg = (op.score if op is not None else ScoreConfig()).resolved(model)
    meta = {"model": {"name": args.model, "sha256": checksum}, "vocabulary": {"fingerprint": vocab.fingerprint(),
            "names": list(vocab.names)}, "score": cfg.to_json()}
    started = time.perf_counter()
    if saved is not None:
        reference, ref_meta = saved
        if ref_meta.get("model", {}).get("sha256") != checksum or ref_meta.get("vocabulary", {}).get("fingerprint") != vocab.fingerprint():
            raise DenseVLMError(f"{args.reference}: reference statistics were made with another model or vocabulary "
                                f"({ref_meta.get('model', {}).get('name')}); rebuild it with --save-reference")
        if ref_meta.get("score") != cfg.to_json():
            raise DenseVLMError(f"{args.reference}: reference scores used other settings ({ref_meta.get('score')}); rebuild it")
    else:
        reference = _stats(model, [args.reference], vocab, cfg, args.batch_size)
    if args.save_reference:
        save_reference(args.save_reference, reference, meta, overwrite=args.overwrite)
        print(f"reference statistics of {len(reference)} images: {args.save_reference}")
    if args.batch is None:
        return 0
    batch = _stats(model, args.batch, vocab, cfg, args.batch_size)
    report = compare(reference, batch, alpha=args.alpha, n_resamples=args.permutations, seed=args.seed)
    report.update({"reference": args.reference, "batch": args.batch, "seconds": round(time.perf_counter() - started, 2),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta})
    print(f"{report['verdict']}: batch of {len(batch)} images against {len(reference)} reference images")
    for name, entry in report["signals"].items():
        print(f"  {'FIRED' if entry['fired'] else 'ok':5} {name:15} statistic {entry['statistic']:.4f}  "
              f"p {entry['p_value']:.4f}  adjusted {entry['p_adjusted']:.4f}")
    for action in report["actions"]:
        print(f"  -> {action}")
    if args.json:
        write_json(args.json, report)
    if args.history:
        write_json(_history_path(Path(args.history), args.batch), report)
    return 1 if args.fail_on_drift and report["verdict"] == "drift" else 0
