"""Settings: one YAML file, every key overridable by an ``EXTAUTHZ_*`` variable.

``model`` declares the file once (types, defaults, limits, meaning); ``env`` reads the file
and the environment; ``settings`` resolves and cross-checks them into one frozen
``Settings``; ``checks`` holds the rules a schema cannot state. Everything is validated
once, at start.
"""

from __future__ import annotations

from typing import get_args

from extauthz.config.checks import (
    KUBERNETES_RESERVED,
    RESERVED_HEADER_FAMILIES,
    RESERVED_HEADERS,
    is_loopback_host,
    is_loopback_url,
    parse_listen,
)
from extauthz.config.env import (
    CONFIG_VARIABLE,
    ENV_PREFIX,
    INTERNAL_VARIABLES,
    check_env_names,
    env_name,
    env_names,
    load_settings,
    read_yaml_mapping,
)
from extauthz.config.model import (
    CONFIG_FILE,
    DEFAULT_ALGORITHMS,
    MAX_STEPUP_COOKIE_AGE,
    Algorithm,
    AuditSettings,
    ConfigFile,
    DefaultAction,
    HeaderSettings,
    IssuerSettings,
    JWKSSettings,
    StoreSettings,
    TokenSettings,
)
from extauthz.config.settings import (
    DemoIssuerSettings,
    Settings,
    StepupSettings,
    insecure_settings,
    settings_from_document,
)

ALLOWED_ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
DEFAULT_ACTIONS: tuple[str, ...] = get_args(DefaultAction)

__all__ = [
    "ALLOWED_ALGORITHMS", "CONFIG_FILE", "CONFIG_VARIABLE", "DEFAULT_ACTIONS", "DEFAULT_ALGORITHMS",
    "ENV_PREFIX", "INTERNAL_VARIABLES", "KUBERNETES_RESERVED", "MAX_STEPUP_COOKIE_AGE",
    "RESERVED_HEADERS", "RESERVED_HEADER_FAMILIES", "AuditSettings", "ConfigFile",
    "DemoIssuerSettings", "HeaderSettings", "IssuerSettings", "JWKSSettings", "Settings",
    "StepupSettings", "StoreSettings", "TokenSettings", "check_env_names", "env_name", "env_names",
    "insecure_settings", "is_loopback_host", "is_loopback_url", "load_settings", "parse_listen",
    "read_yaml_mapping", "settings_from_document",
]
