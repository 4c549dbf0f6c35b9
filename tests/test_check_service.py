"""The gRPC service itself: wire conformance, health, reflection, and fuzzed input.

Requests and responses here are encoded and decoded with envoy-data-plane
(betterproto2), independently of the grpcio-tools stubs the service uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from envoy_data_plane.envoy.config.core.v3 import HeaderValueOptionHeaderAppendAction
from envoy_data_plane.envoy.service.auth.v3 import (
    AttributeContext,
    AttributeContextHttpRequest,
    AttributeContextRequest,
    CheckRequest,
    CheckResponse,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer
from tests.support.ports import free_port
from tests.support.requests import CHECK, check_request
from tests.support.settings import serving_settings


@pytest.fixture(scope="module")
def server(idp: LocalIssuer) -> Iterator[ServerThread]:
    thread = ServerThread(serving_settings(idp, login_url=None,
                                           admin={"grpc_listen": f"127.0.0.1:{free_port()}"})).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def check(server: ServerThread) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    channel = server.channel()
    yield channel.unary_unary(CHECK)  # raw bytes in, raw bytes out
    channel.close()


_request = check_request  # for test_explain_agrees_with_worker.py and test_store_loss_process.py,
# which import CHECK and _request from here; others import tests.support.requests


def test_an_allow_decodes_as_ok_with_overwriting_identity_headers(
    check: grpc.UnaryUnaryMultiCallable, idp: LocalIssuer
) -> None:
    raw = check(check_request({"authorization": f"Bearer {idp.mint('PS256')}",
                          "x-auth-subject": "mallory", "x-auth-extra": "1"}), timeout=5)
    resp = CheckResponse.parse(raw)
    assert resp.status.code == 0
    headers = {h.header.key: h for h in resp.ok_response.headers}
    assert headers["x-auth-subject"].header.value == "alice"
    assert headers["x-auth-subject"].append_action == (
        HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)
    assert set(resp.ok_response.headers_to_remove) == {"x-auth-extra", "authorization"}
    assert resp.denied_response is None


def test_each_group_is_its_own_impersonate_group_entry(idp: LocalIssuer) -> None:
    s = serving_settings(idp, headers={"kubernetes_impersonation": True},
                      issuers=[{"issuer": idp.issuer, "audiences": ["my-api"],
                                "username_prefix": "idp:", "groups_prefix": "idp:"}])
    thread = ServerThread(s).start()
    try:
        with thread.channel() as channel:
            raw = channel.unary_unary(CHECK)(
                check_request({"authorization": f"Bearer {idp.mint('RS256')}"}), timeout=5)
    finally:
        thread.stop()
    opts = [h for h in CheckResponse.parse(raw).ok_response.headers
            if h.header.key == "impersonate-group"]
    assert [h.header.value for h in opts] == ["idp:sre", "idp:dev"]
    assert [h.append_action for h in opts] == [
        HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD]


def test_a_denial_decodes_as_unauthenticated_with_a_401(check: grpc.UnaryUnaryMultiCallable) -> None:
    resp = CheckResponse.parse(check(check_request({"accept": "application/json"}), timeout=5))
    assert resp.status.code == 16
    assert int(resp.denied_response.status.code) == 401
    headers = {h.header.key: h.header.value for h in resp.denied_response.headers}
    assert headers["www-authenticate"] == 'Bearer realm="extauthz"'
    assert resp.ok_response is None


def test_headers_sent_as_raw_header_map_are_read_too(
    check: grpc.UnaryUnaryMultiCallable, idp: LocalIssuer
) -> None:
    from envoy_data_plane.envoy.config.core.v3 import HeaderMap, HeaderValue

    token = idp.mint("ES256")
    http = AttributeContextHttpRequest(method="GET", path="/", host="h", header_map=HeaderMap(
        headers=[HeaderValue(key="authorization", raw_value=f"Bearer {token}".encode())]))
    raw = bytes(CheckRequest(attributes=AttributeContext(request=AttributeContextRequest(http=http))))
    assert CheckResponse.parse(check(raw, timeout=5)).status.code == 0


def test_the_grpc_health_service_reports_serving(server: ServerThread) -> None:
    with server.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.auth.v3.Authorization"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_server_reflection_lists_the_authorization_service(server: ServerThread) -> None:
    assert server.settings.admin_grpc_listen is not None  # reflection is on the admin side
    with grpc.insecure_channel(f"127.0.0.1:{server.settings.admin_grpc_listen[1]}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
        names = {s.name for s in resp.list_services_response.service}
        assert "envoy.service.auth.v3.Authorization" in names


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_headers = st.dictionaries(
    st.sampled_from(["authorization", "cookie", "accept", "x-auth-subject", "impersonate-user",
                     "x-request-id", "host", ":path"]) | _text, _text | st.just("Bearer a.b.c"),
    max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=_headers, path=_text, method=_text, context=st.dictionaries(_text, _text, max_size=3))
def test_fuzzed_requests_always_get_a_well_formed_answer(
    check: grpc.UnaryUnaryMultiCallable, headers: dict[str, str], path: str, method: str,
    context: dict[str, str],
) -> None:
    resp = CheckResponse.parse(check(check_request(headers, path, method, context), timeout=5))
    assert resp.status.code in (0, 3, 7, 14, 16)
    if resp.status.code == 0:
        assert resp.ok_response is not None
        assert resp.denied_response is None
    else:
        assert resp.denied_response is not None
        assert resp.ok_response is None
        assert int(resp.denied_response.status.code) in (302, 400, 401, 403, 503)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300))
def test_fuzzed_bytes_are_answered_or_rejected_never_allowed(
    check: grpc.UnaryUnaryMultiCallable, blob: bytes
) -> None:
    resp = CheckResponse.parse(check(blob, timeout=5))
    assert resp.status.code != 0  # undecodable or tokenless: an explicit deny, never a gRPC error
    assert int(resp.denied_response.status.code) in (400, 401, 503)


class _BrokenAuthorizer:
    """Stands in for a pipeline with a bug: every check raises."""

    decision_id_header = "x-auth-decision-id"

    async def check(self, view: object) -> object:
        raise ZeroDivisionError("a bug")


async def test_a_bug_in_the_pipeline_is_an_explicit_503_deny_not_an_allow() -> None:
    from extauthz.service import AuthorizationService

    service = AuthorizationService(authorizer=_BrokenAuthorizer())  # type: ignore[arg-type]
    resp = CheckResponse.parse(await service.check(check_request({"authorization": "Bearer x"}), None))
    assert resp.status.code == 14
    assert int(resp.denied_response.status.code) == 503
    assert resp.ok_response is None
    assert "temporarily_unavailable" in resp.denied_response.body


def test_the_response_encoder_equals_the_plain_builder_on_the_wire() -> None:
    """Kept parts plus a hand-encoded decision id parse to exactly build_response's message."""
    from extauthz import decision as d
    from extauthz import denials
    from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
    from extauthz.response import ResponseEncoder, build_response

    encoder = ResponseEncoder(decision_id_header="x-auth-decision-id")
    long_value = "g" * 300  # lengths past one varint byte
    allows = [d.allow(f"abc-{i:x}", None, reason="allowed", description="allowed",
                      upstream_headers=(("x-auth-subject", "alice"), ("x-auth-groups", long_value),
                                        ("impersonate-group", "a"), ("impersonate-group", "b")),
                      remove_headers=("authorization", "x-auth-extra")[:i % 3], policy_id="p")
              for i in (1, 2, 0x12345)]  # the same kept headers with 1, 2 and 0 removals
    denied = [denials.forbidden("id-9", reason="no_policy", description="no policy allows this request"),
              denials.unavailable("id-8", reason="keys_unavailable", description="no keys")]
    for decision in [*allows, *denied, *allows]:  # the second round comes from the kept parts
        got = ext.CheckResponse.FromString(encoder.encode(decision))
        assert got == build_response(decision, "x-auth-decision-id"), decision.decision_id
    parsed = CheckResponse.parse(encoder.encode(allows[2]))  # and an independent decoder agrees
    ids = [h.header.value for h in parsed.ok_response.headers if h.header.key == "x-auth-decision-id"]
    assert ids == ["abc-12345"]
    appends = [h.append_action for h in parsed.ok_response.headers if h.header.key == "impersonate-group"]
    assert appends == [HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                       HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD]
