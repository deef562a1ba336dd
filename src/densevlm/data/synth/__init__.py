"""The embedded offline world: procedural factory-floor scenes with exact panoptic ground truth."""

from densevlm.data.synth.categories import CATEGORIES, STUFF, THINGS
from densevlm.data.synth.scene import Scene, Segment, make_caption, make_scene, scene_caption
from densevlm.data.synth.vocabulary import default_vocabulary, world_vocabulary_text
from densevlm.data.synth.writer import generate_scene, write_world

__all__ = [
    "CATEGORIES",
    "STUFF",
    "THINGS",
    "Scene",
    "Segment",
    "default_vocabulary",
    "generate_scene",
    "make_caption",
    "make_scene",
    "scene_caption",
    "world_vocabulary_text",
    "write_world",
]
