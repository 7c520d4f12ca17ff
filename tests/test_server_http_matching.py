"""The plain-HTTP replay matches as vcrpy does: method, path, query (and body among equals), each recording once."""

from __future__ import annotations

import json
from typing import Any

import httpx

from replay.cassettes.cassette import Cassette
from replay.net.server import ReplayServer

SECRETS = "https://api.openai.com/v1/realtime/client_secrets"


def recorded(body: dict[str, Any] | str, value: str, uri: str = SECRETS, method: str = "POST") -> dict[str, Any]:
    return {"request": {"body": body if isinstance(body, str) else json.dumps(body),
                        "headers": {"Content-Type": ["application/json"]}, "method": method, "uri": uri},
            "response": {"status": {"code": 200, "message": "OK"}, "headers": {"Content-Type": ["application/json"]},
                         "body": {"string": json.dumps({"value": value})}}}


def secrets_cassette() -> Cassette:
    return Cassette({"origin": "synthesized"}, [
        recorded({"session": {"type": "realtime", "model": "gpt-realtime"}}, "ek_first"),
        recorded({"session": {"type": "transcription"}}, "ek_second"),
    ])


async def test_two_recorded_posts_with_different_bodies_replay_in_order() -> None:
    async with ReplayServer(secrets_cassette()) as server, httpx.AsyncClient() as http:
        url = f"{server.http_base_url}/realtime/client_secrets"
        first = await http.post(url, json={"session": {"type": "realtime"}})
        second = await http.post(url, json={"session": {"type": "realtime"}})
        third = await http.post(url, json={"session": {"type": "realtime"}})
    assert (first.status_code, first.json()["value"]) == (200, "ek_first")
    assert (second.status_code, second.json()["value"]) == (200, "ek_second")
    assert third.status_code == 404
    error = third.json()["error"]
    assert error["code"] == "unknown_url"
    assert "POST /v1/realtime/client_secrets" in error["message"] and "all been played" in error["message"]


async def test_a_body_that_matches_a_later_recording_plays_that_one_first() -> None:
    async with ReplayServer(secrets_cassette()) as server, httpx.AsyncClient() as http:
        url = f"{server.http_base_url}/realtime/client_secrets"
        # JSON is compared as JSON (vcrpy's body matcher): spacing and key order do not matter.
        by_body = await http.post(url, content=b'{ "session" : {"type":"transcription"} }',
                                  headers={"content-type": "application/json"})
        then = await http.post(url, json={})
    assert by_body.json()["value"] == "ek_second"
    assert then.json()["value"] == "ek_first"


async def test_the_query_is_matched_and_an_unmatched_request_is_named() -> None:
    cassette = Cassette({"origin": "synthesized"}, [
        recorded("", "one", uri="https://api.openai.com/v1/models?limit=1", method="GET"),
        recorded("", "two", uri="https://api.openai.com/v1/models?limit=2", method="GET"),
    ])
    async with ReplayServer(cassette) as server, httpx.AsyncClient() as http:
        two = await http.get(f"{server.http_base_url}/models?limit=2")
        other = await http.get(f"{server.http_base_url}/models?limit=3")
        wrong_method = await http.post(f"{server.http_base_url}/models?limit=1")
    assert two.json()["value"] == "two"
    assert other.status_code == 404 and "GET /v1/models?limit=3" in other.json()["error"]["message"]
    assert wrong_method.status_code == 404 and "POST /v1/models?limit=1" in wrong_method.json()["error"]["message"]


async def test_a_body_nested_past_the_recursion_limit_is_no_match_not_a_crash() -> None:
    async with ReplayServer(secrets_cassette()) as server, httpx.AsyncClient() as http:
        deep = b"[" * 200_000 + b"]" * 200_000
        answer = await http.post(f"{server.http_base_url}/realtime/client_secrets", content=deep,
                                 headers={"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["value"] == "ek_first"
