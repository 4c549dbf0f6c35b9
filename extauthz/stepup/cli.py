"""``extauthz webauthn list|remove``: an operator's view of users' passkeys."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable

from extauthz.clock import SYSTEM_CLOCK
from extauthz.config import Settings
from extauthz.errors import ConfigError, ExtAuthzError
from extauthz.stepup.store import StepupStore, open_stepup_store
from extauthz.table import format_table


class PasskeyNotFound(ExtAuthzError):
    code = "passkey_not_found"


def add_webauthn_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                          with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    w = sub.add_parser("webauthn", help="list or remove users' passkeys")
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


def _when(t: int | None) -> str:
    if t is None:
        return "never"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def run_webauthn_command(args: argparse.Namespace, settings: Settings) -> int:
    s = settings.store
    store: StepupStore = open_stepup_store(s.url, s.prefix, s.timeout, s.state_file, SYSTEM_CLOCK)
    try:
        users = [u for u in await store.users_for_subject(args.subject)
                 if args.issuer is None or u[1] == args.issuer]
        if not users:
            raise PasskeyNotFound(f"no passkeys for subject {args.subject!r} in {store.description}")
        if args.webauthn_command == "list":
            rows = [["ISSUER", "ID", "NAME", "CREATED", "LAST USED"]]
            for user, issuer, _ in users:
                rows += [[issuer, p.credential_id, p.name, _when(p.created), _when(p.last_used)]
                         for p in await store.passkeys(user)]
            print(format_table(rows))  # names are user-chosen: non-printables escaped
            return 0
        if len(users) > 1 and args.issuer is None:
            raise ConfigError(f"subject {args.subject!r} has passkeys at several issuers; "
                              "add --issuer")
        user, issuer, _ = users[0]
        if args.all:
            count = await store.remove_all(user)
            print(f"removed {count} passkey(s) of {args.subject} ({issuer})")
        elif await store.remove_passkey(user, args.credential):
            print(f"removed passkey {args.credential} of {args.subject} ({issuer})")
        else:
            raise PasskeyNotFound(f"{args.subject} has no passkey {args.credential!r}")
        return 0
    finally:
        await store.close()
