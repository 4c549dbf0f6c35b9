"""The open-file limit a worker runs with, and how many HTTP connections fit in it.

Every connection (gRPC Check, HTTP, Redis, the IdP) is a file descriptor. Many systems start
processes with a soft limit of 1024 and a far higher hard limit; the soft one is raised to
the hard one at start (as nginx's ``worker_rlimit_nofile`` and Envoy's launchers do), and the
HTTP sides get at most half of it, so slow HTTP clients can never take the descriptors that
Envoy's Check connections need.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger("extauthz.rlimits")

_NR_OPEN = Path("/proc/sys/fs/nr_open")  # Linux: the most RLIMIT_NOFILE may be
_FALLBACK_CEILING = 1 << 20


def _ceiling(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text().strip())
    except (OSError, ValueError):
        return _FALLBACK_CEILING


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _ceiling(hard)
    target = _ceiling(hard)
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open-file limit from %d to %d (%s); slow HTTP clients get "
                    "fewer connections", soft, target, e)
        return soft
    log.info("open-file limit raised from %d to %d", soft, target)
    return target


def http_connection_budget(wanted: int, open_files: int, what: str) -> int:
    """``wanted`` connections, or half the open-file limit if that is less (logged)."""
    budget = max(16, open_files // 2)
    if wanted <= budget:
        return wanted
    log.warning("%s %d lowered to %d: the open-file limit is %d (raise the hard limit: ulimit -n, "
                "LimitNOFILE=, the container runtime's nofile) and the Check port needs the rest",
                what, wanted, budget, open_files)
    return budget
