"""The embedded offline world: procedural factory-floor scenes with exact panoptic ground truth."""

from densevlm.data.synth.categories import CATEGORIES, STUFF, THINGS
from densevlm.data.synth.scene import Scene, Segment, make_caption, make_scene, scene_caption
from densevlm.data.synth.writer import generate_scene, world_vocabulary_text, write_world

__all__ = [
    "CATEGORIES",
    "STUFF",
    "THINGS",
    "Scene",
    "Segment",
    "generate_scene",
    "make_caption",
    "make_scene",
    "scene_caption",
    "world_vocabulary_text",
    "write_world",
]
