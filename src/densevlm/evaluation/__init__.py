"""Region classification (box / mask / crop mAcc), foreground bias and mIoU."""

from densevlm.evaluation.metrics import RegionCounter, SegmentationCounter, mean_class_accuracy
from densevlm.evaluation.protocol import EvalConfig, EvalResult, dataset_vocabulary, evaluate, map_categories
from densevlm.evaluation.table import format_table, write_per_class_csv

__all__ = [
    "EvalConfig",
    "EvalResult",
    "RegionCounter",
    "SegmentationCounter",
    "dataset_vocabulary",
    "evaluate",
    "format_table",
    "map_categories",
    "mean_class_accuracy",
    "write_per_class_csv",
]
