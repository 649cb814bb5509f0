"""Orchestry's state: tables and the queries that belong to them. No Docker, no HTTP here."""

from orchestry.models.apps import App, AppRevision
from orchestry.models.base import Base
from orchestry.models.cluster import ControllerNode, LeaderLease
from orchestry.models.edge import AcmeAccount, AcmeChallenge, Certificate, EdgeState
from orchestry.models.events import Event
from orchestry.models.health import HealthProbe
from orchestry.models.installation import Installation
from orchestry.models.jobs import Job
from orchestry.models.metrics import MetricSample
from orchestry.models.registries import RegistryCredential
from orchestry.models.replicas import Replica
from orchestry.models.routing import RoutingState
from orchestry.models.scaling import ScalingDecisionRow
from orchestry.models.secrets import Secret
from orchestry.models.tokens import ApiToken
from orchestry.models.webhooks import Webhook, WebhookDelivery

__all__ = [
    "AcmeAccount",
    "AcmeChallenge",
    "ApiToken",
    "App",
    "AppRevision",
    "Base",
    "Certificate",
    "ControllerNode",
    "EdgeState",
    "Event",
    "HealthProbe",
    "Installation",
    "Job",
    "LeaderLease",
    "MetricSample",
    "RegistryCredential",
    "Replica",
    "RoutingState",
    "ScalingDecisionRow",
    "Secret",
    "Webhook",
    "WebhookDelivery",
]
