"""``make demo``: extauthz with its demo issuer, an echo upstream and Envoy on :8000.

    python -m demo                    # run until Ctrl-C (from the repository's root)
    python -m demo --check            # start, try the curl lines, stop (exit 1 on a failure)
    python -m demo --transport grpc   # Envoy asks over gRPC (default: plain HTTP, the faster)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from demo.echo import echo_command
from demo.gateway import GATEWAYS, REPO, envoy_command, write_gateway
from demo.processes import LogWatch, Process, port_is_free
from extauthz.config import load_settings
from extauthz.identity.demo_issuer import demo_issuer

CONFIG = REPO / "demo" / "config.yaml"


def _request(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback demo URL)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _self_check(gateway: str, token: str) -> list[str]:
    """The printed curl lines, run for real; returns the problems found."""
    problems = []
    status, headers, _ = _request(f"{gateway}/hello", {})
    if status != 401 or "Bearer" not in headers.get("www-authenticate", ""):
        problems.append(f"no token: expected 401 with a Bearer challenge, got {status}")
    status, _, body = _request(f"{gateway}/hello", {"authorization": f"Bearer {token}",
                                                     "x-auth-subject": "admin"})
    if status != 200:
        problems.append(f"with a token: expected 200, got {status}")
    else:
        seen = json.loads(body)["headers"]
        if seen.get("x-auth-subject") != "alice":
            problems.append(f"upstream saw x-auth-subject={seen.get('x-auth-subject')!r}")
    status, _, _ = _request(f"{gateway}/hello", {"authorization": "Bearer not.a.token"})
    if status != 401:
        problems.append(f"bad token: expected 401, got {status}")
    auth = {"authorization": f"Bearer {token}"}
    for path, headers, want in (("/docs/intro", {}, 200), ("/admin/stats", auth, 200),
                                ("/internal/x", auth, 403), ("/billing/x", auth, 403),
                                ("/payments/send", auth, 401),
                                # new-rule-trial is dry-run: it never decides, so this stays
                                # default_action (authenticated): 401 without a token, 200 with
                                ("/v1/users/bob", {}, 401), ("/v1/users/bob", auth, 200)):
        status, _, _ = _request(f"{gateway}{path}", headers)
        if status != want:
            problems.append(f"{path}: expected {want}, got {status}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="extauthz-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run the curl lines, then stop")
    parser.add_argument("--transport", choices=("http", "grpc"), default="http",
                        help="how Envoy asks extauthz: plain HTTP (envoy/gateway-http.yaml, the "
                             "faster; default) or gRPC (envoy/gateway.yaml)")
    parser.add_argument("--gateway-port", type=int, default=8000,
                        help="where Envoy listens for you (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=9001,
                        help="extauthz Check over gRPC (default 9001)")
    parser.add_argument("--http-port", type=int, default=9002,
                        help="extauthz pages, health and the demo issuer (default 9002)")
    parser.add_argument("--check-http-port", type=int, default=9003,
                        help="extauthz Check over plain HTTP (default 9003)")
    parser.add_argument("--upstream-port", type=int, default=8080,
                        help="the echo upstream behind Envoy (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9901,
                        help="Envoy's admin interface (default 9901)")
    parser.add_argument("--policies", default=str(REPO / "demo" / "policies.yaml"),
                        help="the policy file to serve and watch (default demo/policies.yaml)")
    args = parser.parse_args(argv)
    ports = {"gateway": args.gateway_port, "grpc": args.grpc_port, "http": args.http_port,
             "check-http": args.check_http_port, "upstream": args.upstream_port,
             "envoy admin": args.admin_port}
    busy = [f"{name} port {port}" for name, port in ports.items() if not port_is_free(port)]
    if busy:
        print(f"demo: {', '.join(busy)} in use; stop what holds it or pass "
              "--gateway-port/--grpc-port/--http-port/--check-http-port/--upstream-port/--admin-port",
              file=sys.stderr)
        return 2

    work = REPO / ".demo"
    work.mkdir(exist_ok=True)
    issuer_url = f"http://localhost:{args.http_port}"
    env = {"EXTAUTHZ_DEMO_ISSUER_ISSUER": issuer_url,
           "EXTAUTHZ_HTTP_PUBLIC_URL": f"http://localhost:{args.gateway_port}",
           "EXTAUTHZ_STORE_URL": f"file://{Path(args.policies).resolve()}",
           "EXTAUTHZ_LOG_FORMAT": "json"}  # read back by LogWatch for this terminal
    settings = load_settings(str(CONFIG), {**env, "EXTAUTHZ_HTTP_LISTEN": f"127.0.0.1:{args.http_port}"})
    token = demo_issuer(settings.demo_issuer).mint(
        subject="alice", email="alice@example.com", groups=("sre",))
    gateway_cfg = write_gateway(work / "gateway.yaml", listen_port=args.gateway_port,
                                admin_port=args.admin_port, grpc_port=args.grpc_port,
                                http_port=args.http_port, upstream_port=args.upstream_port,
                                check_http_port=args.check_http_port,
                                source=GATEWAYS[args.transport])
    procs = [
        Process("echo", echo_command(f"127.0.0.1:{args.upstream_port}"), work / "echo.log"),
        Process("extauthz", [sys.executable, "-m", "extauthz", "serve", "--config", str(CONFIG),
                             "--grpc-listen", f"127.0.0.1:{args.grpc_port}",
                             "--http-listen", f"127.0.0.1:{args.http_port}",
                             "--check-http-listen", f"127.0.0.1:{args.check_http_port}"],
                work / "extauthz.log", env=env),
        Process("envoy", envoy_command(gateway_cfg), work / "envoy.log"),
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    gateway = f"http://localhost:{args.gateway_port}"
    transport = ("plain HTTP (envoy/gateway-http.yaml), the faster transport; "
                 "--transport grpc for gRPC" if args.transport == "http" else
                 "gRPC (envoy/gateway.yaml); the default, plain HTTP, is several times cheaper")
    try:
        procs[0].start().wait_http(f"http://127.0.0.1:{args.upstream_port}/")
        procs[1].start().wait_http(f"http://127.0.0.1:{args.http_port}/readyz")
        procs[2].start().wait_http(f"http://127.0.0.1:{args.gateway_port}/healthz")
        if args.check:
            problems = _self_check(gateway, token)
            for problem in problems:
                print(f"demo check failed: {problem}", file=sys.stderr)
            print(f"demo check: ok (Envoy asked extauthz over {args.transport.upper()})"
                  if not problems else "demo check: FAILED")
            return 1 if problems else 0
        watch = LogWatch(work / "extauthz.log")  # from here: a policy edit's outcome is shown
        print(f"""
extauthz demo is running (logs in {work}).
  Envoy gateway  {gateway}     -> echo upstream on :{args.upstream_port}
  extauthz       Check over HTTP :{args.check_http_port} and gRPC :{args.grpc_port}, pages :{args.http_port}
                 (demo issuer {issuer_url})
  Envoy asks extauthz over {transport}

A token for alice (mint more: .venv/bin/extauthz token --config demo/config.yaml --sub bob):
  TOKEN={token}

Try:
  curl -i {gateway}/hello                                      # 401 + WWW-Authenticate
  curl -s {gateway}/hello -H "Authorization: Bearer $TOKEN"    # 200, upstream sees x-auth-*
  curl -s {gateway}/hello -H "Authorization: Bearer $TOKEN" -H "x-auth-subject: admin"
                                                    # the spoofed header never arrives
  curl -i {gateway}/hello -H "Authorization: Bearer nope"      # 401 error="invalid_token"

Policies (demo/policies.yaml, reloaded on save; .venv/bin/extauthz policy list --config demo/config.yaml):
  curl -s {gateway}/docs/intro                                 # public: no token needed
  curl -s {gateway}/admin/stats -H "Authorization: Bearer $TOKEN"   # groups: [sre] -> 200
  curl -i {gateway}/internal/x -H "Authorization: Bearer $TOKEN"    # action: deny -> 403
  curl -i {gateway}/billing/x -H "Authorization: Bearer $TOKEN"     # route-bound, needs scope -> 403
  curl -s {gateway}/v1/users/bob -H "Authorization: Bearer $TOKEN"  # dry-run rule: still 200, and
                                    # this terminal shows "dry-run policy new-rule-trial would deny"
  .venv/bin/extauthz policy explain --config demo/config.yaml --host localhost --path /admin/x

WebAuthn step-up: open {gateway}/payments/send in a browser. You are signed in as alice
by the demo issuer, asked to add a passkey (a security key or the device's screen lock),
then to confirm with it, and land back on the page. API clients get the RFC 9470 challenge:
  curl -i {gateway}/payments/send -H "Authorization: Bearer $TOKEN"  # 401 insufficient_user_authentication

Ctrl-C stops everything.""", flush=True)
        while not stop.is_set():
            stop.wait(0.5)
            for line in watch.policy_news():
                print(line, flush=True)
            dead = [p.name for p in procs if not p.running]
            if dead:
                print(f"demo: {', '.join(dead)} stopped; see {work}", file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    raise SystemExit(main())
