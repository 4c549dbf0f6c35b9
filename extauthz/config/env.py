"""Where settings come from: the file, then ``EXTAUTHZ_*`` variables over it.

Each key's variable is named after its path in the declaration (``http.public_url`` ->
``EXTAUTHZ_HTTP_PUBLIC_URL``); a text key takes the value as written, any other (numbers,
booleans, lists, sections) is read as YAML (``EXTAUTHZ_ISSUERS='[...]'``). Command-line
flags arrive here as variables, so the order is flag > environment > file > default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from extauthz.config.model import ConfigFile
from extauthz.config.settings import Settings, settings_from_document
from extauthz.errors import ConfigError
from extauthz.schema import strict_yaml
from extauthz.schema.declare import Section
from extauthz.schema.introspect import hints, nullable, strip
from extauthz.schema.messages import utf8_error_line, yaml_error_line, yaml_problem

ENV_PREFIX = "EXTAUTHZ_"
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"  # the config file's path
# Read by the code but not config keys: set by the worker supervisor for its children
# (extauthz/workers.py, extauthz/server.py). Any other EXTAUTHZ_* name is an error.
INTERNAL_VARIABLES = frozenset({ENV_PREFIX + "WORKER_ID", ENV_PREFIX + "METRICS_DIR"})


def env_name(path: str) -> str:
    return ENV_PREFIX + path.replace(".", "_").upper()


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section) and dataclasses.is_dataclass(tp)


def env_names(root: type = ConfigFile, where: str = "") -> dict[str, str]:
    """Every overridable key path and its environment variable."""
    names: dict[str, str] = {}
    for key, declared in hints(root).items():
        path = f"{where}.{key}" if where else key
        tp = strip(declared)[0]
        if _is_section(tp):
            names.update(env_names(tp, path))
        else:
            names[path] = env_name(path)
    return names


def _declared(path: str) -> Any:
    tp: Any = ConfigFile
    for part in path.split("."):
        declared = hints(tp)[part]
        tp = strip(declared)[0]
    return declared


def _is_text(declared: Any) -> bool:
    """A key whose variable is its value as written: a string or a choice of strings."""
    tp = strip(declared)[0]
    return tp is str or (get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp)))


def check_env_names(environ: Mapping[str, str]) -> None:
    """Every ``EXTAUTHZ_*`` variable (in any letter case) must name a key: a misspelled
    one would otherwise be ignored and its setting silently left at the default."""
    known = {name: path for path, name in env_names().items()}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        if name in known or name == CONFIG_VARIABLE or name in INTERNAL_VARIABLES:
            continue
        suffixes = {n[len(ENV_PREFIX):]: n for n in [*known, CONFIG_VARIABLE]}
        close = difflib.get_close_matches(name.upper()[len(ENV_PREFIX):], list(suffixes), n=1,
                                          cutoff=0.6)
        if close:
            guess = suffixes[close[0]]
            what = f"key '{known[guess]}'" if guess in known else "the config file's path"
            raise ConfigError(f"config: unknown environment variable {name}: did you mean "
                              f"{guess} ({what})? Rename or unset it")
        raise ConfigError(f"config: unknown environment variable {name}: it names no key; unset "
                          "it, or write EXTAUTHZ_ and the key path in capitals with '.' as '_' "
                          "(http.public_url is EXTAUTHZ_HTTP_PUBLIC_URL)")


def apply_env(doc: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Put each key's variable, where set, into ``doc`` (over the file's value)."""
    check_env_names(environ)
    for path, name in env_names().items():
        if name not in environ:
            continue
        raw = environ[name]
        declared = _declared(path)
        if _is_text(declared):
            value: Any = None if (nullable(declared) and raw in ("", "null")) else raw
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ConfigError(f"config: {name} is not valid YAML: {yaml_problem(e)}") from e
        node = doc
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value


def read_yaml_mapping(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("config: " + utf8_error_line(path, e)) from e
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}; check the --config path") from e
    try:
        doc = strict_yaml.load(text)
    except yaml.YAMLError as e:
        raise ConfigError("config: " + yaml_error_line(path, e, "not valid YAML")) from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys at the top level")
    return doc


def load_settings(
    path: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the file (``path`` or ``EXTAUTHZ_CONFIG``), apply the environment, validate."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_VARIABLE) or None
    doc: dict[str, Any] = {}
    if path:
        doc = read_yaml_mapping(path)
    apply_env(doc, environ)
    return settings_from_document(doc)
