"""The ``ray:`` section of config.yaml: how a package's model deployment runs on Ray Serve.

Kept apart from the rest of the config so that what it means sits with the code that uses
it; ``impasto deploy ray`` flags override it. Unknown keys of ``autoscaling_config`` and
``ray_actor_options`` are passed to Ray as they are (Ray validates them too).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AutoscalingConfig(BaseModel):
    """Ray Serve's ``autoscaling_config``; the fields impasto checks, the rest passed on."""

    model_config = ConfigDict(extra="allow")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        description="Requests in flight per replica (queued in its runner or running) that "
        "autoscaling aims at (default: what its slots run at once, so a queue means scale up).",
    )
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        return self


class ActorOptions(BaseModel):
    """Ray's ``ray_actor_options`` for each replica (``num_cpus`` may be a fraction)."""

    model_config = ConfigDict(extra="allow")

    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory: int | None = Field(None, ge=0, description="Bytes of memory Ray reserves.")
    resources: dict[str, float] | None = None

    @model_validator(mode="after")
    def _no_secret_env(self) -> ActorOptions:
        env = ((self.model_extra or {}).get("runtime_env") or {}).get("env_vars") or {}
        leaked = [k for k in env if str(k).startswith("IMPASTO_SECRET_")]
        if leaked:
            raise ValueError(
                f"runtime_env.env_vars would show {', '.join(leaked)} in Ray's dashboard; "
                "secrets reach replicas sealed by `impasto deploy ray`"
            )
        return self


class RayConfig(BaseModel):
    """How the model deployment of this package runs on Ray Serve."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(None, ge=1, description="Fixed replicas (default 1).")
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        description="Requests Ray sends one replica at once (default: what its runner holds, "
        "predict_concurrency (times max_batch_size when it batches) + max_queue, so requests "
        "wait in the runner, where they batch, and it never refuses what Ray sent).",
    )
    max_queued_requests: int | None = Field(
        None,
        ge=-1,
        description="Requests Ray's router holds while every replica is full, before 429 "
        "(default: runtime.max_queue, at least 1; -1: no limit).",
    )
    ingress_replicas: int = Field(1, ge=1, description="Replicas of the HTTP ingress.")
    ingress_actor_options: ActorOptions = Field(
        default_factory=lambda: ActorOptions(num_cpus=0.5),
        description="Ray actor options of the ingress (it only reads and writes requests).",
    )
    ingress_max_ongoing_requests: int = Field(
        1000, ge=1, description="Requests one ingress replica handles at once."
    )

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> RayConfig:
        if self.max_queued_requests == 0:
            raise ValueError(
                "max_queued_requests: 0 makes Ray refuse every request; use -1 or more"
            )
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self

    def actor_options(self) -> dict[str, Any]:
        return self.ray_actor_options.model_dump(exclude_none=True)
