"""Configuration from ``FLOWKIT_*`` environment variables, read once and passed down."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob flowkit reads from the environment (prefix ``FLOWKIT_``)."""

    model_config = SettingsConfigDict(env_prefix="FLOWKIT_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis URL shared by drivers and workers. Unset: start or reuse the embedded "
                    "server under FLOWKIT_HOME and local workers.")
    home: Path = Field(
        default=Path("~/.flowkit"),
        description="Folder of the embedded server's data, its secret key and its logs.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs task envelopes. Unset: a key created in FLOWKIT_HOME. "
                    "Every driver and worker sharing a Redis must use the same key.")
    default_queue: str = Field(default="default",
                               description="Queue of tasks with no `queue` option.")
    local_workers: int = Field(
        default=0, ge=0,
        description="Executor processes the embedded default starts; 0 means one per CPU core.")
    start_local_workers: bool = Field(
        default=True,
        description="With the embedded server, start local workers when none serves a queue.")
    result_ttl_seconds: int = Field(
        default=7 * 24 * 3600, gt=0, description="How long task results stay in Redis.")
    inline_result_bytes: int = Field(
        default=64 * 1024, ge=0,
        description="Results up to this size travel inside the completion message (no extra GET).")
    run_retention_days: float = Field(
        default=30.0, ge=0,
        description="Flow runs that ended longer ago than this are deleted with their task runs "
                    "and logs by the workers (swept at least once a minute, by one worker at a "
                    "time); 0 keeps them forever. `flowkit run prune` does it on demand.")
    connect_timeout: float = Field(default=3.0, gt=0,
                                   description="Seconds to open a Redis connection.")
    socket_timeout: float = Field(default=10.0, gt=0,
                                  description="Seconds any Redis reply may take.")
    heartbeat_seconds: float = Field(default=2.0, gt=0, description="Worker heartbeat period.")
    lease_seconds: float = Field(
        default=15.0, ge=1.0, le=300.0,
        description="A running attempt whose worker has not renewed its lease for this long is "
                    "presumed dead and runs again elsewhere (renewed every heartbeat).")
    max_crashes: int = Field(
        default=3, ge=1,
        description="Crashes (executor killed, lease expired) before a task run is "
                    "dead-lettered instead of retried.")
    hard_timeout_grace_seconds: float = Field(
        default=1.0, gt=0,
        description="After timeout_seconds, a task that ignored the soft interrupt gets this "
                    "long before its executor process is killed and replaced.")
    partition_tolerance_seconds: float = Field(
        default=300.0, gt=0,
        description="How long a driver waiting on work rides out a lost connection to Redis "
                    "before failing its futures; a flow run whose driver is silent longer is "
                    "ended CRASHED.")
    max_argument_bytes: int = Field(
        default=32 << 20, gt=0,
        description="A task call whose pickled arguments are larger than this is refused at "
                    "submit (pass a path or URL to the data instead).")
    stop_grace_seconds: float = Field(
        default=30.0, ge=0,
        description="A stopping worker (SIGTERM, `flowkit worker stop`) lets running tasks "
                    "finish for this long, then hands them back to the front of their queues "
                    "and exits 0. `flowkit worker start --grace` overrides it.")
    allow_eviction: bool = Field(
        default=False,
        description="Use a Redis whose maxmemory-policy can evict flowkit's keys (allkeys-*, "
                    "volatile-*), with a warning; by default drivers and workers refuse it.")
    echo_logs: bool = Field(default=True, description="Drivers echo run log lines to stderr.")
    server_port: int = Field(default=6390, gt=0, lt=65536,
                             description="TCP port the embedded server listens on when free.")

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def executor_count(self) -> int:
        """Executors for local workers: the setting, or one per CPU core."""
        return self.local_workers or (os.cpu_count() or 1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process."""
    return Settings()
