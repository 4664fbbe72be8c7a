"""The package's ``config.yaml`` as pydantic models.

Every key of the common model-package ``config.yaml`` layout is accepted, so existing
packages load unchanged; impasto's own sections (``runtime`` limits, ``batching``,
``media``, ``diffusers``, ``endpoints``) sit beside them. Unknown keys are kept and
reported as warnings, never a crash.
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .ray.config import RayConfig

log = logging.getLogger("impasto.config")


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data: Any) -> Any:
        """A key written with a ``null`` value means "not set" (tools write every optional
        key that way): it takes its default."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


_MEMORY = re.compile(r"^\d+(\.\d+)?([KMGTPE]i?|[kmgtpe])?$")


class Resources(_Section):
    """Hardware the model asks for; informs builds and deploys, and ``use_gpu`` device choice."""

    accelerator: str | None = Field(None, description="GPU kind and count, e.g. `H100:2`.")
    cpu: str | None = Field(None, description="CPU cores, e.g. `1` or `500m`.", examples=["4"])
    memory: str | None = Field(None, description="Memory with a unit.", examples=["30Gi"])
    use_gpu: bool = Field(False, description="Whether the model needs a GPU.")
    node_count: int | None = Field(None, ge=1)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("memory")
    @classmethod
    def _memory_unit(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError("must be a number with an optional unit such as 512Mi, 30Gi or 2G")
        return value


class Runtime(_Section):
    """How the runner schedules requests; every limit has a default here."""

    predict_concurrency: int = Field(1, ge=1, description="Predictions running at once.")
    max_queue: int = Field(64, ge=0, description="Requests waiting for a slot before 429.")
    predict_timeout_s: float | None = Field(
        None, gt=0, description="Per-request deadline in seconds (504 past it); none by default."
    )
    load_timeout_s: float | None = Field(None, gt=0, description="Give up on load() after this.")
    wait_for_load: bool = Field(
        False, description="Hold predict requests while loading instead of answering 503."
    )
    load_wait_s: float | None = Field(
        300,
        gt=0,
        description="With wait_for_load, how long a request waits for the model to load "
        "before 503 (None: until its own deadline).",
    )
    streaming_read_timeout: float = Field(60, gt=0, description="Longest gap between chunks.")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body.")
    max_json_depth: int = Field(
        64, ge=1, description="Deepest nesting of arrays and objects in a JSON body (400 beyond)."
    )
    input_workers: int = Field(
        4,
        ge=1,
        description="Threads that parse large bodies, fetch URLs, decode media and validate "
        "inputs, apart from the threads that run the model.",
    )
    max_log_bytes: int = Field(
        64 * 1024, ge=0, description="Log lines kept per prediction (oldest dropped first)."
    )
    max_request_items: int = Field(
        16,
        ge=1,
        description="Inputs one request may carry (KServe `instances`, a tensor batch, OpenAI "
        "`image[]`); each is its own prediction (400 beyond).",
    )
    shutdown_grace_s: float = Field(
        25,
        ge=0,
        description="On SIGTERM, how long in-flight predictions may finish before the rest are "
        "canceled (orchestrators send SIGKILL 30 s after SIGTERM).",
    )
    enable_tracing_data: bool = False
    truss_server_version: str | None = None
    is_websocket_endpoint: bool = False
    transport: dict[str, Any] | None = None
    health_checks: dict[str, Any] | None = None


class Batching(_Section):
    """Adaptive batching: merge concurrent requests that share a batch key."""

    enabled: bool = Field(True, description="Batch endpoints that support it.")
    max_batch_size: int = Field(8, ge=1, description="Items per model call.")
    max_wait_ms: float = Field(10.0, ge=0, description="How long a batch waits to fill.")
    max_batch_pixels: int = Field(
        8 * 512 * 512, ge=1, description="Pixel budget per batch (width*height*items)."
    )
    mode: Literal["static", "continuous"] = Field(
        "static",
        description=(
            "`static`: a batch runs from its first step to its last and later requests wait "
            "for it. `continuous` (diffusers UNet pipelines): requests join and leave a running "
            "denoising batch at every step, bounded by max_batch_size and max_batch_pixels; "
            "pipelines it cannot drive fall back to static."
        ),
    )


class MediaConfig(_Section):
    """Limits and defaults for media decode (inputs) and encode (outputs)."""

    max_part_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Bytes per media field.")
    max_pixels: int = Field(4096 * 4096, gt=0, description="Pixels per decoded image.")
    max_frames: int = Field(600, gt=0, description="Frames per decoded video.")
    max_decoded_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Decoded bytes (pixels x channels, frames included) across all media "
        "fields of one request.",
    )
    max_list_items: int = Field(
        16, ge=1, description="Items in one list-of-media field of a request."
    )
    allowed_content_types: list[str] | None = Field(
        None, description="Accepted upload content types (None: any image/video/audio type)."
    )
    allow_urls: bool = Field(False, description="Let clients send media as http(s) URLs.")
    url_timeout_s: float = Field(10.0, gt=0)
    allow_private_urls: bool = Field(
        False, description="Allow URLs that resolve to loopback/private addresses (tests only)."
    )
    image_format: Literal["png", "jpeg", "webp"] = Field("png", description="Default image format.")
    video_format: Literal["mp4", "gif", "webp"] = Field("mp4", description="Default video format.")
    quality: int = Field(90, ge=1, le=100, description="Default lossy quality.")
    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level for PNG (1: fast; 6 is Pillow's slow default)."
    )
    data_uri: bool = Field(False, description="JSON media as `data:` URIs instead of plain base64.")


class ModelCacheEntry(_Section):
    repo_id: str
    revision: str | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    volume_folder: str | None = None
    use_volume: bool | None = None


class ExternalDataItem(_Section):
    url: str
    local_data_path: str
    backend: str | None = None


class EndpointConfig(_Section):
    """A model method exposed as a route, listed in config instead of decorated."""

    method: str
    name: str | None = None
    route: str | None = None
    batchable: bool = False


class WarmupShape(BaseModel):
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)
    steps: int = Field(2, ge=1)
    task: str | None = None


class DiffusersLimits(_Section):
    """Bounds on generation inputs; violations are 422 naming the field."""

    max_prompt_chars: int = Field(2000, gt=0)
    max_steps: int = Field(150, ge=1)
    max_pixels: int = Field(1024 * 1024, gt=0, description="width*height per image.")
    max_side: int = Field(2048, ge=8)
    max_images: int = Field(4, ge=1, description="num_images per request.")
    max_frames: int = Field(50, ge=1)
    max_guidance: float = Field(30.0, gt=0)
    max_loras: int = Field(4, ge=0)


class DiffusersConfig(_Section):
    """Zero-code serving of a diffusers pipeline (no model.py needed)."""

    model: str = Field(..., description="Store ref (`sd21:latest`), local path, or hub id.")
    pipeline: str = Field("auto", description="Pipeline class name, or auto from model_index.json.")
    tasks: list[Literal["text2img", "img2img", "inpaint", "img2vid"]] | None = Field(
        None, description="Tasks to serve; default: what the pipeline supports."
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    device: Literal["auto", "cuda", "mps", "cpu"] | str = "auto"
    variant: str | None = None
    scheduler: str | None = Field(None, description="Default scheduler class name.")
    schedulers: list[str] | None = Field(None, description="Schedulers a request may choose.")
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: Literal[False, "model", "sequential"] | bool = False
    compile: bool = Field(False, description="torch.compile the UNet at load.")
    default_steps: int = Field(25, ge=1)
    default_guidance: float = Field(7.5, ge=0)
    default_width: int | None = None
    default_height: int | None = None
    limits: DiffusersLimits = Field(default_factory=DiffusersLimits)
    lora_cache_size: int = Field(4, ge=0)
    warmup: list[WarmupShape] = Field(default_factory=list)
    allow_pickle: bool = Field(False, description="Accept pickle weights (unsafe).")
    preview_every: int = Field(0, ge=0, description="Send a preview image every N steps over SSE.")


class WebhooksConfig(_Section):
    """How job webhooks are sent: signed per Standard Webhooks with the secret named
    ``secret`` (the secrets folder, or ``IMPASTO_SECRET_WEBHOOK_SECRET``); terminal events
    are retried with exponential backoff, their attempts kept in the job store."""

    allow_private_urls: bool = Field(
        False,
        description="Allow webhook URLs that resolve to loopback, private or link-local "
        "addresses (the same policy as `media.allow_private_urls`).",
    )
    secret: str = Field("webhook_secret", description="The secret that signs webhooks.")
    max_attempts: int = Field(12, ge=1, description="Tries of a terminal webhook.")
    backoff_s: float = Field(0.5, gt=0, description="First retry delay (doubles each time).")
    max_backoff_s: float = Field(300, gt=0, description="Longest delay between retries.")
    timeout_s: float = Field(10, gt=0, description="Time a receiver has to answer.")
    logs_interval_s: float = Field(
        0.5, ge=0, description="Least time between two `logs` webhooks of one job."
    )


class JobResultsConfig(_Section):
    """Where the media a job produces are kept, and how clients reach them."""

    url: str | None = Field(
        None,
        description="A folder or any fsspec URL (default: $IMPASTO_HOME/results).",
        examples=["s3://my-bucket/impasto-results"],
    )
    url_ttl_s: float = Field(
        3600, gt=0, description="Lifetime of the signed (or presigned) URLs given out."
    )
    max_inline_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="JSON outputs up to this size stay in the job; larger ones are stored as "
        "a file and referenced by URL.",
    )


class JobsConfig(_Section):
    """Durable asynchronous jobs (Cog's `Prefer: respond-async`, SageMaker's async
    invocations), kept in SQLite or PostgreSQL so that they survive restarts."""

    enabled: bool = Field(True, description="Serve asynchronous predictions.")
    url: str | None = Field(
        None,
        description="The job store: `sqlite:///path.db` (default $IMPASTO_HOME/jobs.db) or "
        "`postgresql+psycopg://user:password@host/db` for servers sharing one queue "
        "(`IMPASTO_JOBS_URL` overrides).",
    )
    max_queued: int = Field(1000, ge=1, description="Jobs waiting to run before 429.")
    max_attempts: int = Field(
        2, ge=1, description="Runs of a job whose server died under it, before it fails."
    )
    timeout_s: float | None = Field(3600, gt=0, description="Longest run of one job.")
    lease_s: float = Field(
        30,
        gt=0,
        description="A running job is its server's for this long past its last heartbeat; "
        "then another server (or this one, restarted) retries it.",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often a server looks for work submitted elsewhere."
    )
    progress_interval_s: float = Field(
        0.25, gt=0, description="How often progress and logs of running jobs are saved."
    )
    retention_s: float = Field(
        7 * 24 * 3600, gt=0, description="Finished jobs and their files are kept this long."
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        description="Jobs one server runs at once per model (default: what its slots and "
        "batches can run).",
    )
    results: JobResultsConfig = Field(default_factory=JobResultsConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)


class SageMakerConfig(_Section):
    """SageMaker asynchronous inference (`/async-invocations`): where inputs may be read
    from and where outputs, failures and notifications go."""

    async_output_path: str | None = Field(
        None,
        description="Where `<id>.out` is written: a folder or any fsspec URL (default "
        "$IMPASTO_HOME/async/output).",
        examples=["s3://my-bucket/async-out"],
    )
    async_failure_path: str | None = Field(
        None, description="Where failures are written (default $IMPASTO_HOME/async/failure)."
    )
    async_input_locations: list[str] | None = Field(
        None,
        description="URL prefixes `X-Amzn-SageMaker-InputLocation` may point under "
        "(default: any `s3://` object and $IMPASTO_HOME/async/input).",
    )
    async_notification_url: str | None = Field(
        None,
        description="Receives an SNS-shaped notification when an invocation ends "
        "(signed like job webhooks).",
    )
    async_max_body_bytes: int = Field(
        128_000, gt=0, description="Largest inline body (InvokeEndpointAsync's limit)."
    )


# Health, readiness and metrics routes of every protocol: answered without a key so probes
# keep working when API keys are on. ``*`` stands for one path segment; GET and HEAD only.
OPEN_ROUTES = (
    "/",
    "/health/*",
    "/ping",
    "/healthcheck",
    "/health-check",
    "/models/*/health-check",
    "/v1/models/*",
    "/v1/models/*/loaded",
    "/v2/health/*",
    "/v2/models/*/ready",
    "/v2/models/*/versions/*/ready",
    "/v1/images/results/*",
    "/files/*/*",  # job results: the signed URL is the credential
    "/metrics",
)


class AuthConfig(_Section):
    """API keys on every protocol. The keys themselves are never written here: they come
    from the secret ``api_keys`` (the secrets folder, or ``IMPASTO_SECRET_API_KEYS``) or
    ``IMPASTO_API_KEYS``, comma-separated so they can rotate; with none, auth is off."""

    open_routes: list[str] = Field(
        default_factory=lambda: list(OPEN_ROUTES),
        description="GET/HEAD paths answered without a key (`*`: one path segment).",
    )
    secret: str = Field("api_keys", description="The secret holding the comma-separated keys.")


class UIConfig(_Section):
    """The playground at ``/ui`` (needs ``pip install 'impasto[ui]'``)."""

    enabled: bool | None = Field(
        None,
        description="Serve the playground (default: when Gradio is installed and the server "
        "binds to loopback; `impasto serve --ui/--no-ui` overrides).",
    )


class PackageConfig(_Section):
    """A whole ``config.yaml``."""

    model_name: str | None = None
    description: str | None = None
    model_metadata: dict[str, Any] = Field(default_factory=dict)
    model_class_name: str = "Model"
    model_module_dir: str = "model"
    model_class_filename: str = "model.py"
    data_dir: str = "data"
    bundled_packages_dir: str = "packages"
    external_package_dirs: list[str] = Field(default_factory=list)
    python_version: str | None = Field(None, pattern=r"^py3\d{1,2}$|^3\.\d{1,2}$")
    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    system_packages: list[str] = Field(default_factory=list)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    runtime: Runtime = Field(default_factory=Runtime)
    model_cache: list[ModelCacheEntry] = Field(default_factory=list)
    external_data: list[ExternalDataItem] = Field(default_factory=list)
    spec_version: str | None = None
    apply_library_patches: bool | None = None
    base_image: dict[str, Any] | None = None
    docker_server: dict[str, Any] | None = None
    build: dict[str, Any] | None = None
    build_commands: list[str] = Field(default_factory=list)
    live_reload: bool | None = None
    trt_llm: dict[str, Any] | None = None
    examples_filename: str = "examples.yaml"
    # impasto's own sections
    batching: Batching = Field(default_factory=Batching)
    media: MediaConfig = Field(default_factory=MediaConfig)
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    diffusers: DiffusersConfig | None = None
    secrets_dir: str | None = Field(None, description="Folder of secret files (default /secrets).")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)  # `impasto deploy ray` (impasto.ray)

    @field_validator("ui", mode="before")
    @classmethod
    def _ui_flag(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) or value is None else value

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets_mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, list):  # a list of names is accepted too
            return {str(name): None for name in value}
        if isinstance(value, dict):
            return {str(k): (None if v is None else str(v)) for k, v in value.items()}
        return value

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value or {}

    @field_validator("python_version", mode="before")
    @classmethod
    def _py_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value

    def unknown_keys(self) -> list[str]:
        """Keys present in the file that no section of impasto knows, with their dotted path
        (not those left empty, such as ``weights: []`` or ``oidc: {enabled: null}``, nor
        Truss's platform keys at the values its tooling writes: they ask for nothing)."""
        return sorted(key for key, _ in self.typos())

    def typos(self) -> list[tuple[str, str | None]]:
        """Each unknown key (dotted path) with the closest key its section knows, if any."""
        sections: list[tuple[str, BaseModel]] = [("", self)]
        sections += [
            (f"{n}.", getattr(self, n)) for n in ("resources", "runtime", "batching", "ui", "auth")
        ]
        sections.append(("media.", self.media))
        sections += [("jobs.", self.jobs), ("jobs.results.", self.jobs.results)]
        sections += [("jobs.webhooks.", self.jobs.webhooks), ("sagemaker.", self.sagemaker)]
        if self.diffusers is not None:
            sections.append(("diffusers.", self.diffusers))
        found = []
        for prefix, section in sections:
            known = list(type(section).model_fields)
            for key, value in (section.model_extra or {}).items():
                if _empty(value) or _TRUSS_UNSET.get(f"{prefix}{key}", _NO) == value:
                    continue
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
                found.append((f"{prefix}{key}", f"{prefix}{close[0]}" if close else None))
        return sorted(found)


# Keys Truss's tooling writes for its platform, at the values it writes when they are not
# set: they ask for nothing, so they load without a warning (set otherwise, they are named).
_TRUSS_UNSET: dict[str, Any] = {
    "bdn": {"access": [], "hotload": {"enabled": False}, "mounts": []},
    "use_local_src": False,
    "input_type": "Any",
    "model_framework": "custom",
    "model_type": "Model",
    "runtime.enable_debug_logs": False,
    "runtime.remote_ssh": {"enabled": False},
}
_NO = object()


def _empty(value: Any) -> bool:
    """None, an empty string or collection, or a mapping of only such values."""
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    return value is None or (isinstance(value, str | list) and not value)


def parse_config(data: dict[str, Any] | None, *, source: str = "config.yaml") -> PackageConfig:
    """Validate a config mapping; invalid values raise :class:`ConfigError` naming key and value."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        config = PackageConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        raise ConfigError(
            f"{source}: invalid value for `{key}`: {value!r} ({err['msg']})", field=key
        ) from None
    for key, close in config.typos():
        hint = f" (did you mean `{close}`?)" if close else ""
        log.warning("%s: unknown key `%s` ignored%s", source, key, hint)
    return config


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> PackageConfig:
    """Read and validate ``config.yaml`` (a missing file means all defaults), with
    ``overrides`` (e.g. a models.yaml entry's) merged over it key by key."""
    data: Any = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = deep_merge(data, overrides)
    return parse_config(data, source=str(path))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
