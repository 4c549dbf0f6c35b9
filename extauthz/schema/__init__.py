"""Documents declared once: the config file and policies as typed, frozen dataclasses.

pydantic validates a YAML/JSON document straight into those dataclasses and publishes the
same declaration as JSON Schema (``extauthz schema policy|config``); every problem becomes
one line naming the key path and the fix (``messages``).
"""
