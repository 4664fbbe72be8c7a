"""The ``ray:`` section and the Ray Serve options `impasto deploy ray` derives from a
package: which layer queues, what autoscaling aims at, flags over config. No Ray needed."""

from __future__ import annotations

import pytest

from conftest import PACKAGES
from impasto.config import parse_config
from impasto.errors import ConfigError
from impasto.package import load_package
from impasto.ray.deploy import DeployOptions, job_share, model_options, parse_autoscale
from impasto.ray.secrets import Sealed
from ray_fixtures import package_copy


def test_the_runner_is_the_one_queue_by_default():
    options = model_options(load_package(PACKAGES / "ray_gate"), DeployOptions())
    # one slot, max_queue 0: Ray sends a replica one request; its router holds one more
    assert options["max_ongoing_requests"] == 1
    assert options["max_queued_requests"] == 1
    assert options["num_replicas"] == 2  # from the ray: section
    assert options["ray_actor_options"] == {"num_cpus": 0.25}


def test_a_batched_endpoint_holds_a_batch_per_slot(tmp_path):
    folder = package_copy(
        tmp_path,
        "batcher",
        runtime={"predict_concurrency": 2, "max_queue": 10},
        batching={"enabled": True, "max_batch_size": 4},
    )
    options = model_options(load_package(folder), DeployOptions(autoscale=(1, 3)))
    assert options["max_ongoing_requests"] == 2 * 4 + 10
    assert options["max_queued_requests"] == 10
    # autoscaling aims at what the slots run at once: a queue means more replicas
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 8,
    }
    assert "num_replicas" not in options


def test_flags_override_the_section(tmp_path):
    folder = package_copy(
        tmp_path,
        ray={
            "num_replicas": None,
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 3},
        },
    )
    package = load_package(folder)
    flags = DeployOptions(autoscale=(2, 6), gpus_per_replica=0.5, max_ongoing_requests=7)
    options = model_options(package, flags)
    assert options["autoscaling_config"]["max_replicas"] == 6
    assert options["autoscaling_config"]["upscale_delay_s"] == 3  # passed through
    assert options["ray_actor_options"]["num_gpus"] == 0.5
    assert options["max_ongoing_requests"] == 7
    fixed = model_options(package, DeployOptions(replicas=3))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    # two ingress replicas share the jobs of at most 6 replicas of one slot each
    assert job_share(package, flags, 2) == 3


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}, "not both"),
        ({"autoscaling_config": {"min_replicas": 4, "max_replicas": 2}}, "exceeds"),
        ({"max_queued_requests": 0}, "refuse every request"),
        (
            {"ray_actor_options": {"runtime_env": {"env_vars": {"IMPASTO_SECRET_TOKEN": "x"}}}},
            "dashboard",
        ),
        ({"num_replicas": 0}, "num_replicas"),
        ({"replicas": 2}, "ray.replicas"),
    ],
)
def test_a_bad_ray_section_names_the_key(section, words):
    with pytest.raises(ConfigError) as caught:
        parse_config({"ray": section})
    assert words in caught.value.message


@pytest.mark.parametrize("text", ["4", "3:1", "a:b", "0:0", ""])
def test_autoscale_takes_min_colon_max(text):
    with pytest.raises(ConfigError) as caught:
        parse_autoscale(text)
    assert caught.value.field == "autoscale"


def test_sealed_secrets_print_their_names_only():
    sealed = Sealed({"token": "hunter2"})
    assert "hunter2" not in repr(sealed) and "token" in str(sealed)
    import pickle

    assert pickle.loads(pickle.dumps(sealed)).open()["token"] == "hunter2"
