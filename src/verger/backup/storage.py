"""Where backup files go: a local folder or an S3 bucket, behind one small class.

A file appears in a listing only once it is whole. A local file is written
under a hidden temporary name, synced and renamed; an S3 object exists only
once its upload (single or multipart) completed, and a multipart upload that
failed is aborted so its parts do not linger. ``clean()`` removes what an
interrupted process could not: temporary files of dead processes and
multipart uploads older than a day.

Files are named with ``/`` separated paths relative to the storage's root,
such as ``dump/app-production/20261203-213000L.dump``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from verger.backup.crypt import Readable, Writable
from verger.backup.engines.base import Progress, no_progress
from verger.children import running
from verger.config.model import S3, Repository
from verger.errors import BackupError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BLOCK = 1024 * 1024
MiB = 1024 * 1024
# S3 allows 10,000 parts per upload; stay below it with room to spare.
MAX_PARTS = 9000
STALE_UPLOAD = 24 * 3600.0
_PARTIAL = ".partial-"


class StoredFile(NamedTuple):
    name: str
    size: int
    mtime: float


class Storage(ABC):
    """The operations an engine needs on the place its files are kept."""

    @abstractmethod
    def describe(self) -> str:
        """Where the files are, for messages: a folder or ``s3://bucket/prefix``."""

    @abstractmethod
    def put(
        self,
        name: str,
        src: Readable,
        size_hint: int | None = None,
        progress: Progress = no_progress,
    ) -> int:
        """Store everything ``src`` yields as ``name``; return the bytes stored.

        Until this returns, ``name`` is not listed; if it raises, it never is.
        An exception raised by ``src`` itself comes out unchanged.
        """

    @abstractmethod
    def get(self, name: str, dst: Writable, progress: Progress = no_progress) -> int:
        """Write the file ``name`` into ``dst``; return the bytes written."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[StoredFile]:
        """Every whole file whose name starts with ``prefix``, sorted by name."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; a file that is already gone is no error."""

    @abstractmethod
    def free_bytes(self) -> int | None:
        """Space left, or None where the storage has no such limit to report."""

    @abstractmethod
    def reachable(self) -> str | None:
        """None when files can be stored, else a sentence saying why not."""

    @abstractmethod
    def clean(self) -> builtins.list[str]:
        """Remove leftovers of interrupted writes; return what was removed."""


def check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BackupError(
            f"{name!r} is not a valid backup file name",
            "names are relative paths without empty, '.' or '..' parts",
        )
    if any(p.startswith(".") for p in parts):
        raise BackupError(
            f"{name!r} is not a valid backup file name",
            "names starting with '.' are kept for files being written",
        )
    return name


class LocalStorage(Storage):
    """A folder on this host (a mounted disk, NFS share or the like)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def put(
        self,
        name: str,
        src: Readable,
        size_hint: int | None = None,
        progress: Progress = no_progress,
    ) -> int:
        target = self.path / check_name(name)
        with _local(f"cannot create the folder {target.parent}"):
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = target.parent / (
            f".{target.name}{_PARTIAL}{os.getpid()}-{secrets.token_hex(4)}"
        )
        try:
            written = self._write(temp, src, size_hint or 0, progress)
            with _local(f"cannot store {target}"):
                os.replace(temp, target)
                _sync_folder(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return written

    def _write(self, temp: Path, src: Readable, total: int, progress: Progress) -> int:
        with _local(f"cannot write {temp}"):
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        written = 0
        with os.fdopen(fd, "wb") as out:
            while block := src.read(BLOCK):
                with _local(f"cannot write {temp}"):
                    out.write(block)
                written += len(block)
                progress(written, total)
            with _local(f"cannot write {temp}"):
                out.flush()
                os.fsync(out.fileno())
        return written

    def get(self, name: str, dst: Writable, progress: Progress = no_progress) -> int:
        path = self.path / check_name(name)
        with _local(f"cannot read {path}"):
            handle = path.open("rb")
            total = os.fstat(handle.fileno()).st_size
        done = 0
        with handle:
            while True:
                with _local(f"cannot read {path}"):
                    block = handle.read(BLOCK)
                if not block:
                    return done
                dst.write(block)
                done += len(block)
                progress(done, total)

    def list(self, prefix: str = "") -> list[StoredFile]:
        found: list[StoredFile] = []
        if not self.path.is_dir():
            return found
        with _local(f"cannot list {self.path}"):
            for folder, subfolders, files in os.walk(self.path):
                subfolders[:] = [s for s in subfolders if not s.startswith(".")]
                base = Path(folder).relative_to(self.path)
                for file in files:
                    name = (base / file).as_posix()
                    if file.startswith(".") or not name.startswith(prefix):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        info = os.stat(os.path.join(folder, file))
                        found.append(StoredFile(name, info.st_size, info.st_mtime))
        return sorted(found)

    def delete(self, name: str) -> None:
        path = self.path / check_name(name)
        with _local(f"cannot delete {path}"):
            path.unlink(missing_ok=True)
            if path.parent.exists():
                _sync_folder(path.parent)

    def free_bytes(self) -> int | None:
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())
        return shutil.disk_usage(existing).free

    def reachable(self) -> str | None:
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())
        if not existing.is_dir():
            return f"{existing} is not a folder, so {self.path} cannot be made"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"verger cannot write in {existing}"
        return None

    def clean(self) -> builtins.list[str]:
        removed: list[str] = []
        if not self.path.is_dir():
            return removed
        for folder, _, files in os.walk(self.path):
            for file in files:
                if _PARTIAL not in file or _writer_alive(file):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, file))
                    removed.append(os.path.join(folder, file))
        return removed


def _writer_alive(file: str) -> bool:
    """Whether the process named in a temporary file's name still runs."""
    pid = file.rpartition(_PARTIAL)[2].split("-", 1)[0]
    return pid.isdigit() and running(int(pid))


@contextlib.contextmanager
def _local(action: str) -> Iterator[None]:
    """Turn an OSError of the repository folder into one sentence with a remedy."""
    try:
        yield
    except OSError as exc:
        raise BackupError(
            f"{action}: {exc.strerror or exc}",
            "check the repository folder's permissions and free space",
        ) from exc


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Storage(Storage):
    """A bucket on any S3-compatible server, reached over HTTPS only."""

    def __init__(self, s3: S3) -> None:
        import boto3
        from botocore.config import Config

        self.config = s3
        self.bucket = s3.bucket
        prefix = s3.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=f"https://{s3.endpoint}",
            region_name=s3.region,
            aws_access_key_id=s3.key,
            aws_secret_access_key=s3.secret,
            verify=s3.ca_file or True,
            config=Config(
                s3={"addressing_style": "path" if s3.path_style else "virtual"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
            ),
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.config.endpoint}"

    def key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def put(
        self,
        name: str,
        src: Readable,
        size_hint: int | None = None,
        progress: Progress = no_progress,
    ) -> int:
        from boto3.s3.transfer import TransferConfig

        key = self.key(name)
        part = max(8 * MiB, -(-(size_hint or 0) // MAX_PARTS // MiB) * MiB)
        config = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=4
        )
        counter = _Counter(size_hint or 0, progress)
        try:
            self.client.upload_fileobj(
                src,  # type: ignore[arg-type]
                self.bucket,
                key,
                Config=config,
                Callback=counter,
            )
        except BaseException as exc:
            self._abort_uploads(key)
            _fail(f"cannot store {name} in {self.describe()}", exc)
        return counter.done

    def _abort_uploads(self, key: str, older_than: float | None = None) -> list[str]:
        """Abort multipart uploads of ``key`` (a prefix), or those older than a time."""
        aborted: list[str] = []
        with contextlib.suppress(Exception):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=key
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    started = upload["Initiated"].timestamp()
                    if older_than is not None and started > older_than:
                        continue
                    if older_than is None and upload["Key"] != key:
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    aborted.append(upload["Key"])
        return aborted

    def get(self, name: str, dst: Writable, progress: Progress = no_progress) -> int:
        where = f"cannot read {name} from {self.describe()}"
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            _fail(where, exc)
        total = int(answer.get("ContentLength") or 0)
        body = answer["Body"]
        done = 0
        with contextlib.closing(body):
            chunks = body.iter_chunks(BLOCK)
            while True:
                try:
                    block = next(chunks, b"")
                except Exception as exc:
                    _fail(where, exc)
                if not block:
                    break
                dst.write(block)
                done += len(block)
                progress(done, total)
        if total and done != total:
            raise BackupError(
                f"{where}: the download ended after {done} of {total} bytes",
                "check the network to the S3 endpoint and retry",
            )
        return done

    def list(self, prefix: str = "") -> list[StoredFile]:
        found: list[StoredFile] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    mtime = item["LastModified"].timestamp()
                    found.append(StoredFile(name, int(item["Size"]), mtime))
        except Exception as exc:
            _fail(f"cannot list {self.describe()}", exc)
        return sorted(found)

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            _fail(f"cannot delete {name} from {self.describe()}", exc)

    def free_bytes(self) -> int | None:
        return None

    def reachable(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            return _sentence(f"cannot reach {self.describe()}", exc)
        return None

    def clean(self) -> builtins.list[str]:
        return self._abort_uploads(self.prefix, older_than=time.time() - STALE_UPLOAD)


class _Counter:
    """boto3's upload callback: adds up bytes sent from its worker threads."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total = total
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self.lock:
            self.done += sent
            self.progress(self.done, self.total)


def _fail(action: str, exc: BaseException) -> NoReturn:
    """Raise an S3 or network failure as one sentence, anything else unchanged."""
    converted = _s3_error(action, exc)
    if converted is None:
        raise exc
    raise converted from exc


def _sentence(action: str, exc: BaseException) -> str:
    converted = _s3_error(action, exc)
    return converted.message if converted else f"{action}: {exc}"


def _s3_error(action: str, exc: BaseException) -> BackupError | None:
    """An S3 or network failure as one sentence with a remedy, else None."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        SSLError,
    )

    hint = "check backup.repository.s3 in verger.yml and that the server answers"
    if isinstance(exc, ClientError):
        error: dict[str, Any] = dict(exc.response.get("Error", {}))
        code = str(error.get("Code", "error"))
        text = str(error.get("Message") or code)
        if code in ("NoSuchBucket", "404"):
            return BackupError(f"{action}: the bucket does not exist", hint)
        if code in (
            "AccessDenied",
            "403",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            return BackupError(f"{action}: access denied ({code})", hint)
        return BackupError(f"{action}: {code}: {text}", hint)
    if isinstance(exc, SSLError):
        return BackupError(
            f"{action}: the server's TLS certificate cannot be verified",
            "set backup.repository.s3.ca_file to the CA that signed it",
        )
    if isinstance(exc, EndpointConnectionError):
        return BackupError(f"{action}: cannot connect to the endpoint", hint)
    if isinstance(exc, NoCredentialsError):
        return BackupError(
            f"{action}: no credentials",
            "set backup.repository.s3.key and secret, or the AWS_* variables",
        )
    if isinstance(exc, S3UploadFailedError | BotoCoreError):
        first = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        return BackupError(f"{action}: {first}", hint)
    return None


def make_storage(repository: Repository, root: Path) -> Storage:
    """The storage a ``repository:`` section names, relative paths under ``root``."""
    if repository.s3 is not None:
        s3 = repository.s3
        if s3.ca_file and not Path(s3.ca_file).is_absolute():
            s3 = s3.model_copy(update={"ca_file": str((root / s3.ca_file).resolve())})
        return S3Storage(s3)
    assert repository.path is not None
    return LocalStorage((root / repository.path).resolve())
