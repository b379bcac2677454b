import pytest

from backend.schemas.errors import ValidationError
from backend.services.post_service import PostNotFoundError
from tests.conftest import NOW


def test_create_assigns_ids_author_and_clock(service, make_post):
    first, second = make_post(author_id=1), make_post(author_id=2)
    assert (first.id, second.id) == (1, 2)
    assert first.author_id == 1 and first.status == "draft" and first.created_at == NOW
    assert service.get(2) == second


def test_get_unknown_post_raises_not_found(service):
    with pytest.raises(PostNotFoundError) as err:
        service.get(99)
    assert err.value.post_id == 99


def test_list_filters_by_author_and_status(service, make_post):
    make_post(author_id=1)
    make_post(author_id=2)
    published = service.update_status(make_post(author_id=1).id, "published")
    assert [p.id for p in service.list()] == [1, 2, 3]
    assert [p.id for p in service.list(author_id=1)] == [1, 3]
    assert service.list(status="published") == [published]
    with pytest.raises(ValidationError):
        service.list(status="archived")


def test_update_status_rejects_unknown_and_manual_scheduling(service, make_post):
    post = make_post()
    with pytest.raises(ValidationError):
        service.update_status(post.id, "archived")
    with pytest.raises(ValidationError) as err:
        service.update_status(post.id, "scheduled")
    assert err.value.field == "status"


def test_schedule_sets_time_platform_and_status(service, make_post, later):
    post = make_post(platform="twitter")
    scheduled = service.schedule(post.id, later(2), "linkedin")
    assert (scheduled.status, scheduled.platform, scheduled.scheduled_at) == ("scheduled", "linkedin", later(2))
    assert service.get(post.id) == scheduled


def test_unschedule_by_moving_back_to_draft(service, make_post, later):
    post = service.schedule(make_post().id, later(), "twitter")
    draft = service.update_status(post.id, "draft")
    assert draft.status == "draft" and draft.scheduled_at is None


@pytest.mark.parametrize("hours", [0, -1])
def test_schedule_rejects_now_and_past(service, make_post, later, hours):
    post = make_post()
    with pytest.raises(ValidationError) as err:
        service.schedule(post.id, later(hours), "twitter")
    assert err.value.field == "scheduled_at"
    assert service.get(post.id).status == "draft"


def test_schedule_rejects_naive_time_bad_platform_and_published_post(service, make_post, later):
    post = make_post()
    with pytest.raises(ValidationError):
        service.schedule(post.id, later().replace(tzinfo=None), "twitter")
    with pytest.raises(ValidationError) as err:
        service.schedule(post.id, later(), "myspace")
    assert err.value.field == "platform"
    service.update_status(post.id, "published")
    with pytest.raises(ValidationError) as err:
        service.schedule(post.id, later(), "twitter")
    assert err.value.field == "status"


def test_schedule_unknown_post(service, later):
    with pytest.raises(PostNotFoundError):
        service.schedule(42, later(), "twitter")
