"""The `feedsvc` command: operator tasks that run beside the service, never inside a request."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from feedsvc.adapters.search.rebuild import reindex
from feedsvc.adapters.store import Store
from feedsvc.compose import nginx
from feedsvc.compose.schema import init_db
from feedsvc.compose.search import create_search
from feedsvc.core.clock import utc_now
from feedsvc.core.config import Config, ConfigError
from feedsvc.core.version import release
from feedsvc.db.engines import create_engine

if TYPE_CHECKING:  # imported by the command itself: only reindex needs the Elasticsearch client
    from feedsvc.adapters.search.elastic import ElasticIndex

PROGRESS_BAR_WIDTH = 40
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
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

    from feedsvc.adapters.kafka.perf_report import perf_report

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


def duration(text: str) -> timedelta:
    """`90s`, `30m`, `6h` or `2d`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 6h or 2d")
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def reindex_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--recreate",
        action="store_true",
        help="drop and create the index first (after a mapping change); searches see a partial "
        "index until it finishes",
    )
    mode.add_argument(
        "--since",
        type=duration,
        metavar="DURATION",
        help="only check the posts of the last DURATION (30m, 6h, 2d) and send those the index "
        "is missing",
    )


def reindex_command(config: Config, args: argparse.Namespace) -> None:
    """Rebuild the search index (Elasticsearch or the embedded file) from the database."""
    engine = create_engine(config)
    search = create_search(config, engine)
    try:
        if search.index is None:
            sys.exit("feedsvc reindex: MySQL's FULLTEXT index is part of the table: nothing to do")
        store = Store(engine)
        if args.since is not None:
            if not config.search_urls:
                sys.exit(
                    "feedsvc reindex: --since checks Elasticsearch; the embedded index "
                    "catches up by itself"
                )
            reconcile_since(store, search.index, args.since)
            return
        done = 0
        for done, total in reindex(store, search.index, recreate=args.recreate):
            show_progress(done, total)
        print(file=sys.stderr)
        documents = search.index.count()
        posts = store.post_count()
    finally:
        search.close()
        engine.dispose()
    print(
        f"feedsvc: reindexed {done} posts; index {search.index.name!r} holds {documents} "
        f"documents, the database {posts} posts"
    )
    if documents < done:
        sys.exit("feedsvc reindex: the index holds fewer documents than were written")


def reconcile_since(store: Store, index: ElasticIndex, since: timedelta) -> None:
    """Send the index the posts of the period that it is missing; the others are left alone."""
    # Imported here, like the Elasticsearch client it needs: only this command uses it.
    from feedsvc.adapters.search.reconcile import resend_missing

    first_id = store.first_post_id_since(utc_now() - since)
    checked = resent = 0
    if first_id:
        for checked, resent in resend_missing(store, index, first_id - 1):
            print(f"\rreindex --since: {checked} checked, {resent} sent", end="", file=sys.stderr)
        print(file=sys.stderr)
    print(
        f"feedsvc: checked {checked} posts of the last {since}; sent {resent} missing from "
        f"index {index.name!r}"
    )


def show_progress(done: int, total: int) -> None:
    filled = PROGRESS_BAR_WIDTH * done // total if total else PROGRESS_BAR_WIDTH
    bar = "#" * filled + "-" * (PROGRESS_BAR_WIDTH - filled)
    percent = 100 * done // total if total else 100
    print(f"\rreindex [{bar}] {percent:3d}% {done}/{total} posts", end="", file=sys.stderr)


def nginx_conf_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("template", type=Path, help="config/nginx/feedsvc.conf")
    parser.add_argument(
        "--upstream", required=True, help="where gunicorn listens: unix:/path or host:port"
    )
    parser.add_argument("--access-log", required=True, help="an absolute path, or off")
    parser.add_argument(
        "--extra-dir", required=True, help="a directory whose *.conf the server block includes"
    )
    parser.add_argument(
        "--connections-per-client",
        type=int,
        default=nginx.DEFAULT_CONNECTIONS_PER_CLIENT,
        help="requests one client address may have in progress (default %(default)s)",
    )


def nginx_conf_command(config: Config, args: argparse.Namespace) -> None:
    try:
        rendered = nginx.render(
            args.template.read_text(),
            config,
            upstream=args.upstream,
            access_log=args.access_log,
            extra_dir=args.extra_dir,
            connections_per_client=args.connections_per_client,
        )
    except (OSError, nginx.NginxConfigError) as error:
        sys.exit(f"feedsvc nginx-conf: {error}")
    sys.stdout.write(rendered)


COMMANDS: dict[str, tuple[str, Callable[[Config, argparse.Namespace], None]]] = {
    "init-db": ("create or upgrade the schema and search index (idempotent)", init_db_command),
    "reindex": ("rebuild the search index from the database", reindex_command),
    "nginx-conf": (
        "print the nginx front proxy's config for this host's settings",
        nginx_conf_command,
    ),
    "perf-report": (
        "per-minute throughput, mean, p50 and p95 per entity/operation from the Kafka perf topic",
        perf_report_command,
    ),
}
# Options of the commands that take any.
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "nginx-conf": nginx_conf_arguments,
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
