import base64
import logging

import pytest
from django.test import override_settings

from cases import storage

OTHER_KEY = base64.b64encode(b"k" * 32).decode()


def test_round_trip_returns_the_original_bytes():
    key = storage.save(b"cell image bytes")

    assert storage.load(key) == b"cell image bytes"


def test_file_on_disk_is_encrypted_and_randomly_named(settings):
    key = storage.save(b"PLAINTEXT-MARKER" * 4)

    path = settings.PRIVATE_MEDIA_ROOT / key
    assert b"PLAINTEXT-MARKER" not in path.read_bytes()
    assert path.read_bytes().startswith(storage.MAGIC)
    assert storage.STORAGE_KEY_PATTERN.fullmatch(key)


def test_each_file_gets_its_own_nonce():
    first = storage.encrypt(b"same")
    second = storage.encrypt(b"same")

    assert first != second


def test_tampered_file_fails_the_integrity_check(settings):
    key = storage.save(b"cell image bytes")
    path = settings.PRIVATE_MEDIA_ROOT / key
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))

    with pytest.raises(storage.StoredImageCorrupt, match="integrity check"):
        storage.load(key)


def test_file_encrypted_with_an_unknown_key_is_refused_clearly():
    with override_settings(IMAGE_ENCRYPTION_KEYS=[OTHER_KEY]):
        key = storage.save(b"cell image bytes")

    with pytest.raises(storage.StoredImageCorrupt, match="not among IMAGE_ENCRYPTION_KEYS"):
        storage.load(key)


def test_rotated_keys_still_decrypt_files_of_the_old_key(settings):
    old_key = settings.IMAGE_ENCRYPTION_KEYS[0]
    key = storage.save(b"written with the old key")

    with override_settings(IMAGE_ENCRYPTION_KEYS=[OTHER_KEY, old_key]):
        assert storage.load(key) == b"written with the old key"


def test_the_first_key_encrypts(settings):
    old_key = settings.IMAGE_ENCRYPTION_KEYS[0]
    with override_settings(IMAGE_ENCRYPTION_KEYS=[OTHER_KEY, old_key]):
        key = storage.save(b"written with the new key")

    with override_settings(IMAGE_ENCRYPTION_KEYS=[OTHER_KEY]):
        assert storage.load(key) == b"written with the new key"


def test_without_configured_keys_a_key_is_derived_from_secret_key_and_logged(caplog):
    storage._keys_for.cache_clear()
    with override_settings(IMAGE_ENCRYPTION_KEYS=[]), caplog.at_level(logging.WARNING, logger="cases.storage"):
        key = storage.save(b"embedded default")
        assert storage.load(key) == b"embedded default"

    assert "derived from SECRET_KEY" in caplog.text


def test_key_of_the_wrong_length_is_a_configuration_error():
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(IMAGE_ENCRYPTION_KEYS=[base64.b64encode(b"short").decode()]):
        with pytest.raises(ImproperlyConfigured, match="32"):
            storage.save(b"x")


def test_missing_file_is_reported():
    with pytest.raises(storage.StoredImageMissing, match="missing"):
        storage.load("ab/" + "0" * 32)


def test_storage_key_cannot_escape_the_store():
    with pytest.raises(storage.StoredImageMissing, match="invalid"):
        storage.load("../../etc/passwd")
