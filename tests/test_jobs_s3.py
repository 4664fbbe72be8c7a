"""Jobs with S3 (moto's server on loopback): job results in a bucket behind presigned URLs,
and SageMaker asynchronous inference through boto3's ``invoke_endpoint_async``, its input
and output on S3, failures at the failure location and SNS-shaped notifications."""

from __future__ import annotations

import io
import json
import textwrap

import httpx
import pytest
from PIL import Image

from jobs_fixtures import (
    job_settings,
    painter_entry,
    s3_client,
    thread_server,
    write_models_yaml,
)

pytestmark = pytest.mark.timeout(300)

ECHO_HANDLER = """
def model_fn(model_dir):
    return {"name": "echo"}


def predict_fn(data, model):
    return {"model": model["name"], "got": data}
"""


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory, moto_s3, receiver):
    tmp = tmp_path_factory.mktemp("jobs-s3")
    s3 = s3_client(moto_s3)
    for bucket in ("results", "async"):
        s3.create_bucket(Bucket=bucket)
    echo = tmp / "echo"
    (echo / "code").mkdir(parents=True)
    (echo / "code" / "inference.py").write_text(textwrap.dedent(ECHO_HANDLER))
    (tmp / "inputs").mkdir()
    settings = job_settings(
        f"sqlite:///{tmp / 'jobs.db'}", tmp, results={"url": "s3://results/jobs"}
    )
    sagemaker = {
        "async_output_path": "s3://async/out",
        "async_failure_path": "s3://async/fail",
        "async_notification_url": receiver.url("sns"),
        "async_input_locations": ["s3://async/in/", (tmp / "inputs").as_uri() + "/"],
    }
    models = [painter_entry(), {"name": "echo", "path": str(echo)}]
    srv = thread_server(write_models_yaml(tmp, settings, models, sagemaker=sagemaker), tmp / "home")
    srv.s3 = s3
    srv.tmp = tmp
    srv.receiver = receiver
    yield srv
    srv.stop()


def _runtime(server):
    import boto3
    import botocore

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        config=botocore.config.Config(
            signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}
        ),
    )


def _object(server, url: str) -> tuple[bytes, str]:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    got = server.s3.get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), got["ContentType"]


def _notification(server, inference_id: str) -> dict:
    def arrived(calls):
        return any(json.loads(body)["inferenceId"] == inference_id for _, body in calls)

    calls = server.receiver.wait("sns", arrived)
    return next(
        n for n in (json.loads(body) for _, body in calls) if n["inferenceId"] == inference_id
    )


def test_job_results_live_in_s3_behind_presigned_urls(s3_server, moto_s3):
    from impasto import Client

    with Client(s3_server.url) as client:
        job = client.submit({"prompt": "to s3", "num_images": 2})
        done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    for url in done["output"]:
        assert url.startswith(moto_s3) and "Signature=" in url  # presigned by S3 itself
        image = Image.open(io.BytesIO(httpx.get(url).content))
        assert image.size == (16, 16)
    data, kind = _object(s3_server, f"s3://results/jobs/{job['id']}/0.png")
    assert kind == "image/png" and data.startswith(b"\x89PNG")


def test_invoke_endpoint_async_reads_and_writes_s3(s3_server):
    s3_server.s3.put_object(
        Bucket="async",
        Key="in/fox.json",
        Body=json.dumps({"inputs": "a fox", "parameters": {"seed": 7, "num_images_per_prompt": 2}}),
    )
    answer = _runtime(s3_server).invoke_endpoint_async(
        EndpointName="painter",
        InputLocation="s3://async/in/fox.json",
        ContentType="application/json",
        Accept="application/json",
        InferenceId="fox-1",
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["InferenceId"] == "fox-1"
    output = answer["OutputLocation"]
    assert output.startswith("s3://async/out/") and output.endswith(".out")
    assert answer["FailureLocation"].startswith("s3://async/fail/")
    note = _notification(s3_server, "fox-1")
    assert note["invocationStatus"] == "Completed" and note["eventSource"] == "aws:sagemaker"
    assert note["responseParameters"]["outputLocation"] == output
    assert note["requestParameters"]["inputLocation"] == "s3://async/in/fox.json"
    data, kind = _object(s3_server, output)
    body = json.loads(data)
    assert kind == "application/json" and body["prompt"] == "a fox" and body["seeds"] == [7, 8]
    assert len(body["images"]) == 2


def test_a_failed_invocation_goes_to_the_failure_location(s3_server):
    s3_server.s3.put_object(Bucket="async", Key="in/empty.json", Body=b'{"inputs": ""}')
    answer = _runtime(s3_server).invoke_endpoint_async(
        EndpointName="painter", InputLocation="s3://async/in/empty.json", InferenceId="empty-1"
    )
    note = _notification(s3_server, "empty-1")
    assert note["invocationStatus"] == "Failed" and "prompt" in note["failureReason"]
    assert note["failureLocation"] == answer["FailureLocation"]
    data, _ = _object(s3_server, answer["FailureLocation"])
    error = json.loads(data)["error"]
    assert error["type"] == "invalid_input" and error["field"] == "prompt"


def test_a_sagemaker_folder_with_an_inline_body(s3_server):
    answer = _runtime(s3_server).invoke_endpoint_async(
        EndpointName="echo",
        Body=b'{"inputs": "hello"}',
        ContentType="application/json",
        Accept="application/json",
        InferenceId="echo-1",
    )
    note = _notification(s3_server, "echo-1")
    assert note["invocationStatus"] == "Completed", note
    data, _ = _object(s3_server, answer["OutputLocation"])
    assert json.loads(data) == {"model": "echo", "got": {"inputs": "hello"}}


def test_file_inputs_only_under_the_allowed_folders(s3_server):
    (s3_server.tmp / "inputs" / "cat.json").write_text('{"inputs": "a cat"}')
    headers = {
        "X-Amzn-SageMaker-InputLocation": (s3_server.tmp / "inputs" / "cat.json").as_uri(),
        "X-Amzn-SageMaker-Content-Type": "application/json",
        "X-Amzn-SageMaker-Inference-Id": "cat-1",
    }
    r = s3_server.client.post("/async-invocations", headers=headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"InferenceId": "cat-1"}
    note = _notification(s3_server, "cat-1")
    assert note["invocationStatus"] == "Completed"
    outside = {**headers, "X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"}
    r = s3_server.client.post("/async-invocations", headers=outside)
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "ValidationError"
    sneaky = (s3_server.tmp / "inputs" / ".." / "jobs.db").as_uri()
    r = s3_server.client.post(
        "/async-invocations", headers={**headers, "X-Amzn-SageMaker-InputLocation": sneaky}
    )
    assert r.status_code == 400
    r = s3_server.client.post(
        "/async-invocations", headers={**headers, "X-Amzn-SageMaker-RequestTTLSeconds": "5"}
    )
    assert r.status_code == 400 and "RequestTTLSeconds" in r.json()["message"]
    r = s3_server.client.post("/async-invocations")
    assert r.status_code == 400 and "InputLocation" in r.json()["message"]
