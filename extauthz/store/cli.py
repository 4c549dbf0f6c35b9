"""``extauthz store status|reseed``: see whether the Redis store lost data, and restore it.

A store that lost data (flushed, restarted without persistence, evicted, failed over to a
lagging replica) is refused by every worker that held a snapshot, and ordinary writes
(`policy apply`, `revoke`) are refused until it is restored. ``reseed`` is the one way:
from a worker's local snapshot (``store.snapshot_file``: policies and revocations) and/or
from the policy documents in git. It writes a new ``reseed-`` epoch, which the workers
accept; revocations are only ever added (a restore never lifts one), and workers add back
any still in force that the snapshot lacked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import Settings
from extauthz.errors import ConfigError
from extauthz.policy.model import Policy, parse_policies
from extauthz.policy.store import RedisPolicyStore
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import RedisRevocationStore
from extauthz.store.floor import FloorSection, floor_path, read_snapshot_file, store_id
from extauthz.store.redis_client import is_redis_url
from extauthz.store.redis_hash import CONDITIONS, StoreState, judge
from extauthz.store.redis_safety import check_redis


def add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("store", help="the Redis store: has it lost data? restore it")
    ssub = s.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    status = ssub.add_parser("status", help="revisions, loss markers and Redis' settings "
                                            "(exit 1 when anything needs attention)")
    reseed = ssub.add_parser(
        "reseed", help="restore a store that lost data (the one way past a loss)",
        description="Restore policies and revocations into a Redis store that lost data, under "
                    "a new epoch every worker accepts. Give a worker's local snapshot "
                    "(store.snapshot_file) and/or the policy documents from git.")
    reseed.add_argument("--from-snapshot", metavar="FILE",
                        help="a worker's store.snapshot_file: its policies and revocations")
    reseed.add_argument("--policies-from", metavar="FILE|DIR",
                        help="the whole policy set from documents (e.g. your git checkout); "
                             "replaces the snapshot's policies")
    reseed.add_argument("--empty-revocations", action="store_true",
                        help="no snapshot survives: restart revocations from none (workers "
                             "that still hold some write them back)")
    reseed.add_argument("--force", action="store_true",
                        help="also replace a store that looks healthy")
    for p in (status, reseed):
        with_config(p)


def _stores(settings: Settings) -> tuple[RedisPolicyStore | None, RedisRevocationStore]:
    """The Redis hashes: the policies' only when they are not read from files
    (store.policies)."""
    s = settings.store
    if not s.url or not is_redis_url(s.url):
        raise ConfigError("`extauthz store` is for a Redis store: set store.url to redis://… in "
                          "the config (--config FILE, $EXTAUTHZ_CONFIG or ./extauthz.yaml) or "
                          "EXTAUTHZ_STORE_URL")
    revocations = RedisRevocationStore(s.url, s.prefix, s.timeout, SYSTEM_CLOCK)
    if s.policies is not None:
        return None, revocations
    return RedisPolicyStore(s.url, s.prefix, s.timeout), revocations


def _problem(state: StoreState) -> str | None:
    condition = judge(None, state)
    if state.lost is not None:
        return f"LOST, restore needed: {state.lost}"
    if condition is not None:
        return f"LOST, restore needed: {CONDITIONS[condition]} [{condition}]"
    return None


def _describe(state: StoreState) -> str:
    counted = "" if state.count is None else f" (the last write left {state.count})"
    last = "" if state.write is None else f", last write {state.write}"
    return f"revision {state.revision}{last}, {state.records} record(s){counted}"


async def _status(settings: Settings) -> int:
    policies, revocations = _stores(settings)
    try:
        bad = False
        if policies is None:
            print(f"policies: read from {settings.store.policies} (store.policies), not Redis")
        for name, store in (("policies", policies), ("revocations", revocations)):
            if store is None:
                continue
            state = await store.state()
            problem = _problem(state)
            bad = bad or problem is not None
            print(f"{name}: {_describe(state)}: {problem or 'ok'}")
        safety = await check_redis(revocations.client, revocations.description)
        bad = bad or not safety.safe
        print(f"redis: {'ok' if safety.safe else 'UNSAFE'}: {safety.detail}")
        path = floor_path(settings.store)
        if Path(path).exists():
            written_for, sections = read_snapshot_file(path)
            held = ", ".join(f"{k} {v.state.revision} ({len(v.items)})" for k, v in sections.items())
            print(f"local snapshot: {path}: {held or 'empty'} (for {written_for})")
        return 1 if bad else 0
    finally:
        if policies is not None:
            await policies.close()
        await revocations.close()


def _snapshot(path: str, settings: Settings) -> dict[str, FloorSection]:
    written_for, sections = read_snapshot_file(path)
    here = store_id(settings.store.url or "", settings.store.prefix)
    if written_for != here:
        print(f"note: {path} was written for {written_for}; restoring into {here}",
              file=sys.stderr)
    return sections


def _policies(args: argparse.Namespace,
              sections: dict[str, FloorSection]) -> tuple[list[Policy], str] | None:
    if args.policies_from:
        from extauthz.policy.cli import read_documents

        return read_documents(args.policies_from), args.policies_from
    if "policies" in sections:
        docs = [dict(d) for d in sections["policies"].items]
        return parse_policies(docs, args.from_snapshot), args.from_snapshot
    return None


def _revocations(args: argparse.Namespace,
                 sections: dict[str, FloorSection]) -> tuple[list[Revocation], str] | None:
    if "revocations" in sections:
        try:
            records = [Revocation(**dict(r)) for r in sections["revocations"].items]
        except TypeError as e:
            raise ConfigError(f"{args.from_snapshot}: a revocation record is malformed ({e})") from e
        return records, args.from_snapshot
    if args.empty_revocations:
        return [], "nothing (--empty-revocations)"
    return None


async def _due(name: str, state: StoreState, plan: object, args: argparse.Namespace) -> bool:
    if plan is None:
        if _problem(state) is not None:
            more = ", or --empty-revocations" if name == "revocations" else ""
            print(f"{name}: still LOST ({_describe(state)}); restore them too (--from-snapshot "
                  f"FILE{more})")
        return False
    if _problem(state) is None and not state.empty and not args.force:
        print(f"{name}: the store looks healthy ({_describe(state)}); left alone (--force "
              "replaces it)")
        return False
    return True


async def _reseed(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.from_snapshot or args.policies_from or args.empty_revocations):
        raise ConfigError("store reseed: give --from-snapshot FILE (a worker's "
                          "store.snapshot_file), --policies-from FILE|DIR, or both")
    sections = _snapshot(args.from_snapshot, settings) if args.from_snapshot else {}
    plan_policies = _policies(args, sections)  # everything is read and validated first
    plan_revocations = _revocations(args, sections)
    policies, revocations = _stores(settings)
    if policies is None and args.policies_from:
        raise ConfigError("store reseed --policies-from: the policies are read from "
                          f"{settings.store.policies} (store.policies), not from Redis")
    try:
        wrote = 0
        if policies is not None and await _due("policies", await policies.state(), plan_policies, args):
            assert plan_policies is not None
            batch, source = plan_policies
            epoch = await policies.replace_all(batch)
            wrote += 1
            print(f"policies: restored {len(batch)} (the whole set) from {source}: revision "
                  f"{epoch}:1; every worker accepts it within a second")
        if await _due("revocations", await revocations.state(), plan_revocations, args):
            assert plan_revocations is not None
            records, source = plan_revocations
            epoch = await revocations.restore(records)
            wrote += 1
            print(f"revocations: restored {len(records)} from {source} (added: records in the "
                  f"store stay): revision {epoch}:1; every worker accepts it within a second, "
                  "and writes back any still in force that this lacked")
        return 0 if wrote else 1
    finally:
        if policies is not None:
            await policies.close()
        await revocations.close()


async def run_store_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.store_command == "status":
        return await _status(settings)
    return await _reseed(args, settings)

