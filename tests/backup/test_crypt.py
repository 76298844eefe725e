"""Encryption of backup files: round trips, and every kind of damage named."""

from __future__ import annotations

import io
import os

import pytest

from verger.backup.crypt import (
    HEADER,
    TAG,
    DamagedFile,
    Decryptor,
    Encryptor,
    decrypt_bytes,
    decrypt_stream,
    encrypt_stream,
)
from verger.errors import BackupError, WrongPassphrase

P = "correct horse battery staple"
CHUNK_LOG2 = 12
CHUNK = 2**CHUNK_LOG2
BLOCK = CHUNK + TAG
# The lowest scrypt cost the format accepts, so that these tests stay quick.
WORK = 10


def seal(data: bytes, passphrase: str = P) -> bytes:
    """Encrypt with small chunks, so a few KiB make several of them."""
    sealed = Encryptor(io.BytesIO(data), passphrase, work=WORK, chunk_log2=CHUNK_LOG2)
    return sealed.read()


def unseal(data: bytes, passphrase: str = P, step: int = 1000) -> bytes:
    """Decrypt by writing ``step`` bytes at a time, as a download would."""
    out = io.BytesIO()
    opener = Decryptor(out, passphrase, "dump/x.dump")
    for start in range(0, len(data), step):
        opener.write(data[start : start + step])
    opener.finish()
    return out.getvalue()


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7]
)
def test_round_trip_at_chunk_edges(size: int) -> None:
    """Any length, on or off a chunk boundary, comes back byte for byte."""
    data = os.urandom(size)
    sealed = seal(data)
    chunks = max(1, -(-size // CHUNK))
    assert len(sealed) == HEADER + size + chunks * TAG
    assert unseal(sealed) == data
    assert unseal(sealed, step=1) == data
    assert unseal(sealed, step=len(sealed) + 1) == data


def test_default_stream_functions_round_trip() -> None:
    """encrypt_stream and decrypt_stream with their defaults (1 MiB chunks) agree."""
    data = os.urandom(2 * 1024 * 1024 + 5)
    sealed, out = io.BytesIO(), io.BytesIO()
    written = encrypt_stream(io.BytesIO(data), sealed, P)
    assert written == len(sealed.getvalue())
    sealed.seek(0)
    assert decrypt_stream(sealed, out, P, "x") == len(data)
    assert out.getvalue() == data


def test_short_reads_from_a_pipe_are_handled() -> None:
    """A source that returns a few bytes per read (a pipe) still makes whole chunks."""

    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, size: int = -1) -> bytes:
            step = 7 if size < 0 else min(7, size)
            out, self.data = self.data[:step], self.data[step:]
            return out

    data = os.urandom(3 * CHUNK + 100)
    sealed = Encryptor(Trickle(data), P, work=WORK, chunk_log2=CHUNK_LOG2).read()
    assert unseal(sealed) == data


def test_no_plaintext_and_fresh_randomness() -> None:
    """The same text encrypted twice differs, and no readable part of it shows."""
    data = b"member 1234 +15550001234 " * 500
    first, second = seal(data), seal(data)
    assert first != second
    assert b"member" not in first and b"+1555" not in first


def test_wrong_passphrase_is_told_apart() -> None:
    """A wrong passphrase says so, before any plaintext is written."""
    out = io.BytesIO()
    with pytest.raises(WrongPassphrase) as caught:
        decrypt_stream(
            io.BytesIO(seal(b"x" * 10000)), out, "not the one", "dump/a.dump"
        )
    assert str(caught.value) == (
        "the backup file dump/a.dump cannot be decrypted: the passphrase is wrong"
    )
    assert out.getvalue() == b""


@pytest.mark.parametrize(
    "where", ["header salt", "first chunk", "middle chunk tag", "last chunk"]
)
def test_a_flipped_byte_is_damage_not_a_wrong_passphrase(where: str) -> None:
    """One changed byte anywhere is reported as damage, never as a wrong passphrase."""
    sealed = bytearray(seal(os.urandom(3 * CHUNK + 10)))
    offset = {
        "header salt": 12,
        "first chunk": HEADER + 5,
        "middle chunk tag": HEADER + 2 * BLOCK - 1,
        "last chunk": len(sealed) - 3,
    }[where]
    sealed[offset] ^= 0x01
    with pytest.raises(DamagedFile) as caught:
        unseal(bytes(sealed))
    message = str(caught.value)
    assert message.startswith("the backup file dump/x.dump cannot be decrypted: it is")
    assert "damaged" in message and "passphrase" not in message
    assert "\n" not in message


def test_truncation_at_a_chunk_boundary_is_named() -> None:
    """A file cut right after a whole chunk is reported as truncated."""
    sealed = seal(os.urandom(3 * CHUNK + 10))
    with pytest.raises(DamagedFile, match="it is truncated"):
        unseal(sealed[: HEADER + 2 * BLOCK])
    with pytest.raises(DamagedFile, match="it is truncated"):
        unseal(sealed[:HEADER])
    with pytest.raises(DamagedFile, match="it ends inside its header"):
        unseal(sealed[:20])


def test_truncation_inside_a_chunk_is_detected() -> None:
    """A file cut inside a chunk fails, saying it is damaged or truncated."""
    sealed = seal(os.urandom(3 * CHUNK + 10))
    with pytest.raises(DamagedFile, match="damaged or truncated"):
        unseal(sealed[: HEADER + BLOCK + 100])


def test_extra_data_and_swapped_chunks_are_detected() -> None:
    """Data appended after the last chunk, or chunks in another order, fail."""
    sealed = seal(os.urandom(3 * CHUNK))
    with pytest.raises(DamagedFile, match="after its last chunk"):
        unseal(sealed + b"more")
    chunks = [sealed[HEADER + i * BLOCK : HEADER + (i + 1) * BLOCK] for i in range(3)]
    swapped = sealed[:HEADER] + chunks[1] + chunks[0] + chunks[2]
    with pytest.raises(DamagedFile, match="chunk 1 fails"):
        unseal(swapped)


def test_a_file_that_is_not_ours_is_named() -> None:
    """A plain pg_dump file, or any other, is not taken for a damaged backup."""
    with pytest.raises(DamagedFile, match="not a verger backup file"):
        decrypt_bytes(b"PGDMP" + b"\0" * 100, P, "dump/a.dump")


def test_an_empty_passphrase_is_refused() -> None:
    """Encrypting with an empty passphrase is refused with a remedy."""
    with pytest.raises(BackupError, match="passphrase is empty") as caught:
        encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), "")
    assert "backup.passphrase" in caught.value.hint


def test_files_sharing_a_salt_open_alone_and_never_share_a_nonce() -> None:
    """Two files sealed under one salt (a backup's dump and manifest) each decrypt
    on their own, and their nonce prefixes differ, so no nonce repeats."""
    salt = os.urandom(16)
    one = Encryptor(io.BytesIO(b"dump" * 5000), P, work=WORK, salt=salt)
    two = Encryptor(io.BytesIO(b"manifest"), P, work=WORK, salt=salt)
    first, second = one.read(), two.read()
    assert one.salt == two.salt == salt
    assert one.prefix != two.prefix
    assert decrypt_bytes(first, P, "dump") == b"dump" * 5000
    assert decrypt_bytes(second, P, "manifest") == b"manifest"
    with pytest.raises(WrongPassphrase):
        decrypt_bytes(second, P + "!", "manifest")
