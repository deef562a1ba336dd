"""The expert review loop: an SQLite store of proposed regions, a local web page, exports, statistics.

Nothing here needs torch; the web page (:mod:`densevlm.review.app`) needs fastapi and is not imported here.
Modules in the order data flows: candidates -> store, importing -> session, progress -> resolve -> reviewed,
export, stats.
"""

from densevlm.review.candidates import read_candidates
from densevlm.review.export import export_reviews, labelstudio_config
from densevlm.review.importing import ImportSummary, import_candidates
from densevlm.review.progress import review_progress
from densevlm.review.resolve import conflicts, resolved_regions
from densevlm.review.reviewed import ReviewedSet, load_reviewed
from densevlm.review.session import RegionNotFound, add_verdict, clean_reviewer, history, image_file, next_region, region, undo
from densevlm.review.stats import format_stats, review_stats, trusted_threshold
from densevlm.review.store import SCHEMA_VERSION, STATUSES, ReviewStore

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "ImportSummary", "RegionNotFound", "ReviewStore", "ReviewedSet",
    "add_verdict", "clean_reviewer", "conflicts", "export_reviews", "format_stats", "history", "image_file",
    "import_candidates", "labelstudio_config", "load_reviewed", "next_region", "read_candidates", "region",
    "resolved_regions", "review_progress", "review_stats", "trusted_threshold", "undo"
]
