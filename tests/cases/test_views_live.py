"""The live grid's endpoints: the changed cards (cases:cards) and the event stream (cases:events), under WSGI
(the test client, runserver) and ASGI (the async client, uvicorn workers)."""

import asyncio
import json
import threading
from datetime import datetime

import pytest
from django.test import AsyncClient
from django.urls import reverse

from cases import events
from cases.models import CellImage, Prediction
from tests.event_loops import run_in_own_loop
from tests.factories import CaseFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_process(settings):
    settings.EVENTS_REDIS_URL = ""
    settings.CELERY_TASK_ALWAYS_EAGER = True


def make_image(case, user, *, status=CellImage.Status.QUEUED, name="cell.png", label=None):
    image = CellImage.objects.create(
        case=case,
        storage_key=f"k/{case.pk}/{name}",
        sha256=name.ljust(64, "0")[:64],
        size_bytes=10,
        width=8,
        height=8,
        content_type="image/png",
        original_name=name,
        uploaded_by=user,
        status=status,
    )
    if label:
        Prediction.objects.create(
            image=image,
            model_version=ModelVersionFactory(),
            label=label,
            confidence=0.91234,
            probabilities={label: 0.91234},
            flagged=False,
            latency_ms=3.0,
        )
    return image


def parse_events(chunks: list[bytes]) -> list[tuple[str, dict]]:
    parsed = []
    for chunk in chunks:
        for block in chunk.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
            if "event" in lines:
                parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


def test_cards_answers_only_the_named_cells_and_the_case_status(client, technician):
    case = CaseFactory(created_by=technician)
    first = make_image(case, technician, name="a.png", status=CellImage.Status.CLASSIFIED, label="NEUTROPHIL")
    second = make_image(case, technician, name="b.png")
    client.force_login(technician)

    response = client.get(reverse("cases:cards", args=[case.pk]), {"ids": f"{first.pk}"})

    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-cell-col="{first.pk}"' in html and f'data-cell-col="{second.pk}"' not in html
    assert "NEUTROPHIL" in html
    assert 'id="case-status"' in html
    assert response["Cache-Control"] == "private, no-store"
    everything = client.get(reverse("cases:cards", args=[case.pk])).content.decode()
    assert f'data-cell-col="{first.pk}"' in everything and f'data-cell-col="{second.pk}"' in everything


def test_cards_with_malformed_ids_is_a_clear_400(client, technician):
    case = CaseFactory(created_by=technician)
    client.force_login(technician)

    response = client.get(reverse("cases:cards", args=[case.pk]), {"ids": "1,two"})

    assert response.status_code == 400
    assert "comma-separated numbers" in response.content.decode()


def test_cards_of_another_case_are_not_shown(client, technician):
    case, other = CaseFactory(created_by=technician), CaseFactory(created_by=technician)
    foreign = make_image(other, technician, name="x.png")
    client.force_login(technician)

    response = client.get(reverse("cases:cards", args=[case.pk]), {"ids": str(foreign.pk)})

    assert f'data-cell-col="{foreign.pk}"' not in response.content.decode()


def test_case_page_offers_push_only_where_it_can_reach_the_page(client, technician, settings):
    case = CaseFactory(created_by=technician)
    client.force_login(technician)
    settings.EVENTS_REDIS_URL = ""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert f'data-events-url="{reverse("cases:events", args=[case.pk])}"' in page

    settings.CELERY_TASK_ALWAYS_EAGER = False  # separate workers, no Redis
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert "data-events-url" not in page
    assert 'data-cards-url="' in page
    response = client.get(reverse("cases:events", args=[case.pk]))
    assert response.status_code == 503
    assert "poll instead" in response.json()["detail"]


def test_events_stream_under_wsgi_sends_the_changed_cells_state(client, technician, in_process):
    case = CaseFactory(created_by=technician)
    image = make_image(case, technician, status=CellImage.Status.CLASSIFIED, label="MONOCYTE")
    client.force_login(technician)

    response = client.get(reverse("cases:events", args=[case.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"].startswith("no-cache")
    stream = iter(response.streaming_content)
    first = next(stream)
    assert first.startswith(b"retry: ")
    threading.Timer(0.05, events.publish_image_updates, kwargs={"case_id": case.pk, "image_ids": [image.pk]}).start()
    second = next(stream)
    response.close()

    assert parse_events([first]) == [("ready", {"case": case.pk})]
    ((name, body),) = parse_events([second])
    assert name == "images"
    assert body["case"] == {"id": case.pk, "status": case.status, "pending": 0}
    (state,) = body["images"]
    assert state["id"] == image.pk and state["status"] == "classified" and state["status_message"] == ""
    assert state["prediction"]["label"] == "MONOCYTE"
    assert state["prediction"]["confidence"] == 0.9123
    assert set(state["prediction"]) == {
        "label",
        "confidence",
        "flagged",
        "ood_score",
        "model_version",
        "flag_reasons",
        "created_at",
    }
    assert set(state) == {"id", "status", "status_message", "prediction", "uploaded_at", "kind", "parent", "cell_count"}
    assert events._local_hub.subscriber_count(events.channel_name(case.pk)) == 0  # closed with the response


def test_events_stream_coalesces_quick_messages_and_keeps_alive(client, technician, in_process, monkeypatch):
    from cases import views_live

    monkeypatch.setattr(views_live, "KEEPALIVE_SECONDS", 0.05)
    # No coalescing window (the default): messages already waiting when the stream wakes still go together.
    assert views_live.COALESCE_SECONDS == 0.0
    case = CaseFactory(created_by=technician)
    first, second = make_image(case, technician, name="a.png"), make_image(case, technician, name="b.png")
    client.force_login(technician)
    response = client.get(reverse("cases:events", args=[case.pk]))
    stream = iter(response.streaming_content)
    next(stream)

    assert next(stream) == b": keepalive\n\n"
    events.publish_image_updates(case_id=case.pk, image_ids=[first.pk])
    events.publish_image_updates(case_id=case.pk, image_ids=[second.pk])
    ((name, body),) = parse_events([next(stream)])
    response.close()

    assert name == "images"
    assert [state["id"] for state in body["images"]] == [first.pk, second.pk]
    assert body["case"]["pending"] == 2
    assert all(state["prediction"] is None for state in body["images"])


def test_events_say_the_case_is_escalated_only_when_a_message_did(client, technician, in_process, monkeypatch):
    from django.utils import translation

    from cases import selectors

    case = CaseFactory(created_by=technician)
    first, second = make_image(case, technician, name="a.png"), make_image(case, technician, name="b.png")
    client.force_login(technician)
    response = client.get(reverse("cases:events", args=[case.pk]), HTTP_ACCEPT_LANGUAGE="es")
    stream = iter(response.streaming_content)
    next(stream)

    events.publish_image_updates(case_id=case.pk, image_ids=[first.pk])
    ((_, plain),) = parse_events([next(stream)])
    # Coalesced with a message that does not say it: the event still does.
    events.publish_image_updates(case_id=case.pk, image_ids=[first.pk], model_warning=True)
    events.publish_image_updates(case_id=case.pk, image_ids=[second.pk])
    ((_, escalated),) = parse_events([next(stream)])
    response.close()

    assert "model_warning" not in plain["case"]
    with translation.override("es"):
        spanish = str(selectors.NOT_VALIDATED_MESSAGE)
    assert spanish != "This model is not validated for images like these."
    assert escalated["case"]["model_warning"] == spanish  # in the page's language
    assert [state["id"] for state in escalated["images"]] == [first.pk, second.pk]


@pytest.mark.django_db(transaction=True)
def test_events_stream_under_asgi_is_an_async_stream(technician, in_process):
    case = CaseFactory(created_by=technician)
    image = make_image(case, technician, status=CellImage.Status.CLASSIFIED, label="BASOPHIL")

    async def scenario():
        client = AsyncClient()
        await client.aforce_login(technician)
        response = await client.get(reverse("cases:events", args=[case.pk]))
        assert response.status_code == 200
        stream = aiter(response.streaming_content)
        first = await anext(stream)
        await asyncio.to_thread(events.publish_image_updates, case_id=case.pk, image_ids=[image.pk])
        second = await asyncio.wait_for(anext(stream), timeout=10)
        await stream.aclose()
        return first, second

    first, second = run_in_own_loop(scenario())

    assert parse_events([first]) == [("ready", {"case": case.pk})]
    ((name, body),) = parse_events([second])
    assert name == "images" and body["images"][0]["prediction"]["label"] == "BASOPHIL"
    stored = Prediction.objects.get(image=image)
    assert datetime.fromisoformat(body["images"][0]["prediction"]["created_at"]) == stored.created_at
    assert datetime.fromisoformat(body["images"][0]["uploaded_at"]) == image.uploaded_at


def test_events_need_view_cases(client, make_user, in_process):
    from accounts.roles import Role

    case = CaseFactory()
    client.force_login(make_user(Role.RESEARCHER))

    assert client.get(reverse("cases:events", args=[case.pk])).status_code == 403
    assert client.get(reverse("cases:cards", args=[case.pk])).status_code == 403


def test_api_clients_stream_with_their_token(client, technician, in_process):
    from accounts.services import create_api_token

    case = CaseFactory(created_by=technician)
    _, key = create_api_token(user=technician, second_factor=False)

    response = client.get(reverse("cases:events", args=[case.pk]), headers={"authorization": f"Token {key}"})
    assert response.status_code == 200
    assert next(iter(response.streaming_content)).startswith(b"retry: ")
    wrong = client.get(reverse("cases:events", args=[case.pk]), headers={"authorization": "Token not-a-token"})
    assert wrong.status_code == 401, wrong.content[:2000]
    anonymous = client.get(reverse("cases:events", args=[case.pk]))
    assert anonymous.status_code == 302
