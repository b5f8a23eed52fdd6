"""The one way any process connects to Temporal (the worker, the API's gateway, the launcher):
a client with the project's data converter.

With SWITCHBOARD_PAYLOAD_KEY set, `PayloadCipher` encrypts every payload before it leaves the
process: workflow inputs and results, signals, updates, queries, activities' arguments and
results, memos and summaries, and the messages and stack traces of failures. What Temporal
keeps of a conversation (in its histories, for the namespace's retention) is then ciphertext;
search attributes are not payloads the SDK encodes (Temporal indexes them in plain text), so
they carry only ids and group names. The API's codec endpoint (api/routes/codec.py) decodes
them for the Temporal UI and the `temporal` CLI.

The codec runs in the worker's own event loop, never in the workflow sandbox: workflows/
never imports this module, so the sandbox never loads the cryptography library.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.runtime import Runtime

from settings import Settings

# The metadata of an encrypted payload: its encoding, which the UI and the CLI show as such,
# and the id of the key that encrypted it (a hash of the key, telling nothing of it).
ENCODING = "encoding"
ENCRYPTED = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12  # AES-GCM's 96-bit nonce, random for each payload, stored before the ciphertext


class PayloadUndecodable(ValueError):
    """An encrypted payload none of the keys can open: its key is no longer configured, or
    the payload was altered (AES-GCM authenticates what it decrypts)."""


def payload_key_id(key: bytes) -> str:
    return hashlib.sha256(b"switchboard payload key id\n" + key).hexdigest()[:16]


class PayloadCipher(PayloadCodec):
    """AES-256-GCM over each whole payload (its metadata too: the inner encoding is hidden).
    The first key encrypts; a payload names its key's id, and any key listed decrypts it. A
    payload that is not encrypted (written before a key was set) passes through as it is."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a payload cipher needs at least one key")
        self._ciphers = {payload_key_id(key): AESGCM(key) for key in keys}
        self._encrypting = payload_key_id(keys[0])

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._encrypting].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={ENCODING: ENCRYPTED, KEY_ID: self._encrypting.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(ENCODING) != ENCRYPTED:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadUndecodable(
                f"a payload encrypted with key {key_id[:32]!r}, which is not among "
                "SWITCHBOARD_PAYLOAD_KEY's keys"
            )
        nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        try:
            return Payload.FromString(cipher.decrypt(nonce, sealed, None))
        except InvalidTag:
            raise PayloadUndecodable(
                f"a payload that key {key_id!r} does not open: altered, or not ours"
            ) from None


@lru_cache
def _cipher(keys: tuple[bytes, ...]) -> PayloadCipher:
    return PayloadCipher(keys)


def payload_codec(settings: Settings) -> PayloadCipher | None:
    """The settings' codec; None without a key (development, tests): payloads stay plain."""
    keys = tuple(settings.payload_keys)
    return _cipher(keys) if keys else None


def data_converter(settings: Settings) -> DataConverter:
    codec = payload_codec(settings)
    if codec is None:
        return DataConverter.default
    # A failure's message and stack trace go into an encoded payload too: an activity's error
    # may quote what it was working on.
    return DataConverter(
        payload_codec=codec, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
    )


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client of the settings' Temporal server and namespace, with their data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=runtime,
    )


def with_data_converter(client: Client, settings: Settings) -> Client:
    """The same connection (a test server's, say) with the settings' data converter."""
    return Client(**{**client.config(), "data_converter": data_converter(settings)})
