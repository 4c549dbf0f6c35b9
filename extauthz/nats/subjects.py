"""NATS subject patterns as a policy may grant them: dot-separated tokens, ``*`` one whole
token, ``>`` a whole last token (nats-server's ``IsValidSubject``), and no characters a
server would read differently (whitespace, controls)."""

from __future__ import annotations

_MAX = 1024


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` is not a valid NATS subject pattern, or None."""
    if not subject:
        return "is empty"
    if len(subject) > _MAX:
        return f"is longer than {_MAX} characters"
    if any(c.isspace() or not c.isprintable() for c in subject):
        return "has whitespace or a control character"
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            return "has an empty token (a leading, trailing or doubled '.')"
        if token == ">" and i != len(tokens) - 1:  # noqa: S105 (a subject token)
            return "has '>' before the last token ('>' matches the rest, so it comes last)"
        if len(token) > 1 and ("*" in token or ">" in token):
            return "has '*' or '>' inside a token (each stands alone, e.g. orders.*.created)"
    return None
