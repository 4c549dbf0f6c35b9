"""The gRPC ``envoy.service.auth.v3.Authorization/Check`` adapter: thin, and never raises.

bytes -> CheckRequest -> RequestView -> the check pipeline (``pipeline.py``, shared with the
plain-HTTP transport) -> Decision -> CheckResponse -> bytes. The method is registered on raw
bytes so that even an undecodable request gets an explicit deny rather than a gRPC error.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError

from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.pipeline import INTERNAL, UNDECODABLE, CheckCounter, CheckPipeline, Decider, DecisionLog
from extauthz.request import view_from_check_request
from extauthz.response import ResponseEncoder, build_response

log = logging.getLogger("extauthz.service")

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name

INTERNAL_ERROR: bytes = build_response(INTERNAL).SerializeToString()
BAD_REQUEST: bytes = build_response(UNDECODABLE).SerializeToString()


class HandlerServer(Protocol):
    """A ``grpc.aio.Server``, as far as registering a generic handler goes."""

    def add_generic_rpc_handlers(self, handlers: tuple[object, ...]) -> None: ...


class AuthorizationService:
    def __init__(self, *, authorizer: Decider, audit: DecisionLog | None = None,
                 metrics: CheckCounter | None = None) -> None:
        self._pipeline = CheckPipeline(authorizer=authorizer, audit=audit, metrics=metrics)
        self._encoder = ResponseEncoder(decision_id_header=authorizer.decision_id_header)

    async def check(self, data: bytes, context: object) -> bytes:
        started = time.perf_counter()
        try:
            request = ext.CheckRequest.FromString(data)
        except DecodeError:
            log.warning("undecodable CheckRequest (%d bytes); answering 503 deny", len(data))
            self._pipeline.record(UNDECODABLE, None, started)
            return BAD_REQUEST
        return await self._pipeline.answer(lambda: view_from_check_request(request),
                                           self._encoder.encode, INTERNAL_ERROR, started)

    def add_to_server(self, server: HandlerServer) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        }),))
