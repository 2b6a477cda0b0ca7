"""Push through the documented production server (gunicorn -c gunicorn.conf.py: uvicorn workers, the ASGI
application): a case page's event stream answers at once and carries the prediction of an upload.

Uses tests/test_production_server.py's server (SQLite in a temporary folder, tasks in-process, so the
in-process channel carries the events; Redis pub/sub is covered by tests/cases/test_events.py).
"""

import json
import queue
import re
import threading
import time

import requests

from tests.test_production_server import EMAIL, PASSWORD, production  # noqa: F401 - the server fixture


def sign_in(server) -> None:
    server.request("GET", "/accounts/login/")
    response = server.request(
        "POST",
        "/accounts/login/",
        data={"login": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": server.cookies["csrftoken"]},
    )
    assert response.status_code == 302, response.text[:2000]


def read_events(server, path: str, into: queue.Queue, stop: threading.Event) -> None:
    with requests.get(
        server.base_url + path, headers=server.headers, cookies=server.cookies, stream=True, timeout=(10, 90)
    ) as response:
        into.put(("status", response.status_code, response.headers.get("Content-Type", "")))
        buffer = ""
        for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
                if "event" in fields:
                    into.put((fields["event"], json.loads(fields["data"]), time.monotonic()))
            if stop.is_set():
                return


def next_event(events: queue.Queue, name: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if item[0] == name:
            return item
    raise AssertionError(f"no {name!r} event within {timeout:.0f} s")


def test_the_production_server_pushes_the_prediction_of_an_upload(production, pbc_dir):  # noqa: F811
    sign_in(production)
    created = production.request(
        "POST",
        "/cases/new/",
        data={
            "accession_id": "PUSH-1",
            "patient_reference": "",
            "csrfmiddlewaretoken": production.cookies["csrftoken"],
        },
    )
    assert created.status_code == 302, created.text[:2000]
    case_path = created.headers["Location"]
    case_id = int(re.search(r"/cases/(\d+)/", case_path).group(1))
    page = production.request("GET", case_path)
    assert f'data-events-url="/cases/{case_id}/events/"' in page.text

    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=read_events, args=(production, f"/cases/{case_id}/events/", events, stop))
    reader.daemon = True
    reader.start()
    try:
        assert next_event(events, "status", 30)[1:] == (200, "text/event-stream")
        assert next_event(events, "ready", 30)[1] == {"case": case_id}

        image = sorted((pbc_dir / "test" / "NEUTROPHIL").glob("*.jpg"))[0]
        uploaded = requests.post(
            f"{production.base_url}/cases/{case_id}/images/",
            files=[("files", (image.name, image.read_bytes(), "image/jpeg"))],
            headers={
                **production.headers,
                "Accept": "application/json",
                "X-CSRFToken": production.cookies["csrftoken"],
            },
            cookies=production.cookies,
            timeout=120,
        )
        assert uploaded.status_code == 201, uploaded.text[:2000]
        (accepted,) = uploaded.json()["accepted"]

        deadline = time.monotonic() + 90
        while True:
            _, body, _ = next_event(events, "images", max(1.0, deadline - time.monotonic()))
            states = {state["id"]: state for state in body["images"]}
            if states.get(accepted["id"], {}).get("status") in {"classified", "failed"}:
                break
        state = states[accepted["id"]]
        assert state["status"] == "classified", state
        assert state["prediction"]["label"]
        assert body["case"]["id"] == case_id
    finally:
        stop.set()
