"""Inspection overlays: the image with a verdict banner and a labelled box per defect found.

Drawn at the display size of :func:`densevlm.inference.overlay.display_image` (small images are
upscaled so labels stay readable). Colours: NG red, UNSURE amber, OK green.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from densevlm.inference.overlay import display_image
from densevlm.inspection.verdict import Verdict

__all__ = ["render_verdict", "VERDICT_COLOURS"]

VERDICT_COLOURS = {"NG": (220, 30, 40), "UNSURE": (240, 170, 20), "OK": (40, 170, 60), "ERROR": (128, 128, 128)}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def render_verdict(image: Image.Image, verdict: Verdict, max_side: int = 2048) -> Image.Image:
    """``image`` (RGB, original size) with the verdict banner on top and the defects' boxes."""
    shown = display_image(image.convert("RGB"), max_side=max_side)
    sx, sy = shown.width / image.width, shown.height / image.height
    font_size = max(12, shown.height // 28)
    font = _font(font_size)
    banner = font_size + 10
    canvas = Image.new("RGB", (shown.width, shown.height + banner), VERDICT_COLOURS[verdict.verdict])
    canvas.paste(shown, (0, banner))
    draw = ImageDraw.Draw(canvas)
    title = f"{verdict.verdict}  score {verdict.score:.3f}" if verdict.verdict != "ERROR" else "ERROR"
    draw.text((6, 5), title, fill=(255, 255, 255), font=font)
    colour = VERDICT_COLOURS["NG" if verdict.verdict == "NG" else "UNSURE"]
    width = max(2, shown.width // 160)
    for defect in verdict.defects:
        x1, y1, x2, y2 = defect.box
        box = (x1 * sx, y1 * sy + banner, x2 * sx - 1, y2 * sy + banner - 1)
        draw.rectangle(box, outline=colour, width=width)
        label = f"{defect.name} {defect.score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), label, font=font)
        y = max(banner, box[1] - (bottom - top) - 4)
        draw.rectangle((box[0], y, box[0] + right - left + 6, y + bottom - top + 4), fill=colour)
        draw.text((box[0] + 3, y + 2 - (top - box[1])), label, fill=(255, 255, 255), font=font)
    return canvas
