"""``extauthz audit tail|export``: the decisions of every replica, from the Redis Stream."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from extauthz.audit.record import FIELDS
from extauthz.config import Settings
from extauthz.errors import ConfigError, StoreUnavailable
from extauthz.store.redis_client import is_redis_url, redis_client
from extauthz.store.redis_hash import redacted_url

_RELATIVE = re.compile(r"^-?(\d+)([smhd])$")  # "30m" or "-30m": that long ago
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_audit_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    a = sub.add_parser("audit", help="read the audit trail (needs audit.redis_stream)")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = asub.add_parser("tail", help="the latest decisions, newest last")
    tail.add_argument("--count", type=_count, default=20, help="how many (default 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new decisions")
    export = asub.add_parser("export", help="decisions in a time range")
    export.add_argument("--since", required=True, help="ISO time (2026-11-23T10:00:00Z), epoch "
                                                       "seconds, or how long ago: 30m, 2h, 1d")
    export.add_argument("--until", help="same forms; default: now")
    export.add_argument("--format", choices=("csv", "json"), default="csv",
                        help="csv (default; a header row, cells a spreadsheet cannot run) or "
                             "json (one object a line)")
    for p in (tail, export):
        p.add_argument("--subject", help="only this token `sub`, exactly")
        p.add_argument("--decision", choices=("allow", "deny"), help="only allows or only denies")
        with_config(p)


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text}: give at least 1")
    return count


def parse_time(value: str, now: float) -> float:
    m = _RELATIVE.match(value.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    if value.strip().isdigit():
        return float(value)
    try:
        stamp = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(f"time {value!r}: write 2026-11-23T10:00:00Z, epoch seconds, or 30m "
                          "(that long ago)") from e
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


# A spreadsheet runs a cell starting with these as a formula (`=HYPERLINK(…)`, `+1+2`,
# `-2+3`, `@SUM(…)`; tab and CR start one in some importers; the full-width forms are
# read as the ASCII ones by some).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: Any) -> Any:
    """A cell for ``audit export --format csv`` that no spreadsheet evaluates.

    Request ids, hosts, paths and subjects are chosen by clients and token holders; a text
    cell that would start a formula gets a leading ``'`` (OWASP's CSV-injection advice), so
    it reads as the same text. Numbers, booleans and empty cells are ours and kept as is.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    return {name: csv_cell(record.get(name)) for name in FIELDS}


def _keep(record: dict[str, Any], args: argparse.Namespace) -> bool:
    return ((args.subject is None or record.get("subject") == args.subject)
            and (args.decision is None or record.get("decision") == args.decision))


async def run_audit_command(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.audit.redis_url or settings.store.url or ""
    if not is_redis_url(url):
        raise ConfigError("the audit trail is read from Redis: set store.url to redis://… and "
                          "audit.redis_stream: true in the config (--config FILE, "
                          "$EXTAUTHZ_CONFIG or ./extauthz.yaml); stdout lines go to your log "
                          "pipeline")
    r: Any = redis_client(url, settings.store.timeout)
    stream = settings.store.prefix + "audit"
    try:
        if args.audit_command == "tail":
            return await _tail(r, stream, args)
        return await _export(r, stream, args)
    except BrokenPipeError:  # our reader left (`audit export | head`): not Redis' fault
        raise
    except (RedisError, OSError) as e:
        raise StoreUnavailable(f"redis {redacted_url(url)}: {e}") from e
    finally:
        await r.aclose()


async def _tail(r: Any, stream: str, args: argparse.Namespace) -> int:
    picked: list[dict[str, Any]] = []
    last = "+"
    while len(picked) < args.count:
        entries = await r.xrevrange(stream, max=last, min="-", count=500)
        if not entries:
            break
        for entry_id, fields in entries:
            if entry_id == last:
                continue
            record = json.loads(fields["record"])
            if _keep(record, args):
                picked.append(record)
                if len(picked) == args.count:
                    break
        last = entries[-1][0]
        if len(entries) < 500:
            break
    for record in reversed(picked):
        print(json.dumps(record, separators=(",", ":")))
    if not args.follow:
        return 0
    cursor = "$"
    try:
        while True:
            for _, entries in await r.xread({stream: cursor}, block=1000, count=500) or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    record = json.loads(fields["record"])
                    if _keep(record, args):
                        print(json.dumps(record, separators=(",", ":")), flush=True)
    except KeyboardInterrupt:
        return 0


async def _export(r: Any, stream: str, args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    since = int(parse_time(args.since, now) * 1000)
    until = int(parse_time(args.until, now) * 1000) if args.until else None
    writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, extrasaction="ignore") \
        if args.format == "csv" else None
    if writer:
        writer.writeheader()
    start = f"{since}-0"
    while True:
        entries = await r.xrange(stream, min=start, max=f"{until}-0" if until else "+", count=1000)
        for _, fields in entries:
            record = json.loads(fields["record"])
            if _keep(record, args):
                if writer:
                    writer.writerow(_csv_row(record))
                else:
                    print(json.dumps(record, separators=(",", ":")))
        if len(entries) < 1000:
            return 0
        start = "(" + entries[-1][0]
