import json

from backend.app import ROUTES, App, handle
from tests.conftest import ALICE


def test_route_table_lists_post_endpoints():
    assert set(ROUTES) >= {
        ("POST", "/api/v1/posts"),
        ("GET", "/api/v1/posts"),
        ("GET", "/api/v1/posts/{post_id}"),
    }


def test_create_then_fetch_through_app(app):
    payload = json.dumps({"title": "Hi", "content": "Hello", "platform": "facebook"})
    status, created = app.handle("POST", "/api/v1/posts", ALICE, payload)
    assert status == 201
    status, fetched = app.handle("GET", f"/api/v1/posts/{created['id']}/", ALICE)
    assert status == 200 and fetched == created
    status, listed = app.handle("GET", "/api/v1/posts?mine=true", ALICE)
    assert listed["count"] == 1


def test_unknown_route_wrong_method_and_bad_json(app):
    assert app.handle("GET", "/api/v1/nothing", ALICE)[0] == 404
    status, body = app.handle("DELETE", "/api/v1/posts/1", ALICE)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    status, body = app.handle("POST", "/api/v1/posts", ALICE, "{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"


def test_unexpected_exception_becomes_500(service):
    def broken(body, request):
        raise RuntimeError("boom")

    status, body = App(service, routes={("GET", "/x"): broken}).handle("GET", "/x")
    assert status == 500 and body["error"] == {"code": "internal_error", "message": "RuntimeError"}


def test_module_level_handle_uses_default_app():
    status, body = handle("GET", "/api/v1/posts", {})
    assert status == 401
