"""Generate the embedded factory-floor world: parts and defects on belts, plates, pallets...

Writes COCO panoptic files (images/, panoptic/, panoptic.json) with exact ground truth, plus
captions.jsonl (web-like captions that always name the parts and only sometimes the
background) and vocab.txt. The same --seed gives byte-identical files; use different seeds
for training and held-out sets.

Example:
  densevlm synth --out world/val --n 500 --seed 2000000
  densevlm synth --out line/ref --n 500 --seed 3000000 --defect-rate 0.5
  densevlm synth --out line/dark --n 100 --seed 3100000 --defect-rate 0.5 --shift lighting
  densevlm synth --out plant/pool --n 2000 --seed 5 --plant-words
  densevlm synth --out plant/line --n 500 --seed 3200000 --plant-words --defect-rate 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--n", type=int, default=500, help="number of images (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels, a multiple of 8 (default: 64)")
    p.add_argument("--p-stuff", type=float, default=0.15,
                   help="probability that a caption names the background (default: 0.15, which makes the "
                        "foreground-biased captions a web-trained CLIP sees)")
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default: 2)")
    p.add_argument("--defect-rate", type=float, default=None, metavar="R",
                   help="share of NG images (at least one defect; the others hold parts only); writes "
                        "inspection.json with the per-image ground truth (default: the reference mix)")
    p.add_argument("--shift", default=None, choices=("lighting", "blur", "new-surface", "new-defect", "camera"),
                   help="a drifted line: darker, blurred, a new surface (cardboard), a new defect (oil stain) "
                        "or a 1.5x camera zoom")
    p.add_argument("--plant-words", action="store_true",
                   help="add four classes no caption ever names (burr, weld spatter, porosity, rivet), as a "
                        "plant's own words are unknown to a web-trained VLM; review teaches them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the world in an --out folder that is not empty (an earlier world's numbered "
                        "images and masks and its JSON and text files are removed first; nothing else is touched)")


def run(args: argparse.Namespace) -> int:
    import time

    from densevlm.data.synth import write_world
    from densevlm.fileio import check_output

    out = Path(args.out)
    if not args.overwrite and (out / "images").is_dir() and not (out / "panoptic.json").is_file():
        from densevlm.errors import DenseVLMError

        raise DenseVLMError(f"--out {out}: holds an unfinished world (images but no panoptic.json: an interrupted "
                            "synth?); pass --overwrite to write it again")
    check_output(args.out, "dir", overwrite=args.overwrite)
    if args.overwrite:
        _remove_world(Path(args.out))
    start = time.perf_counter()
    out = write_world(args.out, args.n, seed=args.seed, size=args.size, p_stuff=args.p_stuff, workers=args.workers,
                      plant_words=args.plant_words, defect_rate=args.defect_rate, shift=args.shift)
    print(f"wrote {args.n} scenes to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _remove_world(out: Path) -> None:
    """The files an earlier ``synth`` wrote in ``out`` (its numbered images and masks, ``panoptic.json``,
    ``captions.jsonl``, ``vocab.txt``, ``inspection.json``), so that a smaller world written over a
    larger one leaves none of the old scenes behind."""
    for folder in ("images", "panoptic"):
        for path in (out / folder).glob("*.png"):
            if path.stem.isdigit():
                path.unlink()
    for name in ("panoptic.json", "captions.jsonl", "vocab.txt", "inspection.json"):
        (out / name).unlink(missing_ok=True)
