"""Models, one module per area; each area's module is imported here so Django finds it."""

from .access import AccessGroup, AccessRule, RobotAccount, TokenAuthFailure  # noqa: F401
from .api_tokens import ApiToken  # noqa: F401
from .audit import (  # noqa: F401
    AuditEvent,
    DailyActivity,
    DeliveryCounter,
    PendingEvent,
    PortalAction,
    RejectedDelivery,
)
from .deletes import PortalPlaceholder, UntaggedManifest  # noqa: F401
from .directory import CliSecret, DirectoryIdentity  # noqa: F401
from .hooks import EventHook, EventKind, HookDelivery  # noqa: F401
from .index import Manifest, Repository, Tag  # noqa: F401
from .metrics import MetricCounter  # noqa: F401
from .pulls import PullCount  # noqa: F401
from .quotas import Quota, QuotaSample  # noqa: F401
from .recycle_bin import BinBlob, BinItem, BinManifest  # noqa: F401
from .retention import RetentionRule  # noqa: F401
from .roles import Roles  # noqa: F401
from .runs import JobKind, JobLease, Run, WorkerHeartbeat  # noqa: F401
from .storage import (  # noqa: F401
    CollectedBlob,
    ManifestReferences,
    RepositoryStorage,
    StorageSnapshot,
)
