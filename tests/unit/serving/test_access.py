"""Who may call the service: keys decided from the host at start-up (fail closed off loopback),
and the guard applying them to a real ASGI app."""

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from features.errors import UserInputError
from features.settings import Settings
from serving.access import accepted_keys
from serving.guard import RequestGuard

OLD_KEY = "old-key-0123456789abcdef"
NEW_KEY = "new-key-0123456789abcdef"


def test_loopback_without_keys_runs_open():
    assert accepted_keys(Settings(host="127.0.0.1")) == []
    assert accepted_keys(Settings(host="::1")) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_any_other_host_refuses_to_start_without_a_key(host):
    with pytest.raises(UserInputError) as refused:
        accepted_keys(Settings(host=host))
    assert str(refused.value).startswith(f"refusing to serve on {host} without an API key")
    assert "\n" not in str(refused.value)


def test_several_keys_are_accepted_and_the_older_single_key_still_counts():
    settings = Settings(host="0.0.0.0", api_keys=f" {OLD_KEY}, {NEW_KEY},", api_key=OLD_KEY)
    assert accepted_keys(settings) == [OLD_KEY.encode(), NEW_KEY.encode()]
    assert accepted_keys(Settings(host="0.0.0.0", api_key=NEW_KEY)) == [NEW_KEY.encode()]


def test_a_short_key_is_refused_without_showing_it():
    with pytest.raises(UserInputError) as refused:
        accepted_keys(Settings(api_keys=f"{NEW_KEY},short-secret"))
    message = str(refused.value)
    assert "API key 2" in message and "12 characters" in message
    assert "short-secret" not in message and NEW_KEY not in message


def guarded(keys: list[str], open_docs: bool = False) -> TestClient:
    answer = Route("/{path:path}", lambda request: PlainTextResponse("ok"), methods=["GET", "POST"])
    app = RequestGuard(
        Starlette(routes=[answer]), keys=[k.encode() for k in keys], open_docs=open_docs
    )
    return TestClient(app)


def test_any_configured_key_opens_the_api_and_probes_need_none():
    client = guarded([OLD_KEY, NEW_KEY])
    assert client.post("/recommend", json={}).status_code == 401
    assert client.post("/recommend", json={}, headers={"X-API-Key": "x" * 24}).status_code == 401
    for key in (OLD_KEY, NEW_KEY):  # rotation: the old and the new key both work
        assert client.post("/recommend", json={}, headers={"X-API-Key": key}).status_code == 200
    for probe in ("/livez", "/readyz", "/healthz"):
        assert client.get(probe).status_code == 200, probe


@pytest.mark.parametrize("path", ["/", "/docs", "/docs.json", "/metrics", "/static_content/x.js"])
def test_docs_and_metrics_are_behind_the_key_unless_opened(path):
    assert guarded([NEW_KEY]).get(path).status_code == 401
    assert guarded([NEW_KEY]).get(path, headers={"X-API-Key": NEW_KEY}).status_code == 200
    assert guarded([NEW_KEY], open_docs=True).get(path).status_code == 200


def test_without_keys_everything_answers():
    client = guarded([])
    assert client.post("/recommend", json={}).status_code == 200
    assert client.get("/docs.json").status_code == 200
