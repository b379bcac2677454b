import pytest

from backend.auth import TOKENS, AuthError, User, require_scope, require_user


def test_require_user_accepts_bearer_token_case_insensitively():
    assert require_user({"Authorization": "Bearer alice-token"}) == TOKENS["alice-token"]
    assert require_user({"authorization": "bearer bob-token"}).username == "bob"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer nope"}],
)
def test_require_user_rejects_missing_or_bad_credentials(headers):
    with pytest.raises(AuthError) as err:
        require_user(headers)
    assert err.value.status == 401


def test_require_user_with_custom_token_table():
    carol = User(9, "carol", frozenset({"posts:read"}))
    assert require_user({"Authorization": "Bearer c"}, tokens={"c": carol}) is carol
    with pytest.raises(AuthError):
        require_user({"Authorization": "Bearer alice-token"}, tokens={"c": carol})


def test_require_scope_raises_403_with_scope():
    viewer = TOKENS["viewer-token"]
    assert require_scope(viewer, "posts:read") is viewer
    with pytest.raises(AuthError) as err:
        require_scope(viewer, "posts:write")
    assert (err.value.status, err.value.scope) == (403, "posts:write")
