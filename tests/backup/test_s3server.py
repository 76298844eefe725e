"""The loopback S3 server behind TLS, and the cold tier written to its buckets."""

from __future__ import annotations

import http.client
import itertools
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, SSLError
from s3server import S3Server

from verger.backup.cold import RULE_ID, apply_lifecycle, check_lifecycle
from verger.errors import BackupError

BUCKETS = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"verger-test-{next(BUCKETS)}"
    s3.make_bucket(name)
    return name


def lifecycle(s3: S3Server, bucket: str) -> list[Any]:
    answer = s3.client().get_bucket_lifecycle_configuration(Bucket=bucket)
    return list(answer["Rules"])


def test_boto3_round_trips_an_object_through_verified_tls(
    s3: S3Server, bucket: str
) -> None:
    """An object larger than nginx's default body limit goes up and comes back intact."""
    body = os.urandom(3 * 1024 * 1024)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="repo/file", Body=body)

    assert client.get_object(Bucket=bucket, Key="repo/file")["Body"].read() == body
    assert s3.endpoint == f"127.0.0.1:{s3.tls_port}"


def test_tls_without_the_ca_fails_verification(s3: S3Server, bucket: str) -> None:
    """A client trusting only the system's CAs refuses the server's certificate."""
    client = boto3.client(
        "s3",
        endpoint_url=f"https://{s3.endpoint}",
        region_name=s3.region,
        aws_access_key_id=s3.key,
        aws_secret_access_key=s3.secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.list_objects_v2(Bucket=bucket)


def test_certificate_names_127_0_0_1_and_localhost(s3: S3Server) -> None:
    """Both loopback names verify against the CA, as an IP and as a host name."""
    context = ssl.create_default_context(cafile=s3.ca_file)
    for host in ("127.0.0.1", "localhost"):
        connection = http.client.HTTPSConnection(host, s3.tls_port, context=context)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()


def test_apply_lifecycle_writes_the_cold_tier_rule(s3: S3Server, bucket: str) -> None:
    """The rule moves objects under the prefix to GLACIER after the given days."""
    assert apply_lifecycle(s3.client(), bucket, "/repo", 90) is True

    [rule] = lifecycle(s3, bucket)
    assert rule["ID"] == RULE_ID and rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": "repo/"}
    assert rule["Transitions"] == [{"Days": 90, "StorageClass": "GLACIER"}]
    assert check_lifecycle(s3.client(), bucket, "repo/", 90) is None


def test_apply_lifecycle_is_idempotent(s3: S3Server, bucket: str) -> None:
    """Applying the same rule again writes nothing and leaves one rule."""
    client = s3.client()
    assert apply_lifecycle(client, bucket, "repo", 30) is True
    assert apply_lifecycle(client, bucket, "repo", 30) is False
    assert apply_lifecycle(client, bucket, "/repo/", 30) is False
    assert len(lifecycle(s3, bucket)) == 1


def test_apply_lifecycle_keeps_unrelated_rules(s3: S3Server, bucket: str) -> None:
    """Another rule of the bucket survives the first write and a change of days."""
    client = s3.client()
    other = {
        "ID": "expire-scratch",
        "Status": "Enabled",
        "Filter": {"Prefix": "scratch/"},
        "Expiration": {"Days": 7},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [other]},
    )

    apply_lifecycle(client, bucket, "repo", 90)
    assert apply_lifecycle(client, bucket, "repo", 60) is True

    rules = {rule["ID"]: rule for rule in lifecycle(s3, bucket)}
    assert set(rules) == {"expire-scratch", RULE_ID}
    assert rules["expire-scratch"]["Expiration"] == {"Days": 7}
    assert rules["expire-scratch"]["Filter"] == {"Prefix": "scratch/"}
    assert rules[RULE_ID]["Transitions"] == [{"Days": 60, "StorageClass": "GLACIER"}]


def test_check_lifecycle_reports_a_missing_rule(s3: S3Server, bucket: str) -> None:
    """A bucket without the rule, with or without other rules, is reported in a sentence."""
    client = s3.client()
    missing = (
        "the bucket has no lifecycle rule moving backups to cold storage after 90 days"
    )
    assert check_lifecycle(client, bucket, "repo", 90) == missing

    client.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "other",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "x/"},
                    "Expiration": {"Days": 1},
                }
            ]
        },
    )
    assert check_lifecycle(client, bucket, "repo", 90) == missing


def test_check_lifecycle_reports_a_different_rule(s3: S3Server, bucket: str) -> None:
    """Other days, another prefix or a disabled rule each name what differs."""
    client = s3.client()
    apply_lifecycle(client, bucket, "repo", 30)

    days = check_lifecycle(client, bucket, "repo", 90)
    assert days is not None
    assert "after 30 days" in days and "after 90 days" in days

    prefix = check_lifecycle(client, bucket, "other", 30)
    assert prefix is not None
    assert "'repo/'" in prefix and "'other/'" in prefix

    rules = lifecycle(s3, bucket)
    rules[0]["Status"] = "Disabled"
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules}
    )
    assert check_lifecycle(client, bucket, "repo", 30) == (
        f"the bucket's lifecycle rule {RULE_ID} is disabled"
    )


def test_lifecycle_on_an_unknown_bucket_is_a_backup_error(s3: S3Server) -> None:
    """S3's refusal becomes a one-line BackupError with a hint, the cause chained."""
    with pytest.raises(BackupError, match="NoSuchBucket") as caught:
        apply_lifecycle(s3.client(), "no-such-bucket", "repo", 90)
    assert caught.value.hint and "\n" not in caught.value.message
    assert caught.value.__cause__ is not None


def test_pause_refuses_connections_until_resume() -> None:
    """Paused, the endpoint refuses connections and drops open ones; resumed, data is back."""
    with S3Server() as server:
        server.make_bucket("paused")
        client = server.client()
        client.put_object(Bucket="paused", Key="kept", Body=b"still here")
        context = ssl.create_default_context(cafile=server.ca_file)
        open_connection = http.client.HTTPSConnection(
            "127.0.0.1", server.tls_port, context=context, timeout=5
        )
        open_connection.request("GET", "/")
        open_connection.getresponse().read()

        server.pause()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.tls_port), timeout=5)
        with pytest.raises(EndpointConnectionError):
            client.get_object(Bucket="paused", Key="kept")
        with pytest.raises((OSError, http.client.HTTPException)):
            open_connection.request("GET", "/")
            open_connection.getresponse()

        server.resume()
        answer = client.get_object(Bucket="paused", Key="kept")
        assert answer["Body"].read() == b"still here"


def run_pgbackrest(
    s3: S3Server, bucket: str, *args: str, ca: bool = True
) -> subprocess.CompletedProcess[str]:
    """pgBackRest against the S3 server, as postgres when the tests run as root."""
    env = {key: value for key, value in os.environ.items() if "PGBACKREST" not in key}
    # pgBackRest refuses secrets on its command line.
    env |= {
        "PGBACKREST_REPO1_S3_KEY": s3.key,
        "PGBACKREST_REPO1_S3_KEY_SECRET": s3.secret,
    }
    options = [
        "--config=/dev/null",
        "--log-level-file=off",
        "--stanza=x",
        "--repo1-type=s3",
        "--repo1-s3-endpoint=127.0.0.1",
        f"--repo1-storage-port={s3.tls_port}",
        f"--repo1-s3-bucket={bucket}",
        f"--repo1-s3-region={s3.region}",
        "--repo1-s3-uri-style=path",
        "--repo1-path=/repo",
        # pgBackRest retries even a failed certificate check until this runs out.
        "--io-timeout=3",
    ]
    if ca:
        options.append(f"--repo1-storage-ca-file={s3.ca_file}")
    return subprocess.run(
        ["pgbackrest", *options, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=s3.root,
        user="postgres" if os.geteuid() == 0 else None,
        timeout=60,
    )


def test_pgbackrest_reads_the_repository_over_tls(s3: S3Server, bucket: str) -> None:
    """pgBackRest 2.45 verifies the server with the CA file, lists and reads objects."""
    assert shutil.which("pgbackrest"), "pgbackrest is missing; run scripts/setup.sh"
    empty = run_pgbackrest(s3, bucket, "repo-ls")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == ""

    s3.client().put_object(Bucket=bucket, Key="repo/archive/hello", Body=b"hello")
    listed = run_pgbackrest(s3, bucket, "repo-ls", "--recurse")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["archive", "archive/hello"]

    got = run_pgbackrest(s3, bucket, "repo-get", "archive/hello")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "hello"


def test_pgbackrest_without_the_ca_refuses_the_server(
    s3: S3Server, bucket: str
) -> None:
    """Without the CA file pgBackRest fails certificate verification (after retrying)."""
    done = run_pgbackrest(s3, bucket, "repo-ls", ca=False)
    assert done.returncode != 0
    assert "unable to verify certificate" in done.stderr
