from backend.routers.posts import create_post, get_post, list_posts
from tests.conftest import ALICE, BOB, VIEWER

BODY = {"title": "Launch", "content": "Big news", "platform": "twitter"}


def test_create_post_returns_201_owned_by_caller(make_request):
    status, body = create_post(BODY, make_request(BOB))
    assert status == 201
    assert body["id"] == 1 and body["author_id"] == 2 and body["status"] == "draft"


def test_create_post_requires_token_and_write_scope(make_request):
    status, body = create_post(BODY, make_request({}))
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = create_post(BODY, make_request({"Authorization": "Bearer nope"}))
    assert status == 401
    status, body = create_post(BODY, make_request(VIEWER))
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_create_post_validation_error_is_400(make_request):
    status, body = create_post({**BODY, "platform": "myspace"}, make_request(ALICE))
    assert status == 400
    assert body["error"] == {
        "code": "validation_error",
        "message": "must be one of twitter, linkedin, facebook, instagram",
        "field": "platform",
    }


def test_get_post_found_missing_and_malformed(make_request, make_post):
    post = make_post()
    status, body = get_post(None, make_request(VIEWER, {"post_id": str(post.id)}))
    assert status == 200 and body == post.to_dict()
    status, body = get_post(None, make_request(VIEWER, {"post_id": "99"}))
    assert status == 404 and body["error"]["post_id"] == 99
    status, body = get_post(None, make_request(VIEWER, {"post_id": "abc"}))
    assert status == 400 and body["error"]["field"] == "post_id"


def test_list_posts_supports_mine_and_status_filters(make_request, make_post, service):
    make_post(author_id=1)
    make_post(author_id=2)
    service.update_status(make_post(author_id=1).id, "published")
    status, body = list_posts(None, make_request(ALICE))
    assert status == 200 and body["count"] == 3
    status, body = list_posts(None, make_request(ALICE, query={"mine": "true", "status": "draft"}))
    assert [item["id"] for item in body["items"]] == [1]
    status, body = list_posts(None, make_request(ALICE, query={"status": "bogus"}))
    assert status == 400
