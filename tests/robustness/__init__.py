"""Issue 12's kinds of bad or unusual input, one module per kind.

* test_image_decoding -- every Pillow mode decodes like its 8-bit version (float [0, 1] TIFF was black).
* test_image_frame -- one EXIF-oriented frame for every command (review import vs retrieve).
* test_vocabulary_tokens -- names past the text context, unknown words, indistinguishable classes.
* test_panoptic_ground_truth -- annotations without segments_info, PNG ids the JSON does not list.
* test_device -- a --device the machine lacks.
* test_output_paths -- output paths checked before any work, never an input, no silent overwrite.
* test_property_readers -- vocabulary, candidates and panoptic readers under arbitrary input.
"""
