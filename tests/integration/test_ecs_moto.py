"""prefect-aws's ECS worker runs a GPU entrypoint of an `ecs` pool against moto's ECS: the task
definition it registers carries the entrypoint's image, CPU, memory and GPU, and the task it
starts runs JobCloud's in-container command on EC2 (Fargate has no GPUs).

moto refuses `run_task` until an EC2 container instance is registered in the cluster, so one
is, as prefect-aws's own tests do. No Prefect server is needed: the worker's `run` gets the job
configuration that the pool's template and the deployment's job variables render to.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.ec2 import utils as ec2_utils
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from jobcloud.deployments.pools.resources import deployment_job_variables
from jobcloud.deployments.pools.templates import IN_CONTAINER_COMMAND
from jobcloud.deployments.pools.work_pools import base_job_template, pool_env

pytestmark = pytest.mark.integration

REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobcloud/torchfit:1"


class NoClient:
    """Prefect's client where none may be used: the template holds no block references."""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JOBCLOUD_STORAGE", "s3://lab/jobs")
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        ecs = session.client("ecs")
        ecs.create_cluster(clusterName="default")
        ec2 = session.resource("ec2")
        image_id = ec2.meta.client.describe_images()["Images"][0]["ImageId"]
        instance = ec2.create_instances(ImageId=image_id, MinCount=1, MaxCount=1)[0]
        document = json.dumps(ec2_utils.generate_instance_identity_document(instance))
        ecs.register_container_instance(cluster="default", instanceIdentityDocument=document)
        yield ecs


def configuration(flow_run: FlowRun) -> ECSJobConfiguration:
    template = base_job_template("gpu", pool_env("gpu", pool_type="ecs"), "ecs")
    values = deployment_job_variables("ecs", IMAGE, cpu=2, memory_mb=3000, gpus=1, timeout_s=3600)
    config = asyncio.run(ECSJobConfiguration.from_template_and_values(template, values, client=NoClient()))
    config.prepare_for_flow_run(flow_run)
    return config


def test_the_ecs_worker_registers_the_gpu_task_definition(aws: Any) -> None:
    flow_run = FlowRun(id=uuid.uuid4(), name="job-1", flow_id=uuid.uuid4())
    config = configuration(flow_run)
    worker = ECSWorker(work_pool_name="gpu")
    # The worker's run logs would go to a Prefect API (starting a temporary server): not here.
    with temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}):
        result = asyncio.run(worker.run(flow_run, config))
    cluster, task_arn = result.identifier.split("::")

    task = aws.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    taskdef = aws.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    container = taskdef["containerDefinitions"][0]
    assert container["image"] == IMAGE
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert (taskdef["cpu"], taskdef["memory"]) == ("2048", "3000")
    # EC2 launch: container-level CPU and memory as well (prefect-aws sets them from the task's).
    assert (container["cpu"], container["memory"]) == (2048, 3000)
    assert task["launchType"] == "EC2"
    override = task["overrides"]["containerOverrides"][0]
    assert override["command"] == IN_CONTAINER_COMMAND.split()
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert (env["JOBCLOUD_RUNNER"], env["JOBCLOUD_WATCH_CANCEL"], env["PREFECT__FLOW_RUN_ID"]) == ("process", "1", str(flow_run.id))
