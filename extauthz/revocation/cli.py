"""``extauthz revoke token|subject|client|all|list|undo``: cut someone off, everywhere, now."""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Callable
from typing import Any

import jwt

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import Settings
from extauthz.errors import ExtAuthzError
from extauthz.revocation.model import Revocation, parse_key
from extauthz.revocation.store import open_revocation_store
from extauthz.stepup.store import open_stepup_store
from extauthz.table import format_table


class RevocationNotFound(ExtAuthzError):
    code = "revocation_not_found"


class RevocationRefused(ExtAuthzError):
    """A revocation that could never apply (an unknown issuer, an empty value, a past expiry)."""

    code = "revocation_refused"


MAX_TTL = 10 * 365 * 86400  # longer: omit --ttl, the revocation then lasts until undone
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last instant a record can name
SUBJECT_HELP = ("the token's `sub` claim, exactly (not its username or email: an IdP's `sub` is "
                "often an opaque id; read it from a token or the audit trail)")


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
    token.add_argument("--ttl", type=int,
                       help="with --jti and no --expires-at: keep it this long (default 86400)")
    subject = rsub.add_parser(
        "subject", help="every token of a subject (the token's `sub`) issued before now",
        description="Cut off every token whose `sub` claim is SUBJECT, issued up to now. "
                    "SUBJECT is " + SUBJECT_HELP + ".")
    subject.add_argument("--subject", required=True, help=SUBJECT_HELP)
    client = rsub.add_parser("client", help="every token of a client (azp/client_id) issued before now")
    client.add_argument("--client-id", required=True, help="the token's `azp` (or `client_id`)")
    everyone = rsub.add_parser("all", help="every token of an issuer issued before now")
    everyone.add_argument("--issuer", required=True,
                          help="a configured issuer, exactly as in the config's issuers[].issuer")
    for p in (token, subject, client):
        p.add_argument("--issuer", help="only tokens of this configured issuer, exactly as in "
                                        "issuers[].issuer (default: any issuer)")
    for p in (subject, client, everyone):
        p.add_argument("--ttl", type=int, help="drop the revocation after this many seconds "
                                               "(default: keep until undone)")
    for p in (token, subject, client, everyone):
        p.add_argument("--reason", default="", help="a note for `revoke list` and the audit trail")
    rsub.add_parser("list", help="the revocations in force")
    undo = rsub.add_parser("undo", help="lift one revocation (its KEY from `revoke list`)")
    undo.add_argument("key", help="the revocation's KEY, as `revoke list` prints it")
    for p in rsub.choices.values():
        with_config(p)


def _value(value: str, flag: str) -> str:
    if not value:
        raise RevocationRefused(f"{flag} is empty; an empty value matches no token")
    return value


def _issuer(given: str | None, settings: Settings, flag: str = "--issuer") -> str:
    """A configured issuer, exactly; None (not given) is any issuer, returned as ""."""
    if given is None:
        return ""
    configured = [i.issuer for i in settings.issuers]
    if given in configured:
        return given
    if not given:
        raise RevocationRefused(f"{flag} is empty; omit it to revoke at every issuer, or give "
                                "one of the configured issuers")
    if not configured:
        raise RevocationRefused(f"{flag} {given!r} is not a configured issuer (this config lists "
                                "none); pass the --config (or EXTAUTHZ_ISSUERS) the service runs with")
    near = [c for c in configured if c.rstrip("/") == given.rstrip("/")]
    if near:
        raise RevocationRefused(f"{flag} {given!r} is not a configured issuer, so it would match no "
                                f"token; did you mean {near[0]!r}? (issuers match exactly)")
    raise RevocationRefused(f"{flag} {given!r} is not a configured issuer, so it would match no "
                            "token; configured: " + ", ".join(repr(c) for c in configured))


def _ttl(ttl: int | None, now: int) -> int | None:
    if ttl is None:
        return None
    if ttl <= 0:
        raise RevocationRefused(f"--ttl {ttl} is not positive; give the seconds the revocation "
                                "should last, or omit --ttl to keep it until undone")
    if ttl > MAX_TTL:
        raise RevocationRefused(f"--ttl {ttl} is more than ten years; omit --ttl to keep the "
                                "revocation until undone")
    return now + ttl


def _token_expiry(claims: dict[str, Any], leeway: int, now: int) -> int:
    """When the service stops accepting the token by itself: exp plus the clock leeway."""
    exp = claims.get("exp")
    if exp is None:
        raise RevocationRefused("that token has no exp, which the service never accepts; "
                                "nothing to revoke")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise RevocationRefused(f"that token's exp is {exp!r}, not a number of seconds; revoke its "
                                "subject instead (`extauthz revoke subject`)")
    until = math.ceil(exp) + leeway
    if until <= now:
        raise RevocationRefused("that token expired at "
                                f"{_when(int(exp)) if exp > 0 else repr(exp)}, so the service "
                                "already refuses it; nothing to revoke")
    if until > _LAST_SECOND:
        raise RevocationRefused(f"that token's exp ({exp!r}) is past the year 9999; revoke its "
                                "subject instead (`extauthz revoke subject`)")
    return until


def _record(args: argparse.Namespace, settings: Settings, now: int) -> Revocation:
    kind = args.revoke_command
    if kind == "token":
        if args.token is not None:
            try:
                claims = jwt.decode(args.token, options={"verify_signature": False})
            except jwt.PyJWTError as e:
                raise RevocationRefused("--token is not a JWT; pass --jti instead") from e
            jti, iss = claims.get("jti"), claims.get("iss")
            if not isinstance(jti, str) or not jti:
                raise RevocationRefused("that token has no jti, so it cannot be revoked alone; "
                                        "revoke its subject or client instead")
            if not isinstance(iss, str) or not iss:
                raise RevocationRefused("that token has no iss, which the service never accepts; "
                                        "nothing to revoke")
            if args.issuer is not None and args.issuer != iss:
                raise RevocationRefused(f"--issuer {args.issuer!r} is not the token's iss {iss!r}; "
                                        "omit --issuer")
            if args.expires_at is not None or args.ttl is not None:
                raise RevocationRefused("--expires-at and --ttl go with --jti; --token is kept "
                                        "until its own exp")
            return Revocation("token", jti, _issuer(iss, settings, "the token's iss"), now,
                              _token_expiry(claims, settings.token.leeway, now), args.reason)
        if args.expires_at is not None and args.ttl is not None:
            raise RevocationRefused("give --expires-at or --ttl, not both")
        if args.expires_at is not None:
            if args.expires_at <= now:
                raise RevocationRefused(f"--expires-at {args.expires_at} is not in the future; "
                                        "the service already refuses a token past its exp")
            if args.expires_at > _LAST_SECOND:
                raise RevocationRefused(f"--expires-at {args.expires_at} is past the year 9999")
            expires = args.expires_at + settings.token.leeway
        else:
            until = _ttl(86400 if args.ttl is None else args.ttl, now)
            assert until is not None
            expires = until
        return Revocation("token", _value(args.jti, "--jti"), _issuer(args.issuer, settings),
                          now, expires, args.reason)
    if kind == "all":
        issuer = _issuer(args.issuer, settings)
        if not issuer:
            raise RevocationRefused("--issuer is empty; `revoke all` needs one configured issuer")
        return Revocation("all", "", issuer, now, _ttl(args.ttl, now), args.reason)
    value = _value(args.subject, "--subject") if kind == "subject" else _value(
        args.client_id, "--client-id")
    return Revocation(kind, value, _issuer(args.issuer, settings), now, _ttl(args.ttl, now),
                      args.reason)


def _when(t: int | None) -> str:
    if t is None:
        return "until undone"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _describe(r: Revocation) -> str:
    where = f"of issuer {r.issuer!r}" if r.issuer else "of any issuer"
    what = {"token": f"the token with jti {r.value!r} {where}",
            "subject": f"every token {where} whose `sub` is {r.value!r}",
            "client": f"every token {where} whose azp/client_id is {r.value!r}",
            "all": f"every token {where}",
            "stepup": f"the step-ups {where} of `sub` {r.value!r} (a passkey was removed)"}[r.kind]
    upto = "" if r.kind == "token" else f", issued up to {_when(r.at)}"
    return f"{what}{upto}"


def _undo_fields(records: tuple[Revocation, ...], key: str) -> tuple[Revocation, list[str]]:
    """The revocation KEY names and the store fields that hold it (this encoding's key, and
    the key it had before if it was written then). KEY may be either form; a field that
    another revocation could also sit under is never removed: ambiguity is refused."""
    target = parse_key(key)
    matches = {r.target for r in records if target is not None and r.target == target}
    if not matches:  # a key in the old form, as an older `revoke list` showed it
        matches = {r.target for r in records if r.legacy_key == key}
    if len(matches) > 1:
        raise RevocationRefused(f"{key!r} is ambiguous (it names {len(matches)} revocations in the "
                                "old key form); undo each by the KEY `revoke list` shows now")
    if not matches:
        raise RevocationNotFound(f"no revocation {key!r}; see `extauthz revoke list`")
    found = next(r for r in records if r.target in matches)
    fields = [f for f in dict.fromkeys((found.key, found.legacy_key))
              if not any(r.target != found.target and f in (r.key, r.legacy_key) for r in records)]
    if not fields:
        raise RevocationRefused(f"{key!r} is stored under a key another revocation shares in the "
                                "old key form; undo that one first")
    return found, fields


def _subject_note(r: Revocation, settings: Settings) -> str | None:
    """A hint when a --subject looks like a username or an email rather than a `sub`."""
    if r.kind != "subject":
        return None
    prefixes = [i.username_prefix for i in settings.issuers
                if i.username_prefix and (not r.issuer or i.issuer == r.issuer)]
    if any(r.value.startswith(p) for p in prefixes) or "@" in r.value:
        return (f"note: {r.value!r} looks like a username or an email; a subject revocation "
                "matches the token's `sub` claim only (see `extauthz audit` for a user's `sub`)")
    return None


def _collides(records: tuple[Revocation, ...], new: Revocation) -> None:
    """Refuse to write over a record of the old key form that names something else."""
    for r in records:
        if r.target != new.target and r.legacy_key == new.key:
            raise RevocationRefused(f"an older revocation ({_describe(r)}) is stored under "
                                    f"{new.key!r}; lift it first with `extauthz revoke undo "
                                    f"{r.key}` and re-add it after this one")


async def run_revoke_command(args: argparse.Namespace, settings: Settings) -> int:
    s = settings.store
    state = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, SYSTEM_CLOCK)
    store = open_revocation_store(s.url, s.prefix, s.timeout, state, SYSTEM_CLOCK)
    try:
        if args.revoke_command == "list":
            records = (await store.load()).records
            print(format_table([["KEY", "MADE", "EXPIRES", "REASON"]] + [
                [r.key, _when(r.at), _when(r.expires), r.reason] for r in records]))
            return 0
        if args.revoke_command == "undo":
            found, fields = _undo_fields((await store.load()).records, args.key)
            removed = [f for f in fields if await store.remove(f)]
            if not removed:
                raise RevocationNotFound(f"no revocation {args.key!r} in {store.description}; "
                                         "see `extauthz revoke list`")
            print(f"lifted {found.key}: {_describe(found)}")
            return 0
        record = _record(args, settings, int(SYSTEM_CLOCK.wall()))
        _collides((await store.load()).records, record)
        await store.add(record)
        note = _subject_note(record, settings)
        if note:
            print(note, file=sys.stderr)
        print(f"revoked {record.key}: {_describe(record)} (expires: {_when(record.expires)}); "
              "every worker enforces it within a second")
        return 0
    finally:
        await store.close()
        await state.close()
