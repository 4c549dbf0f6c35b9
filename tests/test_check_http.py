"""Check over plain HTTP (check_http/): the real worker (``server.serve`` on uvloop), spoken to
over raw sockets, so every byte a hostile or broken client can send is in the test's hands.

The same requests over gRPC must be decided the same way: a table runs through both
transports of one worker and compares status, headers and body.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httptools
import pytest
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.inproc import ServerThread
from tests.support.issuer import LocalIssuer
from tests.support.requests import CHECK, check_request
from tests.support.settings import serving_settings

POLICIES = [
    {"id": "admin", "match": {"hosts": ["api.example.com"], "paths": [{"prefix": "/admin/"}]},
     "require": {"authenticated": True, "claims": {"groups": ["admins"]}},
     "headers": {"x-tenant": "{claims.tenant}"}},
    {"id": "public", "match": {"hosts": ["api.example.com"], "paths": [{"prefix": "/public/"}]},
     "require": {"authenticated": False}},
    {"id": "bound", "match": {"bound_only": True},
     "require": {"authenticated": True, "claims": {"groups": ["x"]}}},
]


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode().lower(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"{name} answered twice"
        return values[0] if values else None


def read_answers(sock: socket.socket, count: int, timeout: float = 5.0,
                 probe: float = 0.3) -> tuple[list[Answer], bool]:
    """Up to ``count`` answers from ``sock``, and whether the server closed the connection."""
    sock.settimeout(timeout)
    answers: list[Answer] = []
    closed = False

    class Sink:
        current: Answer

        def on_message_begin(self) -> None:
            self.current = Answer()

        def on_header(self, name: bytes, value: bytes) -> None:
            self.current.on_header(name, value)

        def on_body(self, body: bytes) -> None:
            self.current.on_body(body)

        def on_message_complete(self) -> None:
            self.current.status = parser.get_status_code()
            answers.append(self.current)

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    deadline = time.monotonic() + timeout
    while len(answers) < count and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset
            closed = True
            break
        if not data:
            closed = True
            break
        parser.feed_data(data)
    if not closed and probe:
        sock.settimeout(probe)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return answers, closed


@pytest.fixture(scope="module")
def server(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    work = tmp_path_factory.mktemp("check-http")
    (work / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    thread = ServerThread(serving_settings(
        idp, login_url=None, store={"url": f"file://{work}/policies.yaml",
                                    "state_file": str(work / "state.json")},
        check_http={"header_timeout": 1.0, "idle_timeout": 2.0, "max_headers": 100,
                    "max_header_bytes": 16384, "route_header": "x-extauthz-policy"})).start()
    yield thread
    thread.stop()


def connect(server: ServerThread) -> socket.socket:
    assert server.settings.check_http_listen is not None
    return socket.create_connection(("127.0.0.1", server.settings.check_http_listen[1]), timeout=5)


def request(path: str = "/", *, method: str = "GET", host: str = "api.example.com",
            headers: dict[str, str] | None = None, extra: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n").encode() + extra + b"\r\n"


def ask(server: ServerThread, data: bytes, count: int = 1, **kw: object) -> tuple[list[Answer], bool]:
    with connect(server) as sock:
        sock.sendall(data)
        return read_answers(sock, count, **kw)  # type: ignore[arg-type]


def test_an_allow_names_the_identity_and_every_spoofed_header_to_strip(
        server: ServerThread, idp: LocalIssuer) -> None:
    token = idp.mint(sub="alice", groups=["admins"])
    [answer], closed = ask(server, request("/admin/x", headers={
        "authorization": f"Bearer {token}", "x-auth-subject": "mallory", "x-auth-extra": "1",
        "impersonate-user": "root"}))
    assert answer.status == 200
    assert not closed
    assert answer.header("x-auth-subject") == "alice"
    assert answer.header("x-auth-policy") == "admin"
    assert answer.header("x-auth-decision-id")
    removed = set((answer.header("x-envoy-auth-headers-to-remove") or "").split(","))
    assert {"x-auth-extra", "impersonate-user", "authorization"} <= removed
    assert "x-auth-subject" not in removed  # overwritten, not removed
    assert answer.body == b""


def test_an_allow_names_spoofable_headers_the_gateway_may_not_have_forwarded(
        server: ServerThread, idp: LocalIssuer) -> None:
    """A gateway forwards a list of headers to the check; a client's copy of a header it left
    out is still removed, unless the answer sets that header."""
    token = idp.mint(sub="alice", groups=["admins"])
    [answer], _ = ask(server, request("/admin/x", headers={"authorization": f"Bearer {token}"}))
    removed = set((answer.header("x-envoy-auth-headers-to-remove") or "").split(","))
    assert {"x-auth-acr", "x_auth_acr", "impersonate-user", "impersonate-group",
            "x-remote-user", "x-tenant", "x_tenant"} <= removed  # none seen, none set
    assert not removed & {k for k, _ in answer.headers}  # Envoy removes after setting
    assert "x-auth-decision-id" not in removed
    assert "x_auth_decision_id" in removed  # we set only the '-' spelling


def test_a_client_cannot_pass_its_check_off_as_another_transport() -> None:
    """The audit's transport and scheme come from what Envoy sets, not a client's header."""
    from extauthz.audit.record import audit_record
    from extauthz.check_http.view import RequestViewBuilder
    from extauthz.pipeline import INTERNAL

    builder = RequestViewBuilder(path_prefix="", route_header=None)
    view = builder.build("GET", "/x", [("host", "a.example.com"), ("x-forwarded-proto", "nats")])
    assert view.scheme == "http"
    assert audit_record(INTERNAL, view, 0.0)["transport"] == "envoy"


def test_denials_carry_the_status_challenge_and_body(server: ServerThread, idp: LocalIssuer) -> None:
    [missing], _ = ask(server, request("/admin/x"))
    assert missing.status == 401
    assert missing.header("www-authenticate") == 'Bearer realm="extauthz"'
    assert missing.header("content-type") == "application/json"
    assert b"no bearer token" in missing.body
    [forbidden], _ = ask(server, request("/admin/x", headers={
        "authorization": f"Bearer {idp.mint(sub='bob', groups=['dev'])}"}))
    assert forbidden.status == 403
    assert forbidden.header("x-auth-subject") is None  # nothing for the upstream on a deny


@pytest.mark.parametrize("path", ["/public/%2e%2e/admin/x", "/public/..;/admin/x",
                                  "/public/%252e%252e/admin/x", "public/x", "/a\\..\\admin/"])
def test_an_ambiguous_path_is_refused_400_not_guessed(server: ServerThread, path: str) -> None:
    [answer], _ = ask(server, request(path))
    assert answer.status == 400, path


@pytest.mark.parametrize("host", ["api.example.com:1:2", "user@api.example.com", "",
                                  "api.example.com\t", "[::1"])
def test_an_odd_authority_is_refused(server: ServerThread, host: str) -> None:
    answers, _ = ask(server, request("/public/x", host=host))
    assert [a.status for a in answers][:1] == [400], host


def test_two_hosts_or_two_authorizations_are_refused_never_one_picked(
        server: ServerThread, idp: LocalIssuer) -> None:
    token = idp.mint(sub="alice", groups=["admins"])
    [two_hosts], _ = ask(server, request("/public/x", headers={"host": "evil.example.com"}))
    assert two_hosts.status == 400
    [two_tokens], _ = ask(server, request("/admin/x", headers={"authorization": f"Bearer {token}"},
                                          extra=b"authorization: Bearer x\r\n"))
    assert two_tokens.status == 400


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
        server: ServerThread, idp: LocalIssuer) -> None:
    token = idp.mint(sub="alice", groups=["admins"])
    batch = b"".join([
        request("/admin/1", headers={"authorization": f"Bearer {token}"}),
        request("/admin/2"),
        request("/public/3"),
        request("/admin/4", headers={"authorization": f"Bearer {token}"}),
    ] * 5)
    answers, closed = ask(server, batch, count=20)
    assert [a.status for a in answers] == [200, 401, 200, 200] * 5
    assert not closed  # still open for the next one


def test_a_flood_of_pipelined_requests_in_one_read_is_refused_not_queued(server: ServerThread) -> None:
    flood = request("/public/x") * 2000  # ~70 KB: one read can hold hundreds
    with connect(server) as sock:
        sock.sendall(flood)
        answers, closed = read_answers(sock, 2000, timeout=5)
    assert answers[-1].status == 400
    assert b"pipelined" in answers[-1].body
    assert len(answers) <= 300
    assert closed


def test_a_check_that_waits_keeps_its_place_among_pipelined_ones(tmp_path: Path) -> None:
    """The first check waits for a key fetch (its coroutine suspends and a Task takes it
    over); those pipelined behind it are answered after it, in order, each its own answer."""
    idp = LocalIssuer()
    try:
        (tmp_path / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
        thread = ServerThread(serving_settings(
            idp, jwks={"unknown_kid_cooldown": 0},
            store={"url": f"file://{tmp_path}/policies.yaml",
                   "state_file": str(tmp_path / "state.json")})).start()
        try:
            idp.rotate()  # the next token's kid is unknown: its check fetches the keys...
            idp.delay = 0.5  # ...slowly
            token = idp.mint("ES256", sub="alice", groups=["admins"])
            batch = (request("/admin/x", headers={"authorization": f"Bearer {token}"})
                     + request("/admin/x") + request("/public/x")
                     + request("/admin/x", headers={"authorization": f"Bearer {token}"}))
            answers, closed = ask(thread, batch, count=4)
            assert [a.status for a in answers] == [200, 401, 200, 200]
            assert [a.header("x-auth-subject") for a in answers] == ["alice", None, None, "alice"]
            assert not closed
        finally:
            thread.stop()
    finally:
        idp.close()


def test_a_head_check_is_answered_without_a_body(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(request("/admin/x", method="HEAD") + request("/public/x"))
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"content-length: " in head
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two answers


def test_the_route_header_binds_a_policy_as_context_extensions_do(
        server: ServerThread, idp: LocalIssuer) -> None:
    token = idp.mint(sub="alice", groups=["admins"])
    [bound], _ = ask(server, request("/anything", headers={"authorization": f"Bearer {token}",
                                                           "x-extauthz-policy": "bound"}))
    assert bound.status == 403  # the bound policy wants group x
    [unbound], _ = ask(server, request("/anything", headers={"authorization": f"Bearer {token}"}))
    assert unbound.status == 200  # default_action: authenticated
    [twice], _ = ask(server, request("/anything", headers={"x-extauthz-policy": "bound"},
                                     extra=b"x-extauthz-policy: public\r\n"))
    assert twice.status == 400


def test_garbage_bytes_get_a_400_and_a_closed_connection(server: ServerThread) -> None:
    for junk in (b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
                 b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n",
                 b"GET / HTTP/1.1\r\nhost: a\x00b\r\n\r\n",
                 b"GET /\x7f HTTP/1.1\r\nhost: a\r\n\r\n",
                 b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"):
        answers, closed = ask(server, junk)
        assert [a.status for a in answers] == [400], junk
        assert closed, junk


def test_an_upgrade_or_connect_is_not_a_check(server: ServerThread) -> None:
    answers, closed = ask(server, b"CONNECT api.example.com:443 HTTP/1.1\r\nhost: a\r\n\r\n")
    assert [a.status for a in answers] == [400]
    assert closed
    answers, closed = ask(server, request("/public/x", headers={"connection": "upgrade",
                                                                "upgrade": "websocket"}))
    assert [a.status for a in answers] == [400]
    assert closed


def test_a_one_megabyte_header_gets_431_and_a_closed_connection(server: ServerThread) -> None:
    answers, closed = ask(server, request("/public/x", headers={"x-big": "a" * 1_048_576}))
    assert [a.status for a in answers] == [431]
    assert closed


def test_ten_thousand_headers_get_431(server: ServerThread) -> None:
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))
    answers, closed = ask(server, request("/public/x", extra=many))
    assert [a.status for a in answers] == [431]
    assert closed


def test_a_long_target_gets_414(server: ServerThread) -> None:
    answers, closed = ask(server, request("/public/" + "a" * 20_000))
    assert [a.status for a in answers] == [414]
    assert closed


def test_a_body_is_not_read_past_a_small_limit(server: ServerThread, idp: LocalIssuer) -> None:
    small, _ = ask(server, request("/public/x", headers={"content-length": "5"}, extra=b"") + b"hello")
    assert [a.status for a in small] == [200]  # a small body is read and ignored
    big = request("/public/x", headers={"content-length": "100000"}) + b"a" * 100_000
    with connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(big)
        answers, closed = read_answers(sock, 1)
    assert [a.status for a in answers] == [413]
    assert closed


def test_a_slow_client_gets_408_and_does_not_stall_others(server: ServerThread) -> None:
    with connect(server) as slow:
        slow.sendall(b"GET /public/x HTTP/1.1\r\nhost: api.example.com\r\n")  # never finished
        for _ in range(5):  # others are answered meanwhile
            [answer], _ = ask(server, request("/public/x"))
            assert answer.status == 200
        answers, closed = read_answers(slow, 1, timeout=4)
    assert [a.status for a in answers] == [408]
    assert closed


def test_a_client_that_never_reads_its_answers_is_aborted_and_frees_its_slot(
        idp: LocalIssuer, tmp_path: Path) -> None:
    """Pipelining big requests and reading nothing fills the answers' buffers; such a
    connection was busy forever (no timeout applied), and a few held every slot."""
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    thread = ServerThread(serving_settings(
        idp, check_http={"max_connections": 2, "header_timeout": 1.0, "idle_timeout": 2.0},
        store={"url": f"file://{tmp_path}/policies.yaml",
               "state_file": str(tmp_path / "state.json")})).start()
    try:  # allowed, with 40 spoofed headers to name: each answer is about half a request's size
        big = request("/public/x", headers={**{f"x-auth-a{i}": "v" for i in range(40)},
                                            "x-pad": "p" * 1500})
        stuck = []
        for _ in range(2):  # fill each socket's buffers both ways, never reading
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert thread.settings.check_http_listen is not None
            sock.connect(("127.0.0.1", thread.settings.check_http_listen[1]))
            sock.setblocking(False)
            stuck.append(sock)
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                try:
                    sock.send(big * 4)
                except BlockingIOError:
                    time.sleep(0.02)
                except ConnectionError:
                    break  # aborted already
        # within header_timeout of the writes stalling (plus a sweep), the slots are free again
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                answers, _ = ask(thread, request("/public/x"), timeout=1, probe=0)
                if [a.status for a in answers] == [200]:
                    break
            assert time.monotonic() - started < 5, "the stalled connections still hold every slot"
            time.sleep(0.2)
        for sock in stuck:
            sock.close()
    finally:
        thread.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(server: ServerThread) -> None:
    with connect(server) as sock:
        sock.sendall(request("/public/x"))
        answers, _ = read_answers(sock, 1)
        assert [a.status for a in answers] == [200]
        sock.settimeout(1.0)  # half the fixture's idle_timeout (2 s): still open then...
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(5)  # ...and closed by the server, not by the test giving up
        assert sock.recv(1) == b""


def test_an_http_1_0_request_is_answered_and_closed(server: ServerThread) -> None:
    answers, closed = ask(server, b"GET /public/x HTTP/1.0\r\nhost: api.example.com\r\n\r\n")
    assert [a.status for a in answers] == [200]
    assert closed
    assert answers[0].header("connection") == "close"


def test_refusals_are_audited_and_counted_as_bad_check_requests(server: ServerThread) -> None:
    assert server.engine is not None
    before = server.engine.metrics._counts.get((False, "bad_check_request"), 0)
    ask(server, b"NOT HTTP\r\n\r\n")
    time.sleep(0.1)
    assert server.engine.metrics._counts.get((False, "bad_check_request"), 0) == before + 1


TABLE = [
    ("/admin/x", {"authorization": "Bearer {admin}", "x-auth-subject": "m", "x-auth-junk": "1"}),
    ("/admin/x", {"authorization": "Bearer {dev}"}),
    ("/admin/x", {}),
    ("/admin/x", {"authorization": "Bearer not.a.token"}),
    ("/admin/x", {"authorization": "Bearer {admin}", "accept": "text/html"}),
    ("/public/x", {"cookie": "a=1; b=2"}),
    ("/public/%2e%2e/admin/x", {}),
    ("/other", {"authorization": "Bearer {admin}", "impersonate-group": "system:masters"}),
]


def test_both_transports_decide_a_table_of_requests_alike(server: ServerThread, idp: LocalIssuer) -> None:
    tokens = {"admin": idp.mint(sub="alice", groups=["admins"]),
              "dev": idp.mint(sub="bob", groups=["dev"])}
    assert server.engine is not None
    spoofable = server.engine.authorizer.spoofable_headers()
    with server.channel() as channel:
        grpc_check = channel.unary_unary(CHECK)
        for path, template in TABLE:
            headers = {k: v.format(**tokens) for k, v in template.items()}
            grpc_answer = CheckResponse.parse(grpc_check(check_request(headers, path=path),
                                                         timeout=5))
            [http_answer], _ = ask(server, request(path, headers=headers))
            if grpc_answer.ok_response is not None and grpc_answer.status.code == 0:
                ok = grpc_answer.ok_response
                assert http_answer.status == 200, path
                grpc_added = [(h.header.key, h.header.value) for h in ok.headers
                              if h.header.key != "x-auth-decision-id"]
                http_added = [(k, v) for k, v in http_answer.headers
                              if k not in ("content-length", "x-auth-decision-id",
                                           "x-envoy-auth-headers-to-remove")]
                assert http_added == grpc_added, path
                removed = set((http_answer.header("x-envoy-auth-headers-to-remove") or "").split(","))
                assert set(ok.headers_to_remove) <= removed, path  # what the request showed...
                extra = removed - set(ok.headers_to_remove)  # ...and what it may not have
                assert extra <= spoofable, path
                assert not extra & {k for k, _ in http_answer.headers}, path  # never one it sets
            else:
                denied = grpc_answer.denied_response
                assert http_answer.status == int(denied.status.code), path
                assert http_answer.body.decode() == denied.body, path
                grpc_headers = [(h.header.key, h.header.value) for h in denied.headers]
                http_headers = [(k, v) for k, v in http_answer.headers if k != "content-length"]
                assert http_headers == grpc_headers, path


def test_the_listener_refuses_connections_past_its_cap(idp: LocalIssuer, tmp_path: Path) -> None:
    thread = ServerThread(serving_settings(
        idp, check_http={"max_connections": 2},
        store={"state_file": str(tmp_path / "state.json")})).start()
    try:
        held = [connect(thread), connect(thread)]
        time.sleep(0.2)
        with connect(thread) as third:
            third.sendall(request("/"))
            answers, closed = read_answers(third, 1, timeout=2)
        assert answers == []
        assert closed
        held[0].sendall(request("/"))
        assert [a.status for a in read_answers(held[0], 1)[0]] == [401]  # the held ones still work
        for sock in held:
            sock.close()
    finally:
        thread.stop()


_TOKEN_CHARS = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_TOKEN_CHARS, host=_TOKEN_CHARS, name=_TOKEN_CHARS, value=_TOKEN_CHARS,
       junk=st.binary(max_size=64), method=st.sampled_from(["GET", "POST", "HEAD", "G ET", ""]))
def test_no_hostile_check_request_is_allowed_or_stalls_the_listener(
        server: ServerThread, path: str, host: str, name: str, value: str, junk: bytes,
        method: str) -> None:
    """Without a token nothing may be allowed outside /public/ (default_action: authenticated),
    whatever bytes arrive; and the listener answers the next request."""
    raw = (f"{method} /admin/{path} HTTP/1.1\r\nhost: {host}\r\n{name}: {value}\r\n"
           .encode("utf-8", "surrogateescape") + junk + b"\r\n\r\n")
    answers, _ = ask(server, raw, timeout=2, probe=0)
    assert all(a.status != 200 for a in answers)
    assert all(a.status in (400, 401, 403, 408, 413, 414, 431) for a in answers)
    [after], _ = ask(server, request("/public/x"), probe=0)
    assert after.status == 200


def test_a_bound_only_policy_without_a_route_header_is_warned_about_at_start(
        idp: LocalIssuer, tmp_path: Path) -> None:
    """With check_http.route_header null nothing binds a route over HTTP: say so, by name."""
    from tests.support.stack import ExtAuthz

    (tmp_path / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    config = {"issuers": [{"issuer": idp.issuer, "audiences": ["my-api"]}],
              "store": {"url": f"file://{tmp_path}/policies.yaml"}}
    service = ExtAuthz(tmp_path, config).start()
    try:
        assert service.process is not None
        assert ("bound_only policies bound never apply to checks over plain HTTP: set "
                "check_http.route_header") in service.process.output()
    finally:
        service.stop()
    bound = ExtAuthz(tmp_path, {**config, "check_http": {"route_header": "x-extauthz-policy"}}).start()
    try:
        assert bound.process is not None
        assert "never apply to checks over plain HTTP" not in bound.process.output()
    finally:
        bound.stop()
