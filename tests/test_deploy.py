"""The deployment's definition, without a server: prefect.yaml (for workers) and flows/deploy.py
(for `mnist-pipeline serve`) describe the same deployment, and the DVC remote is a folder
beside the repository. The real server, serve process and runs are in test_deploy_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows import deploy
from flows.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def nightly(prefect_yaml) -> dict:
    (only,) = prefect_yaml["deployments"]
    return only


def test_prefect_yaml_is_what_prefect_deploy_reads(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(prefect_yaml)


def test_prefect_yaml_and_serve_define_the_same_deployment(nightly):
    assert nightly["name"] == deploy.DEPLOYMENT_NAME
    assert nightly["schedules"] == [{"cron": deploy.DEFAULT_CRON, "timezone": deploy.DEFAULT_TIMEZONE, "active": True}]
    assert nightly["concurrency_limit"] == {
        "limit": deploy.CONCURRENCY_LIMIT,
        "collision_strategy": deploy.DEFAULT_COLLISION,
    }
    assert nightly["tags"] == deploy.TAGS
    served = deploy.deployment_parameters(REPO)
    assert nightly["parameters"] == {**served, "root": "."}  # a worker runs in the checkout itself


def test_prefect_yaml_entrypoint_is_the_flow(nightly):
    from flows.pipeline import mnist_pipeline

    path, name = nightly["entrypoint"].split(":")
    assert (REPO / path).resolve() == Path(mnist_pipeline.fn.__code__.co_filename).resolve()
    assert name == mnist_pipeline.fn.__name__


def test_deployment_allows_one_run_and_enqueues_the_next():
    config = deploy.concurrency()
    assert (config.limit, config.collision_strategy.value) == (1, "ENQUEUE")
    assert deploy.concurrency("CANCEL_NEW").collision_strategy.value == "CANCEL_NEW"


def test_flow_pulls_and_pushes_only_when_asked():
    from flows.pipeline import mnist_pipeline

    properties = mnist_pipeline.parameters.properties
    assert properties["pull"]["default"] is False
    assert properties["push"]["default"] is False
    assert deploy.deployment_parameters(REPO) == {"root": str(REPO), "pull": True, "push": True}


def test_serve_command_defaults_to_the_nightly_schedule():
    args = build_parser().parse_args(["serve"])
    assert (args.cron, args.timezone, args.name, args.collision, args.paused) == (
        "0 2 * * *",
        "UTC",
        "nightly",
        "ENQUEUE",
        False,
    )
    args = build_parser().parse_args(["serve", "--cron", "*/5 * * * *", "--collision", "CANCEL_NEW"])
    assert (args.cron, args.collision) == ("*/5 * * * *", "CANCEL_NEW")


def test_serve_refuses_to_run_without_a_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(RuntimeError, match="PREFECT_API_URL"):
        deploy.check_api_url()


def test_default_dvc_remote_is_a_folder_beside_the_repository():
    from configobj import ConfigObj  # what DVC reads .dvc/config with

    config = ConfigObj(str(REPO / ".dvc/config"))
    name = config["core"]["remote"]
    url = config[f'remote "{name}"']["url"]
    assert "://" not in url and not Path(url).is_absolute(), "a committed absolute path breaks other clones"
    assert (REPO / ".dvc" / url).resolve() == (REPO.parent / "mnist-dvc-remote").resolve()  # relative to .dvc/
