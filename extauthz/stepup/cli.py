"""``extauthz webauthn list|remove|allow-enrolment``: an operator's view of users' passkeys."""

from __future__ import annotations

import argparse
import datetime
import getpass
import logging
from collections.abc import Callable

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import Settings
from extauthz.errors import ConfigError, ExtAuthzError
from extauthz.revocation.store import open_revocation_store
from extauthz.stepup.removal import end_stepups
from extauthz.stepup.store import StepupStore, open_stepup_store, user_key
from extauthz.table import format_table


class PasskeyNotFound(ExtAuthzError):
    code = "passkey_not_found"


class EnrolmentNotNeeded(ExtAuthzError):
    code = "enrolment_not_needed"


GRANT_TTL_DEFAULT, GRANT_TTL_MAX = 3600, 7 * 86400
log = logging.getLogger("extauthz.admin")


def add_webauthn_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                          with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    w = sub.add_parser("webauthn", help="list or remove users' passkeys, allow a first one, "
                                        "lift a pause after failed confirmations")
    wsub = w.add_subparsers(dest="webauthn_command", required=True, metavar="ACTION")
    ls = wsub.add_parser("list", help="a user's passkeys")
    rm = wsub.add_parser("remove", help="remove one passkey, or all of a user's")
    for p in (ls, rm):
        p.add_argument("--subject", required=True, help="the token 'sub' of the user")
        p.add_argument("--issuer", help="only this issuer (when a subject exists at several)")
        with_config(p)
    which = rm.add_mutually_exclusive_group(required=True)
    which.add_argument("--credential", metavar="ID", help="the passkey id (from `list`)")
    which.add_argument("--all", action="store_true", help="every passkey of the user")
    allow = wsub.add_parser(
        "allow-enrolment", help="let a user add a first passkey once, without a fresh sign-in")
    allow.add_argument("--subject", "--user", dest="subject", required=True,
                       help="the token 'sub' of the user")
    allow.add_argument("--issuer", help="the user's issuer, exactly as configured (default: the "
                                        "only configured issuer)")
    allow.add_argument("--ttl", type=int, default=GRANT_TTL_DEFAULT,
                       help=f"seconds the allowance lasts (default {GRANT_TTL_DEFAULT}, at most "
                            f"{GRANT_TTL_MAX})")
    with_config(allow)
    unlock = wsub.add_parser(
        "unlock", help="lift a user's pause after too many failed confirmations "
                       "(stepup.max_failures), so they may try again now")
    unlock.add_argument("--user", "--subject", dest="subject", required=True,
                        help="the token 'sub' of the user")
    unlock.add_argument("--issuer", help="the user's issuer, exactly as configured (default: the "
                                         "only configured issuer)")
    with_config(unlock)


def _when(t: int | None) -> str:
    if t is None:
        return "never"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def run_webauthn_command(args: argparse.Namespace, settings: Settings) -> int:
    s = settings.store
    store: StepupStore = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, SYSTEM_CLOCK)
    try:
        if args.webauthn_command == "allow-enrolment":
            return await _allow_enrolment(args, settings, store)
        if args.webauthn_command == "unlock":
            return await _unlock(args, settings, store)
        users = [u for u in await store.users_for_subject(args.subject)
                 if args.issuer is None or u[1] == args.issuer]
        if args.webauthn_command == "list":  # none: the header alone, as `kubectl get` prints
            rows = [["ISSUER", "ID", "NAME", "CREATED", "LAST USED"]]
            for user, issuer, _ in users:
                rows += [[issuer, p.credential_id, p.name, _when(p.created), _when(p.last_used)]
                         for p in await store.passkeys(user)]
            print(format_table(rows))  # names are user-chosen: non-printables escaped
            return 0
        if not users:
            raise PasskeyNotFound(f"no passkeys for subject {args.subject!r} in {store.description}")
        if len(users) > 1 and args.issuer is None:
            raise ConfigError(f"subject {args.subject!r} has passkeys at several issuers; "
                              "add --issuer")
        user, issuer, subject = users[0]
        if not args.all and not any(p.credential_id == args.credential
                                    for p in await store.passkeys(user)):
            raise PasskeyNotFound(f"{args.subject} has no passkey {args.credential!r}")
        await _end_stepups(settings, store, issuer, subject)  # first: fail closed
        ended = "; their step-ups made before now end in every worker within a second"
        if args.all:
            count = await store.remove_all(user)
            print(f"removed {count} passkey(s) of {args.subject} ({issuer}){ended}")
        elif await store.remove_passkey(user, args.credential):
            print(f"removed passkey {args.credential} of {args.subject} ({issuer}){ended}")
        else:
            raise PasskeyNotFound(f"{args.subject} has no passkey {args.credential!r}")
        await _end_stepups(settings, store, issuer, subject)  # again: ends one made meanwhile
        return 0
    finally:
        await store.close()


async def _end_stepups(settings: Settings, store: StepupStore, issuer: str, subject: str) -> None:
    s = settings.store
    revocations = open_revocation_store(s.url, s.prefix, s.timeout, store, SYSTEM_CLOCK)
    try:
        await end_stepups(revocations, issuer, subject, int(SYSTEM_CLOCK.wall()),
                          "passkey removed with `extauthz webauthn remove`")
    finally:
        await revocations.close()


def _issuer_of(args: argparse.Namespace, settings: Settings) -> str:
    """The configured issuer the allowance is for: named exactly, or the only one."""
    configured = [i.issuer for i in settings.issuers]
    if settings.demo_issuer.enabled and settings.demo_issuer.issuer not in configured:
        configured.append(settings.demo_issuer.issuer)
    if not configured:
        raise ConfigError("the config names no issuers; run this with the service's config "
                          "(--config or EXTAUTHZ_CONFIG)")
    if args.issuer is None:
        if len(configured) > 1:
            raise ConfigError(f"several issuers are configured; add --issuer, one of: "
                              f"{', '.join(configured)}")
        return configured[0]
    if args.issuer not in configured:
        raise ConfigError(f"--issuer {args.issuer!r} is not a configured issuer (exact match); "
                          f"one of: {', '.join(configured)}")
    return str(args.issuer)


async def _allow_enrolment(args: argparse.Namespace, settings: Settings, store: StepupStore) -> int:
    """A one-time allowance, in the store, to add a first passkey with any valid token of
    this user (no fresh IdP sign-in needed); used up by the registration that succeeds."""
    if not args.subject.strip() or args.subject != args.subject.strip():
        raise ConfigError("--subject is empty or has stray whitespace; give the token's 'sub'")
    if not 60 <= args.ttl <= GRANT_TTL_MAX:
        raise ConfigError(f"--ttl must be 60 to {GRANT_TTL_MAX} seconds")
    issuer = _issuer_of(args, settings)
    user = user_key(issuer, args.subject)
    existing = await store.passkeys(user)
    if existing:
        raise EnrolmentNotNeeded(
            f"{args.subject} ({issuer}) already has {len(existing)} passkey(s): they add more after "
            "confirming with one. If they lost them, `webauthn remove --all` first")
    await store.grant_enrolment(user, issuer, args.subject, args.ttl)
    until = _when(int(SYSTEM_CLOCK.wall()) + args.ttl)
    print(f"{args.subject} ({issuer}) may add one first passkey until {until}, without signing in "
          f"again: {settings.public_url}/.extauthz/webauthn/register")
    return 0


async def _unlock(args: argparse.Namespace, settings: Settings, store: StepupStore) -> int:
    """Forget a user's failed ceremonies: the pause the pages call "ask an administrator"."""
    if not args.subject.strip() or args.subject != args.subject.strip():
        raise ConfigError("--user is empty or has stray whitespace; give the token's 'sub'")
    issuer = _issuer_of(args, settings)
    user = user_key(issuer, args.subject)
    failures = await store.failures(user)
    await store.clear_failures(user)
    limit = settings.stepup.max_failures
    if failures >= limit:
        log.warning("webauthn: %r (%s) unlocked by %r with `extauthz webauthn unlock` after %d "
                    "failed confirmations", args.subject, issuer, getpass.getuser(), failures)
        print(f"unlocked {args.subject} ({issuer}): {failures} failed confirmation(s) forgotten; "
              "they may confirm or add a passkey again now")
    else:
        log.info("webauthn: %r (%s) was not paused (%d of %d failures); counter cleared by %r",
                 args.subject, issuer, failures, limit, getpass.getuser())
        print(f"{args.subject} ({issuer}) was not paused ({failures} of {limit} failed "
              "confirmations in the window); counter cleared")
    return 0
