"""``extauthz schema policy|config``: the JSON Schema (draft 2020-12) of a document.

Point an editor at it (``# yaml-language-server: $schema=policy.schema.json``) and a
misspelt key is underlined while it is typed, with the same declaration the service
validates against.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

KINDS = ("policy", "config")


def add_schema_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schema = sub.add_parser("schema", help="print the JSON Schema of policy or config documents")
    schema.add_argument("kind", choices=KINDS, help="policy: a policy document (or a list of "
                                                    "them); config: the config file")


def document_schema(kind: str) -> dict[str, Any]:
    if kind == "policy":
        from extauthz.policy.document import POLICY_DOCUMENT

        return POLICY_DOCUMENT.json_schema()
    from extauthz.config.model import CONFIG_FILE

    return CONFIG_FILE.json_schema()


def schema_text(kind: str) -> str:
    """What ``extauthz schema KIND`` prints (and ``schemas/KIND.schema.json`` holds)."""
    return json.dumps(document_schema(kind), indent=2, ensure_ascii=False) + "\n"


def run_schema_command(args: argparse.Namespace) -> int:
    print(schema_text(args.kind), end="")
    return 0
