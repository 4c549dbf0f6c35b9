"""``extauthz revoke token|subject|client|all|list|undo``: cut someone off, everywhere, now."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable

import jwt

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import Settings
from extauthz.errors import ConfigError, ExtAuthzError
from extauthz.revocation.model import Revocation
from extauthz.revocation.store import open_revocation_store
from extauthz.stepup.store import open_stepup_store


class RevocationNotFound(ExtAuthzError):
    code = "revocation_not_found"


def add_revoke_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                        with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    r = sub.add_parser("revoke", help="revoke a token, a subject, a client or a whole issuer")
    rsub = r.add_subparsers(dest="revoke_command", required=True, metavar="KIND")
    token = rsub.add_parser("token", help="one token, until its exp")
    which = token.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="the token's jti")
    which.add_argument("--token", help="the token itself (jti, iss and exp are read from it)")
    token.add_argument("--expires-at", type=int, metavar="EPOCH",
                       help="with --jti: the token's exp (default: now + --ttl)")
    token.add_argument("--ttl", type=int, default=86400,
                       help="with --jti and no --expires-at: keep it this long (default 86400)")
    subject = rsub.add_parser("subject", help="every token of a user issued before now")
    subject.add_argument("--subject", required=True)
    client = rsub.add_parser("client", help="every token of a client (azp/client_id) issued before now")
    client.add_argument("--client-id", required=True)
    everyone = rsub.add_parser("all", help="every token of an issuer issued before now")
    everyone.add_argument("--issuer", required=True)
    for p in (token, subject, client):
        p.add_argument("--issuer", default="", help="only tokens of this issuer (default: any)")
    for p in (subject, client, everyone):
        p.add_argument("--ttl", type=int, help="drop the revocation after this many seconds "
                                               "(default: keep until undone)")
    for p in (token, subject, client, everyone):
        p.add_argument("--reason", default="", help="a note for `revoke list` and the audit trail")
    rsub.add_parser("list", help="the revocations in force")
    undo = rsub.add_parser("undo", help="lift one revocation (its KEY from `revoke list`)")
    undo.add_argument("key")
    for p in rsub.choices.values():
        with_config(p)


def _record(args: argparse.Namespace, now: int) -> Revocation:
    kind = args.revoke_command
    ttl = getattr(args, "ttl", None)
    if kind == "token":
        if args.token:
            try:
                claims = jwt.decode(args.token, options={"verify_signature": False})
            except jwt.PyJWTError as e:
                raise ConfigError("--token is not a JWT; pass --jti instead") from e
            if not isinstance(claims.get("jti"), str):
                raise ConfigError("that token has no jti, so it cannot be revoked alone; "
                                  "revoke its subject or client instead")
            return Revocation("token", claims["jti"], args.issuer or str(claims.get("iss", "")),
                              now, int(claims.get("exp", now + args.ttl)), args.reason)
        return Revocation("token", args.jti, args.issuer, now,
                          args.expires_at if args.expires_at else now + args.ttl, args.reason)
    value = {"subject": getattr(args, "subject", ""), "client": getattr(args, "client_id", ""),
             "all": ""}[kind]
    return Revocation(kind, value, args.issuer, now, now + ttl if ttl else None, args.reason)


def _when(t: int | None) -> str:
    if t is None:
        return "until undone"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def run_revoke_command(args: argparse.Namespace, settings: Settings) -> int:
    s = settings.store
    state = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, SYSTEM_CLOCK)
    store = open_revocation_store(s.url, s.prefix, s.timeout, state, SYSTEM_CLOCK)
    try:
        if args.revoke_command == "list":
            records = (await store.load()).records
            rows = [["KEY", "MADE", "EXPIRES", "REASON"]] + [
                [r.key, _when(r.at), _when(r.expires), r.reason] for r in records]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for row in rows:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            return 0
        if args.revoke_command == "undo":
            if not await store.remove(args.key):
                raise RevocationNotFound(f"no revocation {args.key!r} in {store.description}; "
                                         "see `extauthz revoke list`")
            print(f"lifted {args.key}")
            return 0
        record = _record(args, int(SYSTEM_CLOCK.wall()))
        await store.add(record)
        print(f"revoked {record.key} (expires: {_when(record.expires)}); every worker enforces it "
              "within a second")
        return 0
    finally:
        await store.close()
        await state.close()
