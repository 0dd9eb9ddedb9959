"""The fault server, seen over plain HTTP: every mode, the control port, the counts."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from resilience_tasks.quota.provider import openai_quota, parse_retry_after
from resilience_tasks.testing import wait_until
from resilience_tasks.testing.fault_server import Fault, FaultServer, picked

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer("primary") as fault_server:
        yield fault_server


@pytest.fixture
def target(server: FaultServer) -> FaultServer:
    """The module's server, healthy and with zero counts."""
    server.set("healthy")
    server.reset()
    return server


def chat_request(text: str) -> bytes:
    return json.dumps({"model": "any", "messages": [{"role": "user", "content": text}]}).encode()


def chat(
    target: FaultServer, text: str = "hello there"
) -> tuple[int, http.client.HTTPMessage, Any]:
    connection = http.client.HTTPConnection(target.host, target.port, timeout=60)
    try:
        connection.request("POST", "/v1/chat/completions", chat_request(text))
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        connection.close()


def raw_chat(target: FaultServer, text: str = "held") -> socket.socket:
    """A chat request sent on a socket of its own, its answer left unread."""
    body = chat_request(text)
    sock = socket.create_connection((target.host, target.port), timeout=60)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {target.host}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return data


def test_healthy_answers_like_openai_with_quota_headers(target: FaultServer) -> None:
    status, headers, body = chat(target, "hello there")
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "primary: hello there",
        "refusal": None,
    }
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    quota = openai_quota(dict(headers))
    assert quota["limit_requests"] == 10_000 and quota["remaining_requests"] < 10_000
    assert quota["limit_tokens"] == 1_000_000 and 0 < quota["reset_tokens"] <= 60
    assert target.stats().endpoints == {"chat": 1}
    assert target.stats().outcomes == {"ok": 1}


def test_models_and_unknown_urls(target: FaultServer) -> None:
    connection = http.client.HTTPConnection(target.host, target.port, timeout=60)
    connection.request("GET", "/v1/models")
    models = json.loads(connection.getresponse().read())
    assert [model["id"] for model in models["data"]] == ["fault-chat"]
    connection.request("GET", "/v1/nothing")
    response = connection.getresponse()
    assert response.status == 404 and json.loads(response.read())["error"]["code"] == "unknown_url"
    connection.close()
    assert target.stats().endpoints == {"models": 1, "other": 1}


def test_errors_at_a_rate_spread_evenly(target: FaultServer) -> None:
    target.set("errors", rate=0.5, status=503)
    statuses = [chat(target)[0] for _ in range(4)]
    assert statuses == [200, 503, 200, 503]
    status, _, body = chat(target)
    assert body["choices"][0]["message"]["content"] == "primary: hello there"
    target.set("errors")
    status, _, body = chat(target)
    assert status == 500 and body["error"]["type"] == "server_error"
    assert target.stats().outcomes == {"ok": 3, "error": 3}


def test_rate_limited_answers_429_with_retry_after(target: FaultServer) -> None:
    target.set("rate_limited", retry_after=2.5)
    status, headers, body = chat(target)
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert parse_retry_after(dict(headers)) == 2.5
    assert openai_quota(dict(headers))["remaining_requests"] == 0
    assert target.stats().outcomes == {"rate_limited": 1}


def test_latency_and_slow_tail_delay_the_chosen_calls(target: FaultServer) -> None:
    target.set("latency", delay=0.05)
    assert chat(target)[0] == 200
    target.set("slow_tail", fraction=0.25, delay=0.05)
    assert [chat(target)[0] for _ in range(8)] == [200] * 8
    assert target.stats().outcomes == {"delayed": 3, "ok": 6}
    assert [picked(0.1, index) for index in range(20)].count(True) == 2
    assert [index for index in range(30) if picked(0.1, index)] == [9, 19, 29]


def test_many_hanging_requests_hold_without_blocking_anything(target: FaultServer) -> None:
    target.set("hang")
    held = [raw_chat(target) for _ in range(40)]
    try:
        assert wait_until(lambda: target.stats().held == 40, 60)
        with FaultServer("other") as other:  # another target is not slowed
            assert chat(other)[0] == 200
        assert target.stats().mode == "hang"  # the control port answers throughout
    finally:
        for sock in held:
            sock.close()
    # clients that give up are let go and break nothing
    assert wait_until(lambda: target.stats().held == 0, 60)
    target.set("healthy")
    assert chat(target)[0] == 200
    assert target.stats().outcomes == {"hung": 40, "ok": 1}


def test_a_held_request_is_served_when_the_mode_changes(target: FaultServer) -> None:
    target.set("hang")
    sock = raw_chat(target, "patience")
    assert wait_until(lambda: target.stats().held == 1, 60)
    target.set("healthy")
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"primary: patience" in answer


def test_down_refuses_and_resets_then_comes_back_on_the_same_port(target: FaultServer) -> None:
    kept = http.client.HTTPConnection(target.host, target.port, timeout=60)
    kept.request("POST", "/v1/chat/completions", chat_request("first"))
    assert kept.getresponse().read()
    target.set("hang")
    sock = raw_chat(target)
    assert wait_until(lambda: target.stats().held == 1, 60)
    target.set("down")
    with contextlib.suppress(ConnectionResetError):  # the held request's connection is reset
        assert sock.recv(100) == b""
    sock.close()
    with pytest.raises((OSError, http.client.HTTPException)):  # the kept-alive one too
        kept.request("POST", "/v1/chat/completions", chat_request("second"))
        kept.getresponse().read()
    kept.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((target.host, target.port), timeout=60)
    assert target.stats().requests == 2 and target.stats().mode == "down"
    target.set("healthy")
    assert chat(target, "back")[2]["choices"][0]["message"]["content"] == "primary: back"


def test_counts_reset_and_a_restart_keeps_the_address() -> None:
    with FaultServer("restarted", mode="errors", rate=1.0) as target:
        assert chat(target)[0] == 500
        assert target.stats().requests == 1
        target.reset()
        assert target.stats().requests == 0
        url = target.openai_base_url
        target.kill()
        assert not target.alive
        target.start()
        assert target.openai_base_url == url
        assert chat(target)[0] == 500  # it starts again in its last mode


def test_control_rejects_bad_modes(target: FaultServer) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        target.set("sideways")
    with pytest.raises(ValueError, match="takes delay"):
        target.set("latency", seconds=1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Fault.of("errors", rate=1.5)
    with pytest.raises(ValueError, match="5xx"):
        Fault.of("errors", status=404)
    # the server checks too, whoever asks
    connection = http.client.HTTPConnection(target.host, target.control_port, timeout=60)
    connection.request("POST", "/mode", json.dumps({"mode": "hang", "delay": 1}))
    response = connection.getresponse()
    assert response.status == 400 and b"takes no parameters" in response.read()
    connection.close()
    assert target.stats().mode == "healthy"


def test_the_command_line_rejects_bad_parameters() -> None:
    argv = [sys.executable, "-m", "resilience_tasks.testing.fault_server", "--mode", "errors"]
    done = subprocess.run(
        [*argv, "--param", "rate=2"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "errors.rate must be between 0 and 1" in done.stderr
