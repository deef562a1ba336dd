"""Issue 12's kinds of bad or unusual input, one module per kind.

* test_image_decoding -- every Pillow mode decodes like its 8-bit version (float [0, 1] TIFF was black).
* test_image_frame -- one EXIF-oriented frame for every command (review import vs retrieve), a
  pre-EXIF review database, panoptic ground truth in its stored frame.
* test_vocabulary_tokens -- names past the text context, unknown words, indistinguishable classes.
* test_panoptic_ground_truth -- annotations without segments_info, PNG ids the JSON does not list.
* test_device -- a --device the machine lacks.
* test_output_paths -- output paths checked before any work in every command, never an input
  (even with --overwrite), no silent overwrite; train refuses an earlier run without --resume/--overwrite.
* test_review_busy -- a review database locked by another writer: bounded wait, then one line.
* test_folder_scan -- a folder scan never reads densevlm's outputs, reads GIFs, says what it skipped.
* test_min_area -- thin images keep their regions; a run says when the limit removed every region.
* test_messages -- --check / --images given a file, a fixed-size ONNX export at another --size.
* test_atomic_write -- a failed write is one line naming the file; the earlier file is kept.
* test_property_readers -- vocabulary, candidates and panoptic readers under arbitrary input.
* test_training_state -- damaged state.pt / OUT.resume.pt / model files, non-finite weights never saved.
* test_one_sided_vocabulary -- train on only things or only stuff warns (nothing to decouple).
* test_nothing_learned -- a teacher that keeps no region: one line why, no NaN loss logged.
* tests/training/test_trainer.py::test_kill_and_resume_* -- exact resume at three kill points.
"""
