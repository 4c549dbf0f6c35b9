"""The compiled policy index: which policy governs a request, in constant time.

Precedence, deterministic and explainable:
1. an Envoy route's ``context_extensions: {policy: ID}`` binds that policy directly (a
   policy with ``match.bound_only: true`` is used only that way);
2. otherwise exact host > wildcard host (longest suffix first) > any host;
3. then exact path > longest prefix > regex (regexes in priority order);
4. then higher ``priority``, then ``id``; a policy whose methods exclude the request's
   method does not match, and the search goes on.

A ``mode: dry-run`` policy never decides: the request is decided by the best enforcing
match (or ``default_action``) exactly as if the dry-run policy did not exist. The dry-run
policy that would win if it were enforced (its *shadow*) is found by a second index over
every policy, built only when there are dry-run policies, and the caller evaluates it for
the log, the metric and the audit record. A route bound to a dry-run policy is denied, as
a route bound to an id that does not exist is (fail closed).

Host and exact/prefix path lookups are dict hits (prefixes: one per distinct prefix
length), so the cost does not grow with the number of policies. Regexes are tried one
by one: keep them few. They are RE2 (``model.compile_regex``), linear in the path, and the
path they see is at most ``paths.MAX_PATH`` long: a longer one is refused before matching.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from extauthz.policy.model import Policy
from extauthz.policy.paths import AmbiguousPath, has_second_reading, literal_path, normalize_path
from extauthz.request import RequestView

CONTEXT_KEY = "policy"


def _sort_key(p: Policy) -> tuple[int, str]:
    return (-p.priority, p.id)


def _first_for_method(policies: Sequence[Policy], method: str) -> Policy | None:
    for p in policies:
        if not p.methods or method in p.methods:
            return p
    return None


@dataclass
class _PathTable:
    exact: dict[str, list[Policy]] = field(default_factory=dict)
    prefix: dict[str, list[Policy]] = field(default_factory=dict)
    prefix_lengths: list[int] = field(default_factory=list)
    regex: list[tuple[Policy, int]] = field(default_factory=list)

    def add(self, policy: Policy) -> None:
        if not policy.paths:
            self.prefix.setdefault("", []).append(policy)
        for i, pm in enumerate(policy.paths):
            if pm.kind == "exact":
                self.exact.setdefault(pm.value, []).append(policy)
            elif pm.kind == "prefix":
                self.prefix.setdefault(pm.value, []).append(policy)
            else:
                self.regex.append((policy, i))

    def freeze(self) -> None:
        for bucket in (*self.exact.values(), *self.prefix.values()):
            bucket.sort(key=_sort_key)
        self.prefix_lengths = sorted({len(k) for k in self.prefix}, reverse=True)
        self.regex.sort(key=lambda item: _sort_key(item[0]))

    def match(self, path: str, method: str) -> tuple[Policy, str, str] | None:
        """The policy, and how its path matched: ("exact" | "prefix" | "regex", what)."""
        bucket = self.exact.get(path)
        if bucket:
            hit = _first_for_method(bucket, method)
            if hit:
                return hit, "exact", path
        n = len(path)
        for length in self.prefix_lengths:
            if length > n:
                continue
            bucket = self.prefix.get(path[:length])
            if bucket:
                hit = _first_for_method(bucket, method)
                if hit:
                    return hit, "prefix", path[:length]
        for policy, i in self.regex:
            pattern = policy.paths[i].pattern
            assert pattern is not None
            if (not policy.methods or method in policy.methods) and pattern.fullmatch(path):
                return policy, "regex", pattern.pattern
        return None


class Match(NamedTuple):
    """The governing policy and where it was found; ``why`` is worded only when asked for
    (by ``explain``), never on the Check path."""

    policy: Policy
    host_rule: str  # "bound" | "host" | "wildcard" | "any"
    host: str
    path_rule: str = ""  # "exact" | "prefix" | "regex"
    path: str = ""

    @property
    def why(self) -> str:
        if self.host_rule == "bound":
            return f"bound by the route (context_extensions policy={self.host})"
        where = {"host": f"host {self.host}", "wildcard": f"host *{self.host}",
                 "any": "any host"}[self.host_rule]
        what = {"exact": f"exact path {self.path}", "prefix": f"prefix {self.path or '(any path)'}",
                "regex": f"regex {self.path}"}[self.path_rule]
        return f"{where}, {what}"


class Lookup(NamedTuple):
    """What decides a request (``match``; None: ``default_action``) and the dry-run policy
    that outranks it (``shadow``), evaluated alongside for the record and never deciding."""

    match: Match | None
    shadow: Match | None = None

    @property
    def bound_to_dry_run(self) -> bool:
        """The route binds a dry-run policy: denied as if the policy did not exist."""
        return self.shadow is not None and self.shadow.host_rule == "bound"


class PolicyIndex:
    """All policies of one revision, compiled for lookup. Immutable once built.

    Its tables hold enforcing policies only (``shadows=True``: dry-run ones too, for the
    inner index that finds a request's dry-run shadow)."""

    def __init__(self, policies: Iterable[Policy], revision: str = "", *,
                 shadows: bool = False) -> None:
        policies = list(policies)
        self.revision = revision
        self.by_id: dict[str, Policy] = {}  # HTTP policies; NATS ones are in self.nats
        self.nats: tuple[Policy, ...] = tuple(sorted(
            (p for p in policies if p.nats is not None and not p.dry_run), key=_sort_key))
        self._exact: dict[str, _PathTable] = {}
        self._wildcard: dict[str, _PathTable] = {}  # key: ".example.com"
        self._any = _PathTable()
        for p in policies:
            if p.nats is not None:  # the NATS callout's (nats/permissions.py), never a route's
                continue
            self.by_id[p.id] = p
            if p.bound_only or (p.dry_run and not shadows):
                continue
            if not p.hosts or "*" in p.hosts:
                self._any.add(p)
            for host in p.hosts:
                if host == "*":
                    continue
                if host.startswith("*."):
                    self._wildcard.setdefault(host[1:], _PathTable()).add(p)
                else:
                    self._exact.setdefault(host, _PathTable()).add(p)
        for table in (*self._exact.values(), *self._wildcard.values(), self._any):
            table.freeze()
        # Every header any policy sets: a client-sent copy is removed on every request, not
        # only where that policy matched (else a public route would pass a forged x-tenant).
        self.managed_headers = frozenset(t.name for p in self.by_id.values() for t in p.headers)
        trials = not shadows and any(p.dry_run and not p.bound_only for p in policies)
        self._shadows = PolicyIndex(policies, revision, shadows=True) if trials else None

    def __len__(self) -> int:
        return len(self.by_id) + len(self.nats)

    def lookup(self, view: RequestView) -> Lookup:
        """The enforcing match that decides, and the dry-run policy (if any) that outranks it.

        A route-bound id that does not exist raises KeyError: the caller denies.
        """
        bound = view.context_extensions.get(CONTEXT_KEY) if view.context_extensions else None
        if bound is not None:
            policy = self.by_id[bound]
            if policy.dry_run:
                return Lookup(None, Match(policy, "bound", bound))
            return Lookup(Match(policy, "bound", bound))
        host, path = view.host.rstrip("."), normalize_path(view.path)
        found = self._match_path(view, host, path)
        if self._shadows is None:
            return Lookup(found)
        top = self._shadows._find(host, path, view.method)
        return Lookup(found, top if top is not None and top.policy.dry_run else None)

    def match(self, view: RequestView) -> Match | None:
        """The governing (enforcing) policy, or None (then the configured default applies).

        A route-bound id that does not exist, or names a dry-run policy, raises KeyError:
        the caller denies.
        """
        if view.context_extensions:
            bound = view.context_extensions.get(CONTEXT_KEY)
            if bound is not None:
                policy = self.by_id[bound]
                if policy.dry_run:  # never decides: as if it did not exist
                    raise KeyError(bound)
                return Match(policy, "bound", bound)
        return self._match_path(view, view.host.rstrip("."), normalize_path(view.path))

    def _match_path(self, view: RequestView, host: str, path: str) -> Match | None:
        """``match`` for a host and path already normalised (computed once per lookup)."""
        found = self._find(host, path, view.method)
        if has_second_reading(view.path):
            # Upstreams disagree on whether %2F, %5C and '\\' split segments, '//' merges and
            # ';' parameters drop: both readings must fall under the same policy, or the
            # request is refused (never guessed).
            other = self._find(host, literal_path(view.path), view.method)
            if (other.policy if other else None) is not (found.policy if found else None):
                raise AmbiguousPath("the path reads under another policy where an encoded '/' or '\\', "
                                    "a '//' or a ';' parameter is read literally")
        return found

    def _find(self, host: str, path: str, method: str) -> Match | None:
        """The governing policy for a normalised path and host, by the precedence rules."""
        table = self._exact.get(host)
        if table is not None:
            hit = table.match(path, method)
            if hit is not None:
                return Match(hit[0], "host", host, hit[1], hit[2])
        if self._wildcard:  # longest suffix first: a.b.example.com, then b.example.com, ...
            dot = host.find(".")
            while dot != -1:
                table = self._wildcard.get(host[dot:])
                if table is not None:
                    hit = table.match(path, method)
                    if hit is not None:
                        return Match(hit[0], "wildcard", host[dot:], hit[1], hit[2])
                dot = host.find(".", dot + 1)
        hit = self._any.match(path, method)
        if hit is not None:
            return Match(hit[0], "any", "", hit[1], hit[2])
        return None


def explain(index: PolicyIndex, view: RequestView) -> list[tuple[str, str]]:
    """Every policy and why it did or did not govern this request (slow; for the CLI). The
    deciding policy's line starts ``MATCHED:``, its dry-run shadow's ``DRY-RUN:``."""
    try:
        winner, shadow = index.lookup(view)
    except KeyError:
        winner, shadow = None, None
    path = normalize_path(view.path)
    host = view.host.rstrip(".")
    lines = []
    for p in sorted(index.by_id.values(), key=lambda p: p.id):
        if winner is not None and p.id == winner.policy.id:
            lines.append((p.id, f"MATCHED: {winner.why}"))
            continue
        if shadow is not None and p.id == shadow.policy.id:
            instead = ("the route is denied as if it did not exist" if shadow.host_rule == "bound"
                       else f"{winner.policy.id} decides" if winner else "default_action decides")
            lines.append((p.id, f"DRY-RUN: {shadow.why}; evaluated and logged only, {instead}"))
            continue
        # what outranks p: for a dry-run policy, the best of all; for an enforcing one, the winner
        top = (shadow or winner) if p.dry_run else (winner or shadow)
        lines.append((p.id, _why_not(p, host, path, view.method, top)))
    return lines


def _why_not(p: Policy, host: str, path: str, method: str, winner: Match | None) -> str:
    if p.bound_only:
        return "bound_only: applies only where an Envoy route binds it (context_extensions)"
    hosts_ok = not p.hosts or any(
        h == "*" or h == host or (h.startswith("*.") and host.endswith(h[1:])) for h in p.hosts)
    if not hosts_ok:
        return f"host {host} is not one of {', '.join(p.hosts)}"
    if p.methods and method not in p.methods:
        return f"method {method} is not one of {', '.join(sorted(p.methods))}"
    paths_ok = not p.paths or any(
        (pm.kind == "exact" and pm.value == path)
        or (pm.kind == "prefix" and path.startswith(pm.value))
        or (pm.kind == "regex" and pm.pattern is not None and pm.pattern.fullmatch(path) is not None)
        for pm in p.paths)
    if not paths_ok:
        shown = ", ".join(f"{pm.kind} {pm.value}" for pm in p.paths)
        return f"path {path} does not match ({shown})"
    if winner is not None:
        return f"matches, but {winner.policy.id} takes precedence ({winner.why})"
    return "matches"  # unreachable when the index is consistent
