"""S3 over TLS with a private CA: the recovery backup store built from the settings
(``RECOVERY_S3_CA_BUNDLE``, the secret key from a mounted file) writes and reads through a
dedicated SeaweedFS serving HTTPS only; the wrong CA fails the first request within its deadline
with a certificate error.

Its own SeaweedFS (free ports, own INFRA_RUN) so the shared plain-HTTP one is never changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import SSLError

from tests.infra.services import InfraConfig, free_ports, listening_ports, start, stop
from tests.security.pki import Pki
from torghut.config import RecoverySettings, load_section
from torghut.recovery import S3Store, store_from_settings

ACCESS_KEY = "tls-access"
SECRET_KEY = "tls-secret-9dK"  # a throw-away credential of the test server


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """``https://127.0.0.1:PORT`` of a SeaweedFS S3 gateway with the session CA's certificate."""
    root = tmp_path_factory.mktemp("tls-s3")
    s3, master, volume, filer = free_ports(4, plus_10000=True)
    cfg = InfraConfig.from_env(
        {
            "INFRA_RUN": str(root / "infra"),
            "S3_PORT": str(s3),
            "S3_MASTER_PORT": str(master),
            "S3_VOLUME_PORT": str(volume),
            "S3_FILER_PORT": str(filer),
            "S3_ACCESS_KEY": ACCESS_KEY,
            "S3_SECRET_KEY": SECRET_KEY,
            "S3_TLS_CERT": str(pki.server_cert),
            "S3_TLS_KEY": str(pki.server_key),
            "S3_TLS_CA": str(pki.ca),
            "S3_STOP_GRACE": "3",  # a throw-away instance: no need to wait for a clean stop
        }
    )
    start(["s3"], cfg)
    try:
        yield f"https://127.0.0.1:{s3}"
    finally:
        stop(["s3"], cfg)
        assert s3 not in listening_ports()


@pytest.fixture
def bucket(tls_s3: str, pki: Pki) -> Iterator[str]:
    client = boto3.client(
        "s3",
        endpoint_url=tls_s3,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        verify=str(pki.ca),
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    name = f"tls-{time.monotonic_ns() % 10**8}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


def _env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoint: str, bucket: str, ca: Path
) -> None:
    secret = tmp_path / "s3-secret-key"
    secret.write_text(SECRET_KEY + "\n")
    monkeypatch.setenv("RECOVERY_S3_BUCKET", bucket)
    monkeypatch.setenv("RECOVERY_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RECOVERY_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("RECOVERY_S3_SECRET_KEY_FILE", str(secret))
    monkeypatch.setenv("RECOVERY_S3_CA_BUNDLE", str(ca))


def test_backup_store_over_tls_with_the_private_ca(
    tls_s3: str, bucket: str, pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _env(monkeypatch, tmp_path, tls_s3, bucket, pki.ca)
    store = store_from_settings(load_section(RecoverySettings), "ta")
    assert isinstance(store, S3Store)
    store.write("probe/manifest.json", b'{"ok": true}')
    assert store.read("probe/manifest.json") == b'{"ok": true}'
    assert store.read("probe/absent.json") is None


def test_backup_store_with_a_wrong_ca_fails_with_a_certificate_error(
    tls_s3: str, bucket: str, other_pki: Pki, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _env(monkeypatch, tmp_path, tls_s3, bucket, other_pki.ca)
    store = store_from_settings(load_section(RecoverySettings), "ta")
    t0 = time.monotonic()
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        store.write("probe/manifest.json", b"{}")
    assert time.monotonic() - t0 < 30, "a certificate error must not be retried for long"
