"""The `feedsvc` command: operator tasks that run beside the service, never inside a request."""

import argparse
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.engine import make_url

from feedsvc.config import Config, ConfigError
from feedsvc.database import create_engine, init_db
from feedsvc.store import Store
from feedsvc.version import release

PROGRESS_BAR_WIDTH = 40
DEFAULT_REPORT_MINUTES = 15.0


def init_db_command(config: Config, _args: argparse.Namespace) -> None:
    init_db(config)
    print(f"feedsvc: schema ready at {make_url(config.database_url)!r}")


def perf_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", help="Kafka brokers, host:port[,host:port] (default: FEED_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument("--topic", help="the perf topic (default: FEED_KAFKA_PERF_TOPIC)")
    since = parser.add_mutually_exclusive_group()
    since.add_argument(
        "--from-beginning", action="store_true", help="read every record the topic holds"
    )
    since.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_REPORT_MINUTES,
        help=f"read the records of the last N minutes (default {DEFAULT_REPORT_MINUTES})",
    )


def perf_report_command(config: Config, args: argparse.Namespace) -> None:
    bootstrap = [part.strip() for part in (args.bootstrap or "").split(",") if part.strip()]
    bootstrap = bootstrap or list(config.kafka_bootstrap)
    if not bootstrap:
        sys.exit("feedsvc: perf-report needs --bootstrap or FEED_KAFKA_BOOTSTRAP")
    if args.minutes <= 0:
        sys.exit("feedsvc: --minutes must be positive")
    # Imported here, not at the top: only this command needs the Kafka client.
    from kafka.errors import KafkaError

    from feedsvc.kafka.perf_report import perf_report

    try:
        print(
            perf_report(
                bootstrap,
                args.topic or config.kafka_perf_topic,
                None if args.from_beginning else args.minutes,
            )
        )
    except (KafkaError, LookupError, TimeoutError) as error:
        sys.exit(f"feedsvc: perf-report: {error}")


def reindex_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recreate",
        action="store_true",
        help="drop and create the index first (after a mapping change); searches see a partial "
        "index until it finishes",
    )


def reindex_command(config: Config, args: argparse.Namespace) -> None:
    """Rebuild the Elasticsearch index from the database, showing progress on stderr."""
    if not config.search_urls:
        sys.exit("feedsvc reindex: FEED_SEARCH_URL is not set; the embedded index needs no rebuild")
    from feedsvc.search.elastic import ElasticIndex, create_client, reindex

    engine = create_engine(config)
    index = ElasticIndex(create_client(config.search_urls), config.search_index)
    try:
        done = 0
        for done, total in reindex(Store(engine), index, recreate=args.recreate):
            show_progress(done, total)
        print(file=sys.stderr)
        documents = index.count()
        posts = Store(engine).post_count()
    finally:
        engine.dispose()
        index.client.close()
    print(
        f"feedsvc: reindexed {done} posts; index {index.name!r} holds {documents} documents, "
        f"the database {posts} posts"
    )
    if documents < done:
        sys.exit("feedsvc reindex: the index holds fewer documents than were written")


def show_progress(done: int, total: int) -> None:
    filled = PROGRESS_BAR_WIDTH * done // total if total else PROGRESS_BAR_WIDTH
    bar = "#" * filled + "-" * (PROGRESS_BAR_WIDTH - filled)
    percent = 100 * done // total if total else 100
    print(f"\rreindex [{bar}] {percent:3d}% {done}/{total} posts", end="", file=sys.stderr)


COMMANDS: dict[str, tuple[str, Callable[[Config, argparse.Namespace], None]]] = {
    "init-db": ("create or upgrade the schema and search index (idempotent)", init_db_command),
    "reindex": ("rebuild the Elasticsearch index from the database", reindex_command),
    "perf-report": (
        "per-minute throughput, mean, p50 and p95 per entity/operation from the Kafka perf topic",
        perf_report_command,
    ),
}
# Options of the commands that take any.
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "reindex": reindex_arguments,
    "perf-report": perf_report_arguments,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="feedsvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"feedsvc {release()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (summary, _run) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name in ARGUMENTS:
            ARGUMENTS[name](command)
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as error:
        sys.exit(f"feedsvc: {error}")
    COMMANDS[args.command][1](config, args)
