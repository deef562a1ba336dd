"""Region classification (box / mask / crop mAcc), foreground bias and mIoU."""

from densevlm.evaluation.metrics import RegionCounter, SegmentationCounter, mean_class_accuracy, subset_mean_accuracy
from densevlm.evaluation.protocol import EvalConfig, EvalResult, dataset_vocabulary, evaluate, make_validator, map_categories
from densevlm.evaluation.regions import evaluate_regions, evaluate_reviewed
from densevlm.evaluation.table import format_table, write_per_class_csv
from densevlm.regions.labelled import LabelledRegion

__all__ = [
    "EvalConfig",
    "EvalResult",
    "RegionCounter",
    "SegmentationCounter",
    "dataset_vocabulary",
    "evaluate",
    "evaluate_regions",
    "evaluate_reviewed",
    "LabelledRegion",
    "format_table",
    "make_validator",
    "map_categories",
    "mean_class_accuracy",
    "subset_mean_accuracy",
    "write_per_class_csv",
]
