"""Review the categories a teacher proposed for image regions, in a local web page.

  densevlm review init   --candidates candidates.jsonl [--images DIR] --db review.sqlite
  densevlm review serve  --db review.sqlite [--host 127.0.0.1] [--port 8765] [--token T]
  densevlm review export --db review.sqlite --format coco|labelstudio|jsonl --out FILE
  densevlm review stats  --db review.sqlite [--json stats.json]

`init` imports the output of `densevlm retrieve` (run it again with new candidates: regions
already there and their verdicts are kept). `serve` opens the page where experts accept a
candidate (keys 1-5), type another category, reject or mark unsure, and undo. `export` writes
COCO, Label Studio or JSONL files; `stats` says how far the teacher can be trusted.

A database another process is writing to is waited for $DENSEVLM_REVIEW_BUSY_TIMEOUT seconds
(default 5), then the command stops with one line saying so.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

TOKEN_ENV = "DENSEVLM_REVIEW_TOKEN"


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``densevlm review init: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(_review_help=p.format_help)
    verbs = p.add_subparsers(dest="review_verb", metavar="<verb>", parser_class=_OneLineParser)

    init = verbs.add_parser(
        "init",
        help="import candidates (JSONL from `densevlm retrieve`) into a review database",
        description="Import the regions of a candidates JSONL file into a review database (created if missing). "
        "Importing the same file again changes nothing; new regions are added; verdicts are never touched.",
    )
    init.add_argument("--candidates", required=True, metavar="FILE", help="candidates JSONL written by `densevlm retrieve`")
    init.add_argument("--images", metavar="DIR", help="images directory (default: the 'images' of the file's header)")
    init.add_argument("--db", required=True, metavar="FILE", help="review database (SQLite), e.g. review.sqlite")

    serve = verbs.add_parser(
        "serve",
        help="open the review page on http://127.0.0.1:8765/",
        description="Serve the review page and its JSON API. Binds 127.0.0.1 unless --host says otherwise; "
        f"with --token (or ${TOKEN_ENV}) every request must carry the token. Stop with Ctrl+C.",
    )
    serve.add_argument("--db", required=True, metavar="FILE", help="review database made by `densevlm review init`")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default: 8765; 0 picks a free one)")
    serve.add_argument("--token", metavar="T", help=f"require this token on every request (default: ${TOKEN_ENV} if set)")

    export = verbs.add_parser(
        "export",
        help="write reviewed regions as COCO, Label Studio or JSONL",
        description="Export the reviewed regions (verdicts resolved by majority over reviewers). "
        "coco: accepted and corrected regions as instances; labelstudio: tasks with rectangle predictions; "
        "jsonl: one line per region with the final category or rejected/unsure.",
    )
    export.add_argument("--db", required=True, metavar="FILE", help="review database")
    export.add_argument("--format", required=True, choices=["coco", "labelstudio", "jsonl"], help="output format")
    export.add_argument("--out", required=True, metavar="FILE", help="output file (written atomically)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    export.add_argument(
        "--image-prefix",
        default="/data/local-files/?d=",
        metavar="URL",
        help="labelstudio only: prefix of data.image before the file name relative to the images directory "
        "(default: Label Studio local files, /data/local-files/?d=)",
    )

    stats = verbs.add_parser(
        "stats",
        help="agreement of the teacher with the experts, trusted confidence, reviewer pace",
        description="Print review statistics: the teacher's top-1 agreement with the experts (overall and per "
        "category), the confidence above which it is right 95 % of the time, reviewer throughput and counts.",
    )
    stats.add_argument("--db", required=True, metavar="FILE", help="review database")
    stats.add_argument("--json", metavar="FILE", help="also write the statistics as JSON")
    stats.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    verb = args.review_verb
    if verb is None:
        print(args._review_help())
        return 0
    if verb == "init":
        return _init(args)
    if verb == "serve":
        return _serve(args)
    if verb == "export":
        return _export(args)
    return _stats(args)


def _init(args: argparse.Namespace) -> int:
    from densevlm.fileio import check_output
    from densevlm.review.importing import import_candidates

    # an existing database is imported into (that is what init does); it must not be an input
    check_output(args.db, "file", inputs=[args.candidates, args.images], overwrite=True, flag="--db")
    summary = import_candidates(args.db, args.candidates, args.images)
    print(
        f"{args.db}: added {summary.regions_added} regions ({summary.regions_present} already there), "
        f"{summary.images_added} images, {summary.classes_added} classes; {summary.total_regions} regions in total"
    )
    if summary.regions_differing:
        print(f"note: {summary.regions_differing} regions already there differ in this file; the database kept the first import")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from densevlm.errors import DenseVLMError

    try:
        from densevlm.review.app import make_server, page_url
    except ImportError as e:
        raise DenseVLMError(f"the review page needs fastapi and uvicorn ({e}); pip install 'densevlm[review]'") from None
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"warning: listening on {args.host} without a token; anyone who can reach it can review", file=sys.stderr)
    server, sock = make_server(args.db, args.host, args.port, token, log_level="warning")
    port = sock.getsockname()[1]
    print(f"review page: {page_url(args.host, port, token)}", flush=True)
    print("press Ctrl+C to stop", flush=True)
    server.run(sockets=[sock])
    return 0


def _export(args: argparse.Namespace) -> int:
    from densevlm.fileio import check_output
    from densevlm.review.export import export_reviews, labelstudio_config

    check_output(args.out, "file", inputs=[args.db], overwrite=args.overwrite)  # never the database itself
    export_reviews(args.db, args.format, args.out, image_prefix=args.image_prefix)
    if args.format == "labelstudio":
        print("Label Studio labeling config for these tasks:")
        print(labelstudio_config(args.db), end="")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from densevlm.fileio import check_output
    from densevlm.review.stats import format_stats, review_stats

    if args.json:
        check_output(args.json, "file", inputs=[args.db], overwrite=args.overwrite, flag="--json")
    stats = review_stats(args.db)
    print(format_stats(stats))
    if args.json:
        from densevlm.fileio import atomic_write_json

        atomic_write_json(args.json, stats)
        print(f"wrote {args.json}")
    return 0
