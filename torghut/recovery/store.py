"""Where recovery backup sets live: a local directory (the embedded default) or S3.

A store knows objects, not Bytewax: keys are ``<set-id>/<file name>`` (and ``cluster/…`` for
the start records of :mod:`torghut.recovery.cluster`) under one root per flow.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from torghut.config import RecoverySettings

__all__ = ["SET_ID", "BackupStore", "LocalDirStore", "S3Store", "store_from_settings"]

SET_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
"""A backup set's id: its UTC creation time, sortable (``20261125T013000.123456Z``)."""


class BackupStore(Protocol):
    """Where backup sets live: keys are ``<set-id>/<file name>`` under the store's root."""

    def upload(self, key: str, source: Path) -> None: ...

    def download(self, key: str, dest: Path) -> None: ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    def write(self, key: str, data: bytes) -> None: ...

    def set_ids(self) -> list[str]:
        """Every set id present (complete or not), in any order."""

    def files(self, set_id: str) -> dict[str, int]:
        """File name -> size of one set."""

    def delete_set(self, set_id: str) -> None: ...


class LocalDirStore:
    """Sets as directories under ``root`` (the embedded default, ``RECOVERY_BACKUP_DIR``).

    Writes go to a temporary file and are renamed into place, so a file (and above all the
    manifest) is either absent or complete.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def upload(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def set_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and SET_ID.match(p.name)]

    def files(self, set_id: str) -> dict[str, int]:
        d = self.root / set_id
        if not d.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in d.iterdir() if not p.name.startswith(".")}

    def delete_set(self, set_id: str) -> None:
        shutil.rmtree(self.root / set_id, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.root / key


class S3Store:
    """Sets under ``s3://bucket/prefix/<set-id>/`` (S3, MinIO, SeaweedFS; path-style)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def upload(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key))

    def download(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(dest))

    def read(self, key: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def set_ids(self) -> list[str]:
        # From object keys, not CommonPrefixes: some S3 servers (SeaweedFS) keep listing a
        # "directory" after its last object is deleted.
        ids: set[str] = set()
        base = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base) :].split("/", 1)[0]
                if SET_ID.match(name):
                    ids.add(name)
        return list(ids)

    def files(self, set_id: str) -> dict[str, int]:
        base = f"{self._key(set_id)}/"
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(base) :]] = int(obj["Size"])
        return out

    def delete_set(self, set_id: str) -> None:
        keys = [{"Key": f"{self._key(set_id)}/{name}"} for name in self.files(set_id)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def store_from_settings(settings: RecoverySettings, flow: str) -> BackupStore:
    """S3 when ``RECOVERY_S3_BUCKET`` is set, else ``RECOVERY_BACKUP_DIR``; one root per flow."""
    if not settings.s3_bucket:
        return LocalDirStore(settings.backup_dir / flow)
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=(
            settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
        ),
        aws_secret_access_key=(
            settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        ),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        verify=str(settings.s3_ca_bundle) if settings.s3_ca_bundle else None,
    )
    return S3Store(client, settings.s3_bucket, f"{settings.s3_prefix.strip('/')}/{flow}")
