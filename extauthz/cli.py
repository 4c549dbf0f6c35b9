"""The ``extauthz`` command line. Errors are one line naming the problem and the fix."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from extauthz import __version__
from extauthz.config import CONFIG_VARIABLE, Settings, load_settings
from extauthz.errors import ConfigError, ExtAuthzError
from extauthz.telemetry.logs import resolve_format, setup_logging

LOCAL_CONFIG = "extauthz.yaml"
CONFIG_HELP = ("YAML config file; default: $EXTAUTHZ_CONFIG, else ./extauthz.yaml if present. "
               "EXTAUTHZ_* variables override its keys. Before or after the command")
_JSON_LOGS = False  # set once serve's logging is JSON: errors are then log lines too


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extauthz", description="External authorization for Envoy and Istio.")
    parser.add_argument("--version", action="version", version=f"extauthz {__version__}")
    parser.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        # SUPPRESS: a subcommand without its own --config keeps the global one
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP)

    serve = sub.add_parser("serve", help="run the gRPC Check service and the HTTP side")
    with_config(serve)
    serve.add_argument("--workers", type=int, metavar="N",
                       help="worker processes sharing the ports (env: EXTAUTHZ_WORKERS)")
    serve.add_argument("--grpc-listen", metavar="HOST:PORT", help="env: EXTAUTHZ_GRPC_LISTEN")
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="env: EXTAUTHZ_HTTP_LISTEN")
    serve.add_argument("--check-http-listen", metavar="HOST:PORT",
                       help="Check over Envoy's plain-HTTP protocol; null: off "
                            "(env: EXTAUTHZ_CHECK_HTTP_LISTEN)")
    serve.add_argument("--admin-listen", metavar="HOST:PORT",
                       help="/metrics and /readyz details; null: off (env: EXTAUTHZ_ADMIN_LISTEN)")
    serve.add_argument("--admin-grpc-listen", metavar="HOST:PORT",
                       help="gRPC reflection; null: off (env: EXTAUTHZ_ADMIN_GRPC_LISTEN)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    token = sub.add_parser("token", help="mint a token from the built-in demo issuer")
    with_config(token)
    token.add_argument("--sub", required=True, help="subject (the user id)")
    token.add_argument("--email", help="email claim (default SUB@example.com)")
    token.add_argument("--groups", default="", help="comma-separated groups, e.g. sre,dev")
    token.add_argument("--scope", default="", help="space- or comma-separated scopes")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")

    if _benchmark_checkout() is not None:
        sub.add_parser("bench", add_help=False,
                       help="run the latency benchmark (this source checkout's benchmarks/; `bench --help`)")

    from extauthz.policy.cli import add_policy_commands

    add_policy_commands(sub, with_config)
    from extauthz.stepup.cli import add_webauthn_commands

    add_webauthn_commands(sub, with_config)
    from extauthz.revocation.cli import add_revoke_commands

    add_revoke_commands(sub, with_config)
    from extauthz.audit.cli import add_audit_commands

    add_audit_commands(sub, with_config)
    from extauthz.store.cli import add_store_commands

    add_store_commands(sub, with_config)
    from extauthz.schema.cli import add_schema_commands

    add_schema_commands(sub)
    return parser


def config_path(given: str | None, environ: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """The config file: ``--config``, else ``$EXTAUTHZ_CONFIG``, else ``./extauthz.yaml`` when
    it exists; None: no file (defaults and ``EXTAUTHZ_*`` variables only)."""
    if given:
        return given
    if environ.get(CONFIG_VARIABLE):
        return environ[CONFIG_VARIABLE]
    local = (cwd or Path.cwd()) / LOCAL_CONFIG
    return LOCAL_CONFIG if local.is_file() else None


def _settings(args: argparse.Namespace, overrides: dict[str, str]) -> Settings:
    environ = dict(os.environ)
    environ.update({k: v for k, v in overrides.items() if v is not None})
    args.config = config_path(args.config, environ)
    return load_settings(args.config, environ)


def _serve(args: argparse.Namespace) -> int:
    overrides = {"EXTAUTHZ_WORKERS": str(args.workers) if args.workers else None,
                 "EXTAUTHZ_GRPC_LISTEN": args.grpc_listen,
                 "EXTAUTHZ_HTTP_LISTEN": args.http_listen,
                 "EXTAUTHZ_CHECK_HTTP_LISTEN": args.check_http_listen,
                 "EXTAUTHZ_ADMIN_LISTEN": args.admin_listen,
                 "EXTAUTHZ_ADMIN_GRPC_LISTEN": args.admin_grpc_listen}
    settings = _settings(args, {k: v for k, v in overrides.items() if v is not None})
    _setup_logging(settings.log_level, settings.log_format)
    if settings.workers > 1 and not args.reuse_port:
        from extauthz.identity.demo_issuer import demo_issuer
        from extauthz.workers import Supervisor

        if settings.demo_issuer.enabled:
            demo_issuer(settings.demo_issuer)  # create the key once, before the workers race
        argv = [a for a in ("--config", args.config) if args.config]
        argv += [x for flag, v in (("--grpc-listen", args.grpc_listen),
                                   ("--http-listen", args.http_listen),
                                   ("--check-http-listen", args.check_http_listen),
                                   ("--admin-listen", args.admin_listen),
                                   ("--admin-grpc-listen", args.admin_grpc_listen))
                 if v for x in (flag, v)]
        return Supervisor(argv, settings.workers, settings.shutdown_grace).run()
    import uvloop

    from extauthz.server import serve

    uvloop.run(serve(settings, reuse_port=args.reuse_port))
    return 0


def _token(args: argparse.Namespace) -> int:
    from extauthz.identity.demo_issuer import demo_issuer

    if not args.sub.strip() or args.sub != args.sub.strip():
        raise ConfigError(f"--sub {args.sub!r} is empty or has stray whitespace; give the "
                          "user id the token is for, e.g. --sub alice")
    if args.ttl < 1:
        raise ConfigError(f"--ttl {args.ttl}: a token must live at least 1 second")
    settings = _settings(args, {})
    issuer = demo_issuer(settings.demo_issuer)

    def split(value: str) -> tuple[str, ...]:
        return tuple(x for x in value.replace(",", " ").split() if x)

    print(issuer.mint(subject=args.sub, email=args.email, groups=split(args.groups),
                      scopes=split(args.scope), ttl=args.ttl))
    return 0


def _setup_logging(level: str, configured_format: str | None = None) -> None:
    """Log lines on stderr, as ``log_format`` says (unset: text on a terminal, else JSON)."""
    global _JSON_LOGS
    fmt = resolve_format(configured_format)
    setup_logging(level, fmt)
    _JSON_LOGS = fmt == "json"


def _benchmark_checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), when it holds the
    benchmark; an installed wheel has none."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "benchmarks" / "__main__.py").is_file() else None


def _bench(argv: list[str]) -> int:
    """``extauthz bench ...`` becomes ``python -m benchmarks ...`` of the checkout: this process
    is replaced, so the package itself never imports the benchmark (or what it needs)."""
    root = _benchmark_checkout()
    if root is not None:
        path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv],  # noqa: S606
                  {**os.environ, "PYTHONPATH": path})
    print("extauthz: bench: the latency benchmark is not installed here; run `make bench` in "
          "a source checkout", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that goes away (``extauthz audit export | head``) ends it
    quietly, as it does ``cat``."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # Python flushes stdout again at exit and would print a second error: point the
        # descriptor at /dev/null first (the documented way, docs.python.org "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended


def _main(argv: Sequence[str] | None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["bench"]:  # its options are the benchmark's own
        return _bench(given[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "token":
            return _token(args)
        if args.command == "schema":
            from extauthz.schema.cli import run_schema_command

            return run_schema_command(args)
        if args.command == "policy":
            from extauthz.policy.cli import run_policy_command

            return asyncio.run(run_policy_command(args, _settings(args, {})))
        if args.command == "webauthn":
            from extauthz.stepup.cli import run_webauthn_command

            settings = _settings(args, {})
            _setup_logging(settings.log_level, settings.log_format)  # admin lines
            return asyncio.run(run_webauthn_command(args, settings))
        if args.command == "audit":
            from extauthz.audit.cli import run_audit_command

            return asyncio.run(run_audit_command(args, _settings(args, {})))
        if args.command == "revoke":
            from extauthz.revocation.cli import run_revoke_command

            return asyncio.run(run_revoke_command(args, _settings(args, {})))
        if args.command == "store":
            from extauthz.store.cli import run_store_command

            return asyncio.run(run_store_command(args, _settings(args, {})))
    except ExtAuthzError as e:
        if _JSON_LOGS:  # serve in JSON mode: a pipeline reads stderr, so a JSON line
            logging.getLogger("extauthz").error("%s", e.message)
        else:
            print(f"extauthz: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
