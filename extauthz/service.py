"""The gRPC ``envoy.service.auth.v3.Authorization/Check`` adapter: thin, and never raises.

CheckRequest -> RequestView -> Authorizer -> Decision -> CheckResponse. Any error
that escapes the pipeline is a bug; it becomes an explicit 503 deny, never an allow.
"""

from __future__ import annotations

import logging
from typing import Any

from extauthz import decision as d
from extauthz.authorize import Authorizer
from extauthz.decision import Reason
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2_grpc
from extauthz.request import view_from_check_request
from extauthz.response import build_response

log = logging.getLogger("extauthz.service")

INTERNAL_ERROR_RESPONSE = build_response(d.unavailable(
    "internal", reason=Reason.INTERNAL_ERROR,
    description="the authorization service failed; the request is denied"))


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        try:
            view = view_from_check_request(request)
            decision = await self._authorizer.check(view)
            return build_response(decision)
        except Exception:  # noqa: BLE001 - fail closed: a bug is a logged 503 deny, never an allow
            log.exception("check failed; answering 503 deny")
            return INTERNAL_ERROR_RESPONSE
