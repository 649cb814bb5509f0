"""The typed app spec: frozen pydantic models with the camelCase names users write.

Models are strict (no `false` -> 0, no "5" -> 5) and ignore unknown keys, because unknown keys are
found and reported earlier (prepare.py) with their paths. Cross-field rules (minReplicas <= maxReplicas,
one HTTP port for an http app, ...) live in rules.py, so that every problem of a document is reported
even when some of its fields are invalid. Build an AppSpec through `validate_document`, which also fills
the defaults that depend on other fields (the health check port).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .fields import (
    AbsolutePath,
    AppName,
    Count,
    CpuMillicores,
    EnvName,
    HeaderName,
    HeaderValue,
    Hostname,
    HttpPath,
    ImageRef,
    LabelKey,
    LabelValue,
    MemoryBytes,
    MountPath,
    Percent,
    PlacementConstraint,
    PortName,
    PortNumber,
    PositiveSeconds,
    RoutePath,
    Seconds,
    SecretName,
    SpreadDescriptor,
    StatusCode,
    Target,
    Text,
    VolumeName,
)
from .whole import integral

SDK_KEYS = ("instance.ip", "instance.port", "app.name", "app.replicas")
SdkKey = Literal["instance.ip", "instance.port", "app.name", "app.replicas"]


class SpecModel(BaseModel):
    """Shared configuration: frozen, strict, camelCase aliases, unknown keys ignored."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", populate_by_name=True, alias_generator=to_camel)
    # A section, list or map given as null is "not given" (spec/prepare.py); the OpenAPI document says so.
    __null_is_absent__: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _integral(cls, data: Any) -> Any:
        return integral(cls, data)


class Metadata(SpecModel):
    name: AppName
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class Port(SpecModel):
    container_port: PortNumber
    protocol: Literal["HTTP", "TCP"] = "HTTP"
    name: PortName | None = None


class Resources(SpecModel):
    cpu_millicores: CpuMillicores | None = Field(default=None, alias="cpu")
    memory_bytes: MemoryBytes | None = Field(default=None, alias="memory")


class ValueFrom(SpecModel):
    """Where a value comes from instead of the spec: a secret set with `orchestry secret set NAME`."""

    secret: SecretName


class EnvVar(SpecModel):
    """A literal `value`, a value Orchestry fills in per replica (`source: sdk` with `key`), or a secret's value
    resolved when the replica starts (`valueFrom: {secret: NAME}`; the spec holds only the name)."""

    name: EnvName
    value: Text | None = None
    source: Literal["sdk"] | None = None
    key: SdkKey | None = None
    value_from: ValueFrom | None = None


class Volume(SpecModel):
    name: VolumeName
    mount_path: MountPath


class Workload(SpecModel):
    """The `spec` section: what to run."""

    type: Literal["http", "worker"] = "http"
    image: ImageRef
    ports: list[Port] = Field(default_factory=list)
    resources: Resources = Resources()
    environment: list[EnvVar] = Field(default_factory=list)
    command: list[Text] | None = Field(default=None, min_length=1)
    args: list[Text] | None = Field(default=None, min_length=1)
    working_dir: AbsolutePath | None = None
    volumes: list[Volume] = Field(default_factory=list)
    # Docker's --init: a tiny init as PID 1 that forwards SIGTERM, for images whose own PID 1 ignores it
    # (busybox httpd, shell entrypoints), which would otherwise wait out the whole grace period at every stop.
    # None: not given (the normalised spec, so its hash, is as before).
    init: bool | None = None


class Header(SpecModel):
    name: HeaderName
    value: HeaderValue


class HealthCheck(SpecModel):
    """`port` None only for an app without ports and no health check: its running container is healthy."""

    protocol: Literal["HTTP", "TCP"] = "HTTP"
    path: HttpPath = "/health"
    port: PortNumber | None = None
    method: Literal["GET", "POST"] = "GET"
    headers: list[Header] = Field(default_factory=list)
    body: Text = ""
    expected_status_codes: list[StatusCode] | None = Field(default=None, min_length=1)  # None: any 200..399
    initial_delay_seconds: Seconds = 0
    period_seconds: PositiveSeconds = 10
    timeout_seconds: PositiveSeconds = 5
    failure_threshold: Count = 3
    success_threshold: Count = 1


class Scaling(SpecModel):
    mode: Literal["auto", "manual"] = "auto"
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=5, ge=1)
    target_rps_per_replica: Target = Field(default=50, alias="targetRPSPerReplica")
    max_p95_latency_ms: Target = Field(default=250, alias="maxP95LatencyMs")
    max_cpu_percent: Percent = Field(default=70, alias="maxCPUPercent")
    max_memory_percent: Percent = 75
    max_conn_per_replica: Target = 100
    scale_out_threshold_pct: Percent = 80
    scale_in_threshold_pct: Percent = 30
    window_seconds: PositiveSeconds = 60
    cooldown_seconds: Seconds = 180
    max_scale_out_step: Count = 2
    max_scale_in_step: Count = 1
    stabilization_window_seconds: Seconds = 300
    # With minReplicas 0: no request and no open connection for this long scales the app to zero (its
    # requests then wake it). None: not given, 300 s (the normalised spec, so its hash, is as before).
    idle_seconds: PositiveSeconds | None = None


class Wake(SpecModel):
    """How an app at zero replicas (minReplicas 0) holds its first requests while it wakes: at most
    `maxQueuedRequests` held on each node (503 with Retry-After beyond), each for at most `timeoutSeconds`
    (then 503)."""

    max_queued_requests: Count = 100
    timeout_seconds: PositiveSeconds = 30


class Termination(SpecModel):
    drain_seconds: Seconds = 30
    grace_period_seconds: Seconds = 30


class Route(SpecModel):
    """A public route to the app beside `<app>.<domain>`: a host (IDNA, or `*.example.com`) and a path
    prefix (the longest matching prefix wins). `tls`: `off` (plain HTTP only), `auto` (a certificate from
    ACME), `custom` (one uploaded with `orchestry cert add`)."""

    host: Hostname
    path: RoutePath = "/"
    strip_prefix: bool = False
    tls: Literal["off", "auto", "custom"] = "off"
    redirect_http: bool = False
    hsts: bool = False


class Placement(SpecModel):
    """Where replicas may run, on the `swarm` runtime only (the `docker` runtime has one host): Swarm's
    constraints, a spread preference over a node label, and a cap of replicas per node."""

    constraints: list[PlacementConstraint] = Field(default_factory=list, max_length=32)
    spread: SpreadDescriptor | None = None
    max_replicas_per_node: Count | None = None


class Rollout(SpecModel):
    """How a new revision rolls out. `onFailure`: what happens when its new replicas do not become healthy:
    `halt` (the old revision keeps serving, the app is failed) or `rollback` (a new revision restores the
    one the old replicas run, and rolls out)."""

    on_failure: Literal["halt", "rollback"] = "halt"


class AppSpec(SpecModel):
    """One app as registered: `healthCheck` always at the root, `env` folded into `spec.environment`."""

    api_version: Literal["v1"]
    kind: Literal["App"]
    metadata: Metadata
    spec: Workload
    health_check: HealthCheck = HealthCheck()
    scaling: Scaling = Scaling()
    termination: Termination = Termination()
    routes: list[Route] = Field(default_factory=list, max_length=100)
    default_route: bool = True  # False: no `<app>.<domain>` and no `/<app>/` on the bare proxy
    placement: Placement | None = None  # absent stays absent: specs without it keep their content hash
    rollout: Rollout | None = None  # None: not given (the normalised spec, so its hash, is as before)
    wake: Wake | None = None  # None: not given, the defaults (as `rollout`)
