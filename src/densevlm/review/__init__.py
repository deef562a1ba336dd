"""The expert review loop: an SQLite store of proposed regions, a local web page, exports, statistics.

Nothing here needs torch. The public surface::

    densevlm.review.candidates.read_candidates(path) -> (header, regions)
    densevlm.review.store.import_candidates(db_path, candidates_path, images_dir=None) -> ImportSummary
    densevlm.review.store.load_reviewed_regions(db_path) -> list[ReviewedRegion]
    densevlm.review.store.reviewed_vocabulary(db_path) -> Vocabulary
    densevlm.review.export.export_reviews(db_path, fmt, out_path) -> Path
    densevlm.review.stats.review_stats(db_path) -> dict
    densevlm.review.app.create_app(db_path, token=None) -> FastAPI
"""
