"""What is revoked, and the in-memory set every worker checks on every request.

- ``token``: one token by ``jti``, until that token's ``exp``;
- ``subject``: every token of a subject (at one issuer, or any) issued before the revocation;
- ``client``: every token whose ``azp``/``client_id`` is the client, issued before it;
- ``all``: every token of an issuer issued before it (force re-authentication).
- ``stepup``: only the step-up proofs (cookies) of a subject at one issuer made before it:
  written when a passkey of that user is removed, never by ``revoke`` (tokens stay valid).

"Issued before" compares the token's ``iat`` with the revocation time, inclusive of that
second; a token without ``iat`` cannot prove it is newer and is refused. Step-up cookies
of a revoked subject stop working the same way (their ``auth_time`` is compared).

A revocation's key (its name in the store, in ``revoke list`` and ``revoke undo``) is
``KIND:ISSUER:VALUE`` with ``%``, ``:``, whitespace and non-printable characters
percent-encoded in each part (``*`` for any issuer), so no issuer/value pair can name
another's record: issuer ``X:svc`` + subject ``deploy`` is ``subject:X%3Asvc:deploy``, issuer
``X`` + subject ``svc:deploy`` is ``subject:X:svc%3Adeploy``. Records written before this
encoding sit under their raw ``KIND:ISSUER:VALUE`` (:attr:`Revocation.legacy_key`); they are
still read and enforced, and ``revoke undo`` lifts them by either form.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from urllib.parse import unquote

from extauthz.identity.model import Identity

KINDS = ("token", "subject", "client", "all", "stepup")
ANY_ISSUER = "*"


def _encode(part: str, special: str = "%:") -> str:
    return "".join(c if c.isprintable() and not c.isspace() and c not in special
                   else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in part)


def revocation_key(kind: str, issuer: str, value: str) -> str:
    """``KIND:ISSUER:VALUE``, each part percent-encoded: one key names one revocation.

    ``*`` is any issuer (so a literal ``*`` in an issuer is encoded too).
    """
    return f"{kind}:{_encode(issuer, '%:*') if issuer else ANY_ISSUER}:{_encode(value)}"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """The (kind, issuer, value) a key in the current encoding names; None if it is not one.

    Escapes are read in either case; a key that does not encode back to itself (a raw
    ``%``, an escape of a plain character, bad UTF-8) is not a key.
    """
    parts = key.split(":")
    if len(parts) != 3 or parts[0] not in KINDS:
        return None
    kind, issuer, value = parts
    try:
        target = (kind, "" if issuer == ANY_ISSUER else unquote(issuer, errors="strict"),
                  unquote(value, errors="strict"))
    except UnicodeDecodeError:
        return None
    if revocation_key(*target).upper() != key.upper():
        return None
    return target


@dataclass(frozen=True)
class Revocation:
    kind: str
    value: str  # the jti, subject or client id; "" for all
    issuer: str  # "" for any issuer
    at: int  # when it was made (epoch seconds): tokens issued up to then are cut off
    expires: int | None  # when the record may go (token: its exp); None: until undone
    reason: str = ""

    @property
    def key(self) -> str:
        return revocation_key(self.kind, self.issuer, self.value)

    @property
    def legacy_key(self) -> str:
        """The key records were stored under before the encoding (ambiguous: read, never written)."""
        return f"{self.kind}:{self.issuer or '*'}:{self.value}"

    @property
    def target(self) -> tuple[str, str, str]:
        """What it revokes: two records with the same target are the same revocation."""
        return (self.kind, self.issuer, self.value)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Revocation:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RevocationList:
    revision: str
    records: tuple[Revocation, ...]


class RevocationSet:
    """The revocations in force, indexed for O(1) checks."""

    def __init__(self, records: Iterable[Revocation] = (), revision: str = "") -> None:
        self.revision = revision
        self.records = tuple(records)
        self._jti: dict[tuple[str, str], int | None] = {}
        self._subject: dict[tuple[str, str], int] = {}
        self._client: dict[tuple[str, str], int] = {}
        self._issuer: dict[str, int] = {}
        self._stepup: dict[tuple[str, str], int] = {}  # passkeys removed: step-ups before then end
        for r in self.records:
            if r.kind == "token":
                self._jti[(r.issuer, r.value)] = r.expires
            elif r.kind == "subject":
                self._subject[(r.issuer, r.value)] = max(r.at, self._subject.get((r.issuer, r.value), 0))
            elif r.kind == "client":
                self._client[(r.issuer, r.value)] = max(r.at, self._client.get((r.issuer, r.value), 0))
            elif r.kind == "all":
                self._issuer[r.issuer] = max(r.at, self._issuer.get(r.issuer, 0))
            elif r.kind == "stepup":
                self._stepup[(r.issuer, r.value)] = max(r.at, self._stepup.get((r.issuer, r.value), 0))

    def __len__(self) -> int:
        return len(self.records)

    def _cut_off(self, issuer: str, subject: str, client: str | None, when: float | None) -> bool:
        if not (self._subject or self._client or self._issuer):
            return False
        cutoffs = [self._subject.get((issuer, subject)), self._subject.get(("", subject)),
                   self._issuer.get(issuer)]
        if client is not None:
            cutoffs += [self._client.get((issuer, client)), self._client.get(("", client))]
        return any(c is not None and (when is None or when <= c) for c in cutoffs)

    def token_revoked(self, identity: Identity) -> bool:
        if self._jti and identity.jti is not None and (
                (identity.issuer, identity.jti) in self._jti or ("", identity.jti) in self._jti):
            return True
        return self._cut_off(identity.issuer, identity.subject, identity.client_id, identity.issued_at)

    def stepup_revoked(self, issuer: str, subject: str, auth_time: int) -> bool:
        ended = self._stepup.get((issuer, subject)) if self._stepup else None
        if ended is not None and auth_time <= ended:
            return True
        return self._cut_off(issuer, subject, None, auth_time)


EMPTY = RevocationSet()
