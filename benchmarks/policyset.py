"""Policy sets of a given size, shaped like a real gateway's: many hosts, a handful of
path rules each (prefix and exact, a few regexes), and the routes the scenarios hit."""

from __future__ import annotations

from typing import Any

HOSTS_PER_THOUSAND = 100  # 1,000 policies: 100 hosts x 10 rules; 10,000: 1,000 x 10
TARGET_HOST = "svc-0042.bench.local"
ALLOW_PATH = "/api/v1/r3/items/42?view=full"  # prefix /api/v1/r3/, needs group dev
DENY_PATH = "/admin/users"  # needs group sre: the bench user is not in it
STEPUP_PATH = "/payments/send"  # needs a recent passkey (WebAuthn step-up)


def _rule(host: str, i: int, j: int) -> dict[str, Any]:
    pid = f"h{i:04d}-r{j}"
    if j == 9:  # one regex per host: tried last, never on the scenarios' paths
        match = {"hosts": [host], "paths": [{"regex": f"/v[0-9]+/h{i}/[a-z]+"}]}
    elif j % 3 == 2:
        match = {"hosts": [host], "paths": [{"exact": f"/api/v1/r{j}/status"}], "methods": ["GET"]}
    else:
        match = {"hosts": [host], "paths": [{"prefix": f"/api/v1/r{j}/"}]}
    return {
        "id": pid,
        "match": match,
        "require": {"claims": {"groups": ["dev", "ops"]}},
        "headers": {"x-tenant": "{claims.sub}"} if j == 3 else {},
    }


def policies(count: int) -> list[dict[str, Any]]:
    """``count`` policies (a multiple of 10, at least 10) plus the scenarios' own three."""
    hosts = max(1, count // 10)
    out = [_rule(f"svc-{i:04d}.bench.local", i, j) for i in range(hosts) for j in range(10)]
    out += [
        {
            "id": "bench-admin",
            "match": {"hosts": [TARGET_HOST], "paths": [{"prefix": "/admin/"}]},
            "require": {"claims": {"groups": ["sre"]}},
        },
        {
            "id": "bench-payments",
            "match": {"hosts": [TARGET_HOST], "paths": [{"prefix": "/payments/"}]},
            "require": {"stepup": {"max_age": 300}},
        },
    ]
    return out
