"""A key written twice in a policy or config file is refused, never "the last one wins"."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz.config import load_settings
from extauthz.errors import ConfigError, PolicyInvalid
from extauthz.policy.model import documents_from_text
from extauthz.schema import strict_yaml
from tests.support.cli import refused, run_cli

TWICE = """\
id: admin
match: {paths: [{prefix: /admin/}]}
require: {claims: {groups: [sre]}}
require: {authenticated: false}
"""


def test_a_policy_that_sets_require_twice_is_refused_with_the_line() -> None:
    with pytest.raises(PolicyInvalid) as caught:
        documents_from_text(TWICE, "policies.yaml")
    assert caught.value.message == (
        "policies.yaml:4:1: not valid YAML or JSON: found duplicate key 'require'")


def test_a_config_key_written_twice_stops_the_start_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "extauthz.yaml"
    config.write_text("default_action: deny\nlog_level: info\ndefault_action: allow\n")
    with pytest.raises(ConfigError, match=r"extauthz.yaml:3:1: not valid YAML: found duplicate key "
                                          r"'default_action'"):
        load_settings(str(config), environ={})
    assert "duplicate key 'default_action'" in refused(run_cli(config, "serve"))


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "- {a: 1, a: 2}\n", "x:\n  y: 1\n  y: 1\n"])
def test_duplicate_keys_are_refused_at_any_depth(text: str) -> None:
    with pytest.raises(strict_yaml.ConstructorError, match="found duplicate key"):
        strict_yaml.load(text)


def test_a_merged_key_may_still_be_overridden_and_streams_still_load() -> None:
    assert strict_yaml.load("b: &b {x: 1}\no:\n  <<: *b\n  x: 2\n") == {"b": {"x": 1}, "o": {"x": 2}}
    assert list(strict_yaml.load_all("a: 1\n---\nb: [1, 2]\n")) == [{"a": 1}, {"b": [1, 2]}]
