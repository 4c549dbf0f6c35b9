"""``extauthz policy apply|get|list|delete|validate|explain``: talk to the configured store."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from extauthz.config import Settings
from extauthz.decision import Decision
from extauthz.errors import (
    ConfigError,
    ExtAuthzError,
    PolicyInvalid,
    PolicyNotFound,
    StoreUnavailable,
)
from extauthz.policy.match import explain
from extauthz.policy.model import Policy, documents_from_text, parse_policies, policies_to_yaml
from extauthz.policy.store import FilePolicyStore, PolicyStore, open_store
from extauthz.request import RequestView
from extauthz.table import format_table

if TYPE_CHECKING:
    from extauthz.engine import Engine

_SUFFIXES = (".yaml", ".yml", ".json")
_FILE_HELP = "a YAML/JSON policy file, every .yaml/.yml/.json file of a directory, or - (stdin)"


class FileStoreReadOnly(ExtAuthzError):
    """``policy apply|delete`` against a file store: the files are the source of truth."""

    code = "file_store_read_only"


def _read_only(store: FilePolicyStore, command: str) -> FileStoreReadOnly:
    where = (f"the files in {store.path}/ (a new policy: {store.path}/ID.yaml)" if store.is_dir
             else str(store.path))
    return FileStoreReadOnly(
        f"policy {command}: the policies are in {store.description}, which is their source of "
        f"truth (in git, or a ConfigMap); nothing was written. Edit {where}, check it with "
        "`extauthz policy validate -f`, and the service reloads it within a second")


def add_policy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                        with_config: object) -> None:
    policy = sub.add_parser("policy", help="manage per-route policies in the configured store")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    assert callable(with_config)
    apply = psub.add_parser("apply", help="create or replace policies (atomic for the batch)")
    apply.add_argument("-f", "--file", required=True, metavar="FILE|DIR|-", help=_FILE_HELP)
    apply.add_argument("--dry-run", action="store_true", help="validate and show the diff only")
    validate = psub.add_parser("validate", help="check policy documents without storing them")
    validate.add_argument("-f", "--file", required=True, metavar="FILE|DIR|-", help=_FILE_HELP)
    get = psub.add_parser("get", help="print one policy as YAML")
    get.add_argument("id", help="the policy's id (see `policy list`)")
    psub.add_parser("list", help="a table of every policy")
    delete = psub.add_parser("delete", help="remove one policy")
    delete.add_argument("id", help="the policy's id (see `policy list`)")
    ex = psub.add_parser("explain", help="which policy governs a request, why, and the decision")
    ex.add_argument("--host", help="the request's Host (:authority), e.g. "
                                   "api.example.com (required unless --nats)")
    ex.add_argument("--method", default="GET", help="the request's method (default GET)")
    ex.add_argument("--path", help="path, with ?query if any (required unless --nats)")
    ex.add_argument("--nats", action="store_true",
                    help="a NATS connection with --token: which NATS policy decides, and what "
                         "it grants")
    ex.add_argument("--header", action="append", default=[], metavar="K=V",
                    help="a request header, e.g. accept=text/html (repeat for more)")
    ex.add_argument("--token", help="a bearer token to evaluate (verified for real)")
    ex.add_argument("--route-policy", metavar="ID",
                    help="as if the Envoy route bound this policy (context_extensions)")
    for p in (apply, validate, get, psub.choices["list"], delete, ex):
        with_config(p)


def read_documents(source: str) -> list[Policy]:
    """Policies from a file, every policy file of a directory, or stdin ('-')."""
    if source == "-":
        read = parse_policies(documents_from_text(sys.stdin.read(), "stdin"), "stdin")
        if not read:
            raise PolicyInvalid("stdin: holds no policy documents")
        return read
    path = Path(source)
    if not path.exists():
        raise PolicyInvalid(f"{source}: no such file or directory")
    try:  # read exactly as the service's file store reads it (dot-files, ConfigMap ..data)
        policies = FilePolicyStore(source).read_all()
    except StoreUnavailable as e:
        raise PolicyInvalid(f"{source}: {e}") from e
    if not policies and path.is_dir() and not any(
            p.suffix in _SUFFIXES and not p.name.startswith(".") for p in path.iterdir()):
        raise PolicyInvalid(f"{source}: no .yaml, .yml or .json files in this directory")
    if not policies:
        raise PolicyInvalid(f"{source}: holds no policy documents")
    return policies


def _store(settings: Settings) -> PolicyStore:
    s = settings.store
    store = open_store(s.url, s.prefix, s.timeout, s.policies)
    if store is None:
        raise ConfigError("no policy store configured: set store.url to redis://HOST:PORT or "
                          "file:///path/policies.yaml in the config (--config FILE, "
                          "$EXTAUTHZ_CONFIG or ./extauthz.yaml) or EXTAUTHZ_STORE_URL")
    return store


def _diff(current: dict[str, Policy], batch: Sequence[Policy]) -> list[str]:
    lines = []
    for p in batch:
        old = current.get(p.id)
        new_text = policies_to_yaml([p])
        if old is None:
            lines.append(f"+ create {p.id}")
        elif (old_text := policies_to_yaml([old])) == new_text:
            lines.append(f"= unchanged {p.id}")
        else:
            lines.append(f"~ update {p.id}")
            lines += ["    " + d.rstrip("\n") for d in difflib.unified_diff(
                old_text.splitlines(True), new_text.splitlines(True), "stored", "new", n=2)][2:]
    return lines


def _row(p: Policy) -> list[str]:
    if p.bound_only:
        return [p.id, "(route-bound)", "(route-bound)", "*", p.action, p.mode]
    if p.nats is not None:  # a NATS policy: no route, its subjects are in `policy get`
        return [p.id, "(NATS)", "(NATS)", "(NATS)", p.action, p.mode]
    return [p.id, ",".join(p.hosts) or "*",
            ",".join(f"{pm.kind}:{pm.value}" for pm in p.paths) or "*",
            ",".join(sorted(p.methods)) or "*", p.action, p.mode]


def _table(rows: list[list[str]]) -> str:
    return format_table([["ID", "HOSTS", "PATHS", "METHODS", "ACTION", "MODE"], *rows])


async def run_policy_command(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.policy_command
    if cmd == "validate":
        policies = read_documents(args.file)
        print(f"{len(policies)} valid: {', '.join(p.id for p in policies)}")
        return 0
    if cmd == "explain" and args.nats:
        from extauthz.nats.cli import explain_nats

        return await explain_nats(args.token, settings)
    if cmd == "explain":
        if args.host is None or args.path is None:
            raise ConfigError("policy explain: give --host and --path (or --nats --token T)")
        return await _explain(args, settings)
    store = _store(settings)
    try:
        if cmd == "apply":
            batch = read_documents(args.file)
            current = {p.id: p for p in (await store.load()).policies}
            print("\n".join(_diff(current, batch)))
            if args.dry_run:
                print(f"dry run: nothing stored in {store.description}")
                return 0
            if isinstance(store, FilePolicyStore):
                raise _read_only(store, "apply")
            revision = await store.apply(batch)
            print(f"applied {len(batch)} polic{'y' if len(batch) == 1 else 'ies'} to "
                  f"{store.description} (revision {revision})")
            if revision.endswith(":1") and not current:  # a Redis store's first write
                print("note: the store was empty, so this started it (a new epoch). If it held "
                      "policies before, Redis lost them: workers that held them refuse this set; "
                      "see `extauthz store status`", file=sys.stderr)
        elif cmd == "get":
            pset = await store.load()
            found = [p for p in pset.policies if p.id == args.id]
            if not found:
                raise PolicyNotFound(f"no policy with id {args.id!r} in {store.description}")
            sys.stdout.write(yaml.safe_dump(dict(found[0].document), sort_keys=False))
        elif cmd == "list":
            pset = await store.load()
            print(_table([_row(p) for p in sorted(pset.policies, key=lambda p: p.id)]))
        elif cmd == "delete":
            if isinstance(store, FilePolicyStore):
                raise _read_only(store, "delete")
            revision = await store.delete(args.id)
            print(f"deleted {args.id} from {store.description} (revision {revision})")
        return 0
    finally:
        await store.close()


async def _explain(args: argparse.Namespace, settings: Settings) -> int:
    """What a running worker would answer: the engine a worker builds, holding what a worker
    holds (the store's policies and revocations, the step-up cookie key), asked the same
    question. Nothing is written, audited or counted."""
    from extauthz import denials
    from extauthz.engine import build_engine
    from extauthz.errors import BadRequest
    from extauthz.policy.paths import normalize_path
    from extauthz.request import split_host

    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--header {item!r}: write NAME=VALUE")
        headers[key.strip().lower()] = value
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    path, _, query = args.path.partition("?")
    try:  # what the service refuses as ambiguous, explain refuses the same way
        host = split_host(args.host)
        normalize_path(path)
    except BadRequest as e:
        print(f"request: {args.method.upper()} {args.host!r} {args.path!r}")
        return _verdict(denials.bad_request("explain", description=e.message))
    view = RequestView(
        method=args.method.upper(), scheme="https", host=host, path=path,
        query=query, headers=headers,
        context_extensions={"policy": args.route_policy} if args.route_policy else {},
        source_address="", request_id="explain",
    )
    engine = build_engine(settings, worker=False)
    try:
        await _load(engine, view)
        index = engine.policies.index
        print(f"request: {view.method} {view.host}{view.original_url}")
        lines: list[tuple[str, str]] = []
        if index is not None:
            try:
                lines = explain(index, view)
            except BadRequest as e:  # an encoded separator that changes which policy applies
                return _verdict(denials.bad_request("explain", description=e.message))
        for pid, why in lines:
            print(f"  {pid}: {why}")
        shadow = next((pid for pid, why in lines if why.startswith("DRY-RUN")), None)
        if (index is not None and not any(why.startswith("MATCHED") for _, why in lines)
                and not args.route_policy):
            kind = "enforcing policy" if shadow else "policy"
            print(f"no {kind} matched: default_action {settings.default_action} applies")
        decision = await engine.authorizer.check(view)
    finally:
        await engine.close()
    notes = []
    if decision.dry_run:
        would = f"deny ({decision.would_deny})" if decision.would_deny else "allow"
        notes.append(f"dry-run: policy {shadow} would {would}; it does not decide")
    return _verdict(decision, notes)


async def _load(engine: Engine, view: RequestView) -> None:
    """Policies, revocations and (when the request carries a step-up cookie) the cookie
    key, as a worker holds them; then a line on what was loaded."""
    from extauthz.stepup.gate import load_key

    await engine.load_once()
    stepups = engine.stepups
    if not stepups.loaded and stepups.cookie_name in view.headers.get("cookie", ""):
        try:
            await load_key(stepups, engine.stepup_store)
        except ValueError as e:  # a worker logs this and never meets a step-up by cookie
            print(f"step-up: the stored cookie key is unusable ({e}); no cookie counts")
    store, policies, revocations = engine.policy_store, engine.policies, engine.revocations
    if store is None:
        print("store: none configured (only default_action applies)")
    elif policies.ready:
        print(f"store: {store.description}, revision {policies.revision}")
    else:
        print(f"store: {store.description}, no policies loaded ({policies.note or 'empty'})")
    for snap in (policies, revocations):
        if snap.refused is not None:
            print(f"  {snap.what}: {snap.note} (workers that loaded it before keep enforcing "
                  "their last snapshot; explain cannot see it)")
    current = revocations.current
    if current is not None and len(current):
        print(f"revocations: {len(current)} in force (revision {revocations.revision})")


def _verdict(decision: Decision, notes: Sequence[str] = ()) -> int:
    """The decision as the service would send it; the exit status says allow (0) or not."""
    verdict = "ALLOW" if decision.allowed else f"DENY {decision.status}"
    print(f"decision: {verdict} ({decision.reason}): {decision.description}")
    for note in notes:
        print(f"  {note}")
    for key, value in decision.upstream_headers:
        print(f"  upstream header {key}: {value}")
    for key, value in decision.response_headers:
        print(f"  response header {key}: {value}")
    return 0 if decision.allowed else 1
