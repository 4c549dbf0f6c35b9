"""The stubs in extauthz/pb are exactly what protos/generate.py makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_generated_stubs_are_not_stale() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_stubs_do_not_claim_the_top_level_envoy_package() -> None:
    for path in (ROOT / "extauthz" / "pb").rglob("*.py"):
        text = path.read_text()
        assert "\nfrom envoy." not in text, path
        assert "\nimport envoy" not in text, path
