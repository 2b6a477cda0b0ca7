"""The private, encrypted store of cell images.

Each file is AES-256-GCM encrypted with a fresh 96-bit nonce and written under PRIVATE_MEDIA_ROOT with a
random name. The blob starts with a format marker, the id of the key that encrypted it and the nonce; the
marker and key id are authenticated too, so any change to the file is detected on read.

Keys come from settings.IMAGE_ENCRYPTION_KEYS (base64 of 32 bytes each): the first encrypts, all decrypt,
so a new key can be put first while old files stay readable. With no key configured (the embedded
default) a key is derived from SECRET_KEY, which ties the files to that secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

MAGIC = b"HVE1"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
HKDF_INFO = b"hematovision image encryption v1"
STORAGE_KEY_PATTERN = re.compile(r"[0-9a-f]{2}/[0-9a-f]{32}")


class StoredImageError(Exception):
    """A stored image cannot be read back; the message says which and why."""


class StoredImageMissing(StoredImageError):
    pass


class StoredImageCorrupt(StoredImageError):
    pass


@dataclass(frozen=True)
class EncryptionKey:
    key_id: bytes
    secret: bytes


def _key_id(secret: bytes) -> bytes:
    return hashlib.sha256(b"hematovision key id" + secret).digest()[:KEY_ID_BYTES]


def _decode_configured_key(position: int, value: str) -> bytes:
    try:
        secret = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"IMAGE_ENCRYPTION_KEYS entry {position} is not valid base64") from exc
    if len(secret) != 32:
        raise ImproperlyConfigured(
            f"IMAGE_ENCRYPTION_KEYS entry {position} decodes to {len(secret)} bytes; AES-256 needs 32"
        )
    return secret


@lru_cache(maxsize=4)
def _keys_for(configured: tuple[str, ...], secret_key: str) -> tuple[EncryptionKey, ...]:
    if configured:
        secrets_ = [_decode_configured_key(position, value) for position, value in enumerate(configured, 1)]
    else:
        if not secret_key:
            raise ImproperlyConfigured("Set IMAGE_ENCRYPTION_KEYS (or at least SECRET_KEY) to store images.")
        logger.warning(
            "IMAGE_ENCRYPTION_KEYS is empty: image encryption key derived from SECRET_KEY with HKDF "
            "(embedded default; set IMAGE_ENCRYPTION_KEYS in production)"
        )
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret_key.encode())
        secrets_ = [derived]
    return tuple(EncryptionKey(key_id=_key_id(secret), secret=secret) for secret in secrets_)


def encryption_keys() -> tuple[EncryptionKey, ...]:
    return _keys_for(tuple(settings.IMAGE_ENCRYPTION_KEYS or ()), settings.SECRET_KEY)


def _root() -> Path:
    return Path(settings.PRIVATE_MEDIA_ROOT)


def _path_for(storage_key: str) -> Path:
    # Keys are generated here; refuse anything else so a key can never point outside the store.
    if not STORAGE_KEY_PATTERN.fullmatch(storage_key or ""):
        raise StoredImageMissing(f"invalid image storage key {storage_key!r}")
    return _root() / storage_key


def _make_private_dirs(folder: Path) -> None:
    """Create `folder` and its missing parents with mode 700 (mkdir's own mode is filtered by the umask)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        os.chmod(created, 0o700)


def encrypt(data: bytes) -> bytes:
    key = encryption_keys()[0]
    nonce = os.urandom(NONCE_BYTES)
    header = MAGIC + key.key_id
    return header + nonce + AESGCM(key.secret).encrypt(nonce, data, header)


def decrypt(blob: bytes, *, label: str = "image") -> bytes:
    if len(blob) < HEADER_BYTES + 16 or not blob.startswith(MAGIC):
        raise StoredImageCorrupt(f"{label} is not an encrypted HematoVision image file (bad header)")
    key_id = blob[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]
    nonce = blob[len(MAGIC) + KEY_ID_BYTES : HEADER_BYTES]
    key = next((candidate for candidate in encryption_keys() if candidate.key_id == key_id), None)
    if key is None:
        raise StoredImageCorrupt(
            f"{label} was encrypted with key id {key_id.hex()}, which is not among IMAGE_ENCRYPTION_KEYS"
        )
    try:
        return AESGCM(key.secret).decrypt(nonce, blob[HEADER_BYTES:], blob[: HEADER_BYTES - NONCE_BYTES])
    except InvalidTag as exc:
        raise StoredImageCorrupt(f"{label} failed its integrity check: the file was modified or damaged") from exc


def save(data: bytes) -> str:
    """Encrypt and store `data`; returns the storage key (a random relative path)."""
    name = secrets.token_hex(16)
    storage_key = f"{name[:2]}/{name}"
    path = _root() / storage_key
    if not path.parent.is_dir():
        _make_private_dirs(path.parent)
    _write_atomically(path, encrypt(data))
    return storage_key


def _write_atomically(path: Path, blob: bytes) -> None:
    temporary = path.with_suffix(".part")
    with open(temporary, "xb") as stream:
        stream.write(blob)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def stored_keys() -> list[str]:
    """Every file in the store (images, thumbnails, previews; `.part` temporaries excluded), as storage keys."""
    root = _root()
    if not root.is_dir():
        return []
    keys = (path.relative_to(root).as_posix() for path in root.glob("*/*") if path.is_file())
    return sorted(key for key in keys if STORAGE_KEY_PATTERN.fullmatch(key))


def key_id_of(storage_key: str) -> bytes:
    """The id of the key that encrypted a stored file (read from its header)."""
    with open(_path_for(storage_key), "rb") as stream:
        header = stream.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or not header.startswith(MAGIC):
        raise StoredImageCorrupt(f"stored image {storage_key} is not an encrypted HematoVision image file")
    return header[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]


def reencrypt(storage_key: str) -> bool:
    """Rewrite a stored file under the newest key (same storage key, atomic replace); False if it already is."""
    if key_id_of(storage_key) == encryption_keys()[0].key_id:
        return False
    _write_atomically(_path_for(storage_key), encrypt(load(storage_key)))
    return True


def load(storage_key: str) -> bytes:
    path = _path_for(storage_key)
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoredImageMissing(f"stored image {storage_key} is missing from the private store") from exc
    return decrypt(blob, label=f"stored image {storage_key}")


def delete(storage_key: str) -> None:
    _path_for(storage_key).unlink(missing_ok=True)
