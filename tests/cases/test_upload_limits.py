"""Upload limits: nothing spooled to disk in clear, decoded bytes budgeted, batch limits answered per file."""

import struct
import time
import tracemalloc
import zlib

import pytest
from django.http import HttpResponse
from django.urls import reverse

from cases.models import CellImage
from cases.validation import ImageRejected, validate_image
from tests.api.conftest import token_client
from tests.cases.images import noisy_png, rgb_png, upload
from tests.factories import CaseFactory


def png_16_bit_rgb(width: int, height: int) -> bytes:
    """A real 16-bit RGB PNG of black pixels: tiny on disk, width*height*6 bytes once decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * 6)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def multipart(parts: list[tuple[str, bytes]], boundary: str = "hvboundary") -> bytes:
    """A multipart body built by hand: test clients shorten file names to 255 characters, browsers do not."""
    body = b""
    for name, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician)


@pytest.fixture
def api(technician):
    return token_client(technician)


def test_a_small_16_bit_6000x6000_png_is_refused_before_it_is_decoded(settings):
    data = png_16_bit_rgb(6000, 6000)
    assert len(data) < 400_000  # the file: about 280 KB

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageRejected, match="decoded"):
            validate_image(upload("bomb.png", data))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 50 * 1024 * 1024


def test_the_budget_counts_bytes_not_pixels(settings):
    settings.MAX_DECODED_BYTES = 600 * 600 * 3  # one 8-bit RGB picture of 600 x 600

    assert validate_image(upload("eight-bit.png", rgb_png(size=(600, 600)))).width == 600
    with pytest.raises(ImageRejected, match="decoded"):
        validate_image(upload("sixteen-bit.png", png_16_bit_rgb(600, 600)))


def test_a_reasonable_16_bit_png_is_still_accepted():
    assert validate_image(upload("cell16.png", png_16_bit_rgb(400, 300))).width == 400


def test_an_upload_over_5_mb_never_touches_the_disk_in_clear(api, case, monkeypatch):
    import django.core.files.uploadedfile as uploadedfile

    def no_temporary_files(*args, **kwargs):
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(uploadedfile.tempfile, "NamedTemporaryFile", no_temporary_files)
    big = noisy_png(size=(1500, 1400))
    assert len(big) > 5 * 1024 * 1024

    response = api.post(reverse("api-case-images", args=[case.pk]), {"files": [upload("big.png", big)]})

    assert response.status_code == 201, response.content
    assert CellImage.objects.get(case=case).size_bytes == len(big)


def test_a_request_over_the_hard_limit_is_a_413_in_json(api, case, settings):
    settings.MAX_UPLOAD_REQUEST_BYTES = 1024 * 1024
    files = [upload(f"n{n}.png", noisy_png(size=(300, 300), seed=n)) for n in range(6)]

    response = api.post(reverse("api-case-images", args=[case.pk]), {"files": files})

    assert response.status_code == 413
    assert response["Content-Type"].startswith("application/json")
    assert "1.0 MB" in response.json()["detail"]
    assert not CellImage.objects.exists()


def test_the_page_upload_over_the_hard_limit_says_so(client, technician, case, settings):
    settings.MAX_UPLOAD_REQUEST_BYTES = 1024 * 1024
    client.force_login(technician)
    files = [upload(f"n{n}.png", noisy_png(size=(300, 300), seed=n)) for n in range(6)]

    response = client.post(reverse("cases:upload", args=[case.pk]), {"files": files}, HTTP_ACCEPT="application/json")

    assert response.status_code == 413
    assert "1.0 MB" in response.json()["detail"]


def test_files_beyond_the_per_request_limit_are_rejected_one_by_one_and_the_rest_kept(api, case, settings):
    settings.MAX_UPLOAD_FILES = 3
    files = [upload(f"c{n}.png", rgb_png(colour=(n, 2 * n, 3 * n))) for n in range(5)]

    response = api.post(reverse("api-case-images", args=[case.pk]), {"files": files})

    assert response.status_code == 201
    body = response.json()
    assert [item["original_name"] for item in body["accepted"]] == ["c0.png", "c1.png", "c2.png"]
    assert [item["name"] for item in body["rejected"]] == ["c3.png", "c4.png"]
    assert all("more than 3 files" in item["message"] for item in body["rejected"])


def test_two_thousand_files_answer_json_per_file(api, case):
    files = [upload(f"same-{n}.png", rgb_png()) for n in range(2000)]

    response = api.post(reverse("api-case-images", args=[case.pk]), {"files": files})

    assert response.status_code == 201
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert len(body["accepted"]) == 1
    assert len(body["rejected"]) == 1999
    assert sum("more than 500 files" in item["message"] for item in body["rejected"]) == 1500


def test_a_1100_character_file_name_does_not_drop_the_batch(api, case):
    long_name = "a" * 1100 + ".png"
    body = multipart([(long_name, rgb_png(colour=(1, 1, 1))), ("good.png", rgb_png(colour=(2, 2, 2)))])

    response = api.generic(
        "POST",
        reverse("api-case-images", args=[case.pk]),
        body,
        content_type="multipart/form-data; boundary=hvboundary",
    )

    assert response.status_code == 201, response.content
    names = sorted(item["original_name"] for item in response.json()["accepted"])
    assert names == ["a" * 251 + ".png", "good.png"] or names == ["a" * 255, "good.png"]


def test_a_1100_character_file_name_on_the_page_answers_json(client, technician, case):
    client.force_login(technician)
    body = multipart([("b" * 1100 + ".png", rgb_png(colour=(3, 3, 3))), ("good.png", rgb_png(colour=(4, 4, 4)))])

    response = client.generic(
        "POST",
        reverse("cases:upload", args=[case.pk]),
        body,
        content_type="multipart/form-data; boundary=hvboundary",
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 201, response.content
    assert len(response.json()["accepted"]) == 2


def test_an_unparseable_multipart_body_is_a_clear_400_in_json(api, case):
    response = api.generic(
        "POST",
        reverse("api-case-images", args=[case.pk]),
        b'--hvboundary\r\nContent-Disposition: form-data; name="files"; filename="' + b"x" * 20000,
        content_type="multipart/form-data; boundary=hvboundary",
    )

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


def test_a_model_file_upload_keeps_its_own_limit_and_is_not_cut_to_the_image_limit(rf, settings):
    """Model files (admins importing a Keras model, up to 1 GB) are not patient images: the image limits do
    not apply to them, and their bytes arrive whole."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from hematovision.uploads import UploadLimitsMiddleware

    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    settings.MAX_UPLOAD_REQUEST_BYTES = 2 * 1024 * 1024
    payload = b"k" * (3 * 1024 * 1024)
    seen = {}

    def view(request):
        seen["bytes"] = request.FILES["file"].read()
        return HttpResponse("ok")

    for url in (reverse("inference:import"), reverse("api-model-versions")):
        request = rf.post(url, {"file": SimpleUploadedFile("model.keras", payload), "name": "m"})
        response = UploadLimitsMiddleware(view)(request)
        assert response.status_code == 200, (url, response.content)
        assert seen.pop("bytes") == payload


def test_an_image_upload_still_has_the_image_limits(rf, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from hematovision.uploads import UploadLimitsMiddleware

    settings.MAX_UPLOAD_REQUEST_BYTES = 2 * 1024 * 1024
    big = SimpleUploadedFile("big.png", b"p" * (3 * 1024 * 1024))

    request = rf.post(reverse("api-case-images", args=[1]), {"files": big})
    response = UploadLimitsMiddleware(lambda request: HttpResponse("ok"))(request)

    assert response.status_code == 413
