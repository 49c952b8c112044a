"""The adapters every part of a process shares: settings mapped to the database, the object
store, the secret box, the event hub and the metrics registry."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

from config.errors import ConfigError
from config.settings import Settings
from ingest.egress import EgressPolicy
from runtime.hub import EventHub
from storage.db import Database
from storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from storage.secrets import SecretBox, secret_box

log = logging.getLogger(__name__)


def build_object_store(settings: Settings) -> ObjectStore:
    """The configured object store (local directory or S3/MinIO)."""
    if settings.storage.backend == "local":
        return LocalObjectStore(settings.objects_path)
    s3 = settings.storage.s3
    if not s3.endpoint or s3.access_key is None or s3.secret_key is None:
        raise ConfigError(
            "storage.backend is s3 but the S3 endpoint or keys are missing: set "
            "XUELIANG_STORAGE__S3__ENDPOINT, …__ACCESS_KEY and …__SECRET_KEY"
        )
    return S3ObjectStore(
        endpoint=s3.endpoint,
        access_key=s3.access_key.get_secret_value(),
        secret_key=s3.secret_key.get_secret_value(),
        bucket=s3.bucket,
        secure=s3.secure,
        region=s3.region,
    )


@dataclass
class Services:
    """Long-lived adapters shared by the routes and the workers of one process."""

    settings: Settings
    db: Database
    objects: ObjectStore
    secrets: SecretBox
    hub: EventHub = field(default_factory=EventHub)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url, settings.database.pool_size)
        return cls(
            settings=settings,
            db=db,
            objects=build_object_store(settings),
            secrets=secret_box(settings.secrets, settings.camera_key_file),
        )

    started: bool = False

    @cached_property
    def egress(self) -> EgressPolicy:
        """Where this process may connect on API users' behalf (``egress`` settings)."""
        return EgressPolicy.from_settings(self.settings)

    def start(self) -> None:
        """Migrate the database and check the object store; raise a clear error if either fails."""
        if self.started:
            return
        self.db.migrate()
        self.objects.check()
        log.info("database %s ready; objects in %s", self.db.dialect, self.objects.describe())
        self.started = True

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A transaction; SSE streams of this process are woken after it commits."""
        with self.db.session() as session:
            yield session
        self.hub.notify()

    def close(self) -> None:
        self.db.dispose()
