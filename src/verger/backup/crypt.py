"""Streaming authenticated encryption of backup files with a passphrase.

A file is a header followed by chunks. The header holds the magic
``VERGER1``, the scrypt cost, the chunk size, a random salt, a random nonce
prefix, a key-check value and a digest of the header itself. The passphrase
and salt give, through scrypt, an AES-256-GCM key and the key-check value,
so a wrong passphrase is told apart from a damaged file before any chunk is
read. Each chunk is sealed with AES-256-GCM under the nonce ``prefix ||
counter``, and its associated data is the header plus a flag saying whether
it is the last chunk: a reordered, damaged, cut or extended file fails.

    with open("dump", "rb") as src, open("dump.enc", "wb") as dst:
        encrypt_stream(src, dst, passphrase)

Plaintext is written out only after the chunk holding it was authenticated,
so a reader of ``decrypt_stream``'s output never sees forged bytes; it may see
a prefix of a file that turns out to be cut short, and must then discard it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import os
import struct
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from verger.errors import BackupError, WrongPassphrase

MAGIC = b"VERGER1"
# scrypt with N = 2**15, r = 8, p = 1: about 0.1 s and 32 MiB per file.
WORK = 15
CHUNK_LOG2 = 20
TAG = 16
SALT = 16
PREFIX = 8
CHECK = 16
DIGEST = 8
_PARAMS = struct.Struct(">BBBB")
HEADER = len(MAGIC) + _PARAMS.size + SALT + PREFIX + CHECK + DIGEST

# Bounds on what a header may ask for, so a damaged one cannot make scrypt
# take minutes or gigabytes.
_WORK_RANGE = range(10, 21)
_CHUNK_RANGE = range(10, 25)
_LAST = b"\x01"
_MORE = b"\x00"

_WRONG_PASSPHRASE_HINT = (
    "use the backup.passphrase the backup was taken with; without it the "
    "backup cannot be read"
)
_DAMAGED_HINT = (
    "restore another backup, and check the repository's disk or bucket for other damage"
)


class DamagedFile(BackupError):
    """The file is not a whole verger backup file: damaged, cut or foreign."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


def require_passphrase(passphrase: str) -> bytes:
    if not passphrase:
        raise BackupError(
            "backups are encrypted, and the passphrase is empty",
            "set backup.passphrase in verger.yml (or VERGER_BACKUP_PASSPHRASE)",
        )
    return passphrase.encode()


@functools.lru_cache(maxsize=64)
def _derive(passphrase: bytes, salt: bytes, work: int) -> tuple[bytes, bytes]:
    """The AES key and the key-check value for one salt (remembered: scrypt is slow)."""
    material = Scrypt(salt=salt, length=32 + CHECK, n=2**work, r=8, p=1).derive(
        passphrase
    )
    return material[:32], material[32:]


def salt_of(data: bytes) -> bytes | None:
    """The salt in a backup file's header, if it has one at today's scrypt cost."""
    if len(data) < HEADER or not data.startswith(MAGIC):
        return None
    work = _PARAMS.unpack_from(data, len(MAGIC))[0]
    start = len(MAGIC) + _PARAMS.size
    return data[start : start + SALT] if work == WORK else None


def _nonce(prefix: bytes, counter: int) -> bytes:
    if counter >= 2**32:
        raise BackupError(
            "a backup file cannot hold more than 2**32 chunks",
            "this is 4 PiB at the default chunk size; split the database",
        )
    return prefix + counter.to_bytes(4, "big")


class Encryptor:
    """A readable stream of the ciphertext of ``src``, made as it is read."""

    def __init__(
        self,
        src: Readable,
        passphrase: str,
        *,
        work: int = WORK,
        chunk_log2: int = CHUNK_LOG2,
        salt: bytes | None = None,
    ) -> None:
        secret = require_passphrase(passphrase)
        self.src = src
        self.chunk = 2**chunk_log2
        # A salt may be shared by the files of one repository, so that a
        # command reading or writing several of them derives the key once
        # (scrypt is slow on purpose); each file still has its own random
        # nonce prefix, so no nonce repeats under the key. Sharing costs no
        # strength: every file is under the one passphrase, so cracking any
        # single file's salt already yields it.
        self.salt = salt or os.urandom(SALT)
        salt, self.prefix = self.salt, os.urandom(PREFIX)
        key, check = _derive(secret, salt, work)
        self.aead = AESGCM(key)
        head = MAGIC + _PARAMS.pack(work, 8, 1, chunk_log2) + salt + self.prefix + check
        self.header = head + hashlib.sha256(head).digest()[:DIGEST]
        self.buffer = bytearray(self.header)
        self.counter = 0
        self.pending: bytes | None = None
        self.finished = False
        self.plain_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.finished and (size < 0 or len(self.buffer) < size):
            self._seal_next()
        if size < 0 or size >= len(self.buffer):
            out = bytes(self.buffer)
            self.buffer.clear()
            return out
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def _seal_next(self) -> None:
        chunk = (
            self.pending
            if self.pending is not None
            else _read_full(self.src, self.chunk)
        )
        self.pending = None
        last = len(chunk) < self.chunk
        if not last:
            self.pending = _read_full(self.src, self.chunk)
            last = not self.pending
        flag = _LAST if last else _MORE
        sealed = self.aead.encrypt(
            _nonce(self.prefix, self.counter), chunk, self.header + flag
        )
        self.buffer += sealed
        self.plain_bytes += len(chunk)
        self.counter += 1
        self.finished = last


class Decryptor:
    """A writable sink that checks and decrypts a backup file into ``dst``.

    ``finish()`` must be called after the last write: only then is a file cut
    short at a chunk boundary told apart from a whole one.
    """

    def __init__(self, dst: Writable, passphrase: str, name: str) -> None:
        self.secret = require_passphrase(passphrase)
        self.dst = dst
        self.name = name
        self.buffer = bytearray()
        self.header = b""
        self.prefix = b""
        self.aead: AESGCM | None = None
        self.block = 0
        self.counter = 0
        self.done = False
        self.plain_bytes = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        self.buffer += data
        if self.aead is None and len(self.buffer) >= HEADER:
            self._open_header()
        # A full block is known not to be the last one only once more follows it.
        while self.aead is not None and len(self.buffer) > self.block:
            self._open_chunk(bytes(self.buffer[: self.block]), last=False)
            del self.buffer[: self.block]
        return len(data)

    def finish(self) -> int:
        """Check the end of the file; return how many plaintext bytes came out."""
        if self.aead is None:
            if self.buffer.startswith(MAGIC) or MAGIC.startswith(bytes(self.buffer)):
                raise self._error("truncated", "it ends inside its header")
            raise self._not_ours()
        if not self.done:
            if not self.buffer:
                raise self._error(
                    "truncated",
                    f"it ends after chunk {self.counter} without its last chunk",
                )
            self._open_chunk(bytes(self.buffer), last=True)
            self.buffer.clear()
        return self.plain_bytes

    def _open_header(self) -> None:
        head = bytes(self.buffer[:HEADER])
        if not head.startswith(MAGIC):
            raise self._not_ours()
        body, digest = head[:-DIGEST], head[-DIGEST:]
        if not hmac.compare_digest(hashlib.sha256(body).digest()[:DIGEST], digest):
            raise self._error("damaged", "its header fails its checksum")
        offset = len(MAGIC)
        work, r, p, chunk_log2 = _PARAMS.unpack_from(head, offset)
        if (
            work not in _WORK_RANGE
            or (r, p) != (8, 1)
            or chunk_log2 not in _CHUNK_RANGE
        ):
            raise self._error("damaged", "its header names unknown settings")
        offset += _PARAMS.size
        salt = head[offset : offset + SALT]
        offset += SALT
        prefix = head[offset : offset + PREFIX]
        offset += PREFIX
        check = head[offset : offset + CHECK]
        key, expected = _derive(self.secret, salt, work)
        if not hmac.compare_digest(check, expected):
            raise WrongPassphrase(
                f"the backup file {self.name} cannot be decrypted: the passphrase "
                "is wrong",
                _WRONG_PASSPHRASE_HINT,
            )
        self.header, self.prefix = head, prefix
        self.aead = AESGCM(key)
        self.block = 2**chunk_log2 + TAG
        del self.buffer[:HEADER]

    def _open_chunk(self, sealed: bytes, *, last: bool) -> None:
        if self.done:
            raise self._error("damaged", "it has data after its last chunk")
        plain = self._try(sealed, last)
        if plain is None:
            raise self._explain(sealed, last)
        self.dst.write(plain)
        self.plain_bytes += len(plain)
        self.counter += 1
        self.done = last

    def _try(self, sealed: bytes, last: bool) -> bytes | None:
        assert self.aead is not None
        flag = _LAST if last else _MORE
        try:
            return self.aead.decrypt(
                _nonce(self.prefix, self.counter), sealed, self.header + flag
            )
        except InvalidTag:
            return None

    def _explain(self, sealed: bytes, last: bool) -> DamagedFile:
        """Why a chunk failed: the other flag tells a cut or extended file apart."""
        chunk = self.counter + 1
        if self._try(sealed, not last) is not None:
            if last:
                return self._error(
                    "truncated", f"it ends after chunk {chunk} without its last chunk"
                )
            return self._error("damaged", f"it has data after its last chunk, {chunk}")
        if last:
            return self._error(
                "damaged or truncated",
                f"its last chunk, {chunk}, fails its authentication check",
            )
        return self._error("damaged", f"chunk {chunk} fails its authentication check")

    def _error(self, state: str, why: str) -> DamagedFile:
        return DamagedFile(
            f"the backup file {self.name} cannot be decrypted: it is {state} ({why})",
            _DAMAGED_HINT,
        )

    def _not_ours(self) -> DamagedFile:
        return DamagedFile(
            f"the backup file {self.name} cannot be decrypted: it is not a verger "
            "backup file (no VERGER1 header)",
            "check that the repository holds only files verger wrote",
        )


def _read_full(src: Readable, size: int) -> bytes:
    """Read until ``size`` bytes or the end, since pipes return short reads."""
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        part = src.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


def encrypt_stream(
    src: Readable,
    dst: Writable,
    passphrase: str,
    *,
    work: int = WORK,
    salt: bytes | None = None,
) -> int:
    """Encrypt all of ``src`` into ``dst``; return the bytes written."""
    sealed = Encryptor(src, passphrase, work=work, salt=salt)
    written = 0
    while block := sealed.read(2**CHUNK_LOG2):
        dst.write(block)
        written += len(block)
    return written


def decrypt_stream(src: Readable, dst: Writable, passphrase: str, name: str) -> int:
    """Check and decrypt all of ``src`` into ``dst``; return the plaintext bytes.

    A wrong passphrase, a damaged or a cut file raises ``BackupError`` naming
    ``name`` and saying which of these it is.
    """
    opened = Decryptor(dst, passphrase, name)
    while block := src.read(2**CHUNK_LOG2):
        opened.write(block)
    return opened.finish()


def encrypt_bytes(data: bytes, passphrase: str, *, salt: bytes | None = None) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, passphrase, salt=salt)
    return out.getvalue()


def decrypt_bytes(data: bytes, passphrase: str, name: str) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, passphrase, name)
    return out.getvalue()
