"""S3 smoke tests against the SeaweedFS S3 gateway (plain S3 API through boto3)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def test_put_get_list_overwrite(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="snap/a/1.bin", Body=b"one", Metadata={"epoch": "1"})
    s3_client.put_object(Bucket=s3_bucket, Key="snap/a/2.bin", Body=b"two")
    s3_client.put_object(Bucket=s3_bucket, Key="snap/b/1.bin", Body=b"three")
    s3_client.put_object(Bucket=s3_bucket, Key="other.txt", Body=b"x")

    obj = s3_client.get_object(Bucket=s3_bucket, Key="snap/a/1.bin")
    assert obj["Body"].read() == b"one"
    assert obj["Metadata"] == {"epoch": "1"}

    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="snap/a/")
    assert [o["Key"] for o in listed["Contents"]] == ["snap/a/1.bin", "snap/a/2.bin"]
    dirs = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="snap/", Delimiter="/")
    assert [p["Prefix"] for p in dirs["CommonPrefixes"]] == ["snap/a/", "snap/b/"]

    # overwrite replaces content and metadata
    s3_client.put_object(
        Bucket=s3_bucket, Key="snap/a/1.bin", Body=b"one-v2", Metadata={"epoch": "2"}
    )
    obj = s3_client.get_object(Bucket=s3_bucket, Key="snap/a/1.bin")
    assert obj["Body"].read() == b"one-v2"
    assert obj["Metadata"] == {"epoch": "2"}
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="snap/a/")["KeyCount"] == 2

    with pytest.raises(ClientError) as exc:
        s3_client.get_object(Bucket=s3_bucket, Key="missing")
    assert exc.value.response["Error"]["Code"] == "NoSuchKey"


def test_multipart_upload(s3_client: Any, s3_bucket: str) -> None:
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(123)]
    up = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="big.bin")
    parts = []
    for i, data in enumerate(parts_data, start=1):
        r = s3_client.upload_part(
            Bucket=s3_bucket, Key="big.bin", UploadId=up["UploadId"], PartNumber=i, Body=data
        )
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    s3_client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="big.bin",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    whole = b"".join(parts_data)
    head = s3_client.head_object(Bucket=s3_bucket, Key="big.bin")
    assert head["ContentLength"] == len(whole)
    body = s3_client.get_object(Bucket=s3_bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(whole).digest()
    ranged = s3_client.get_object(Bucket=s3_bucket, Key="big.bin", Range="bytes=5242870-5242889")
    assert ranged["Body"].read() == whole[5242870:5242890]


def test_bad_secret_is_rejected(s3_settings: Any, s3_bucket: str) -> None:
    import boto3
    from botocore.config import Config

    bad = boto3.client(
        "s3",
        endpoint_url=s3_settings.endpoint_url,
        aws_access_key_id=s3_settings.access_key,
        aws_secret_access_key="wrong-secret",
        region_name=s3_settings.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
