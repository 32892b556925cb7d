"""One settings object, read from ``CAREPLAN_*`` environment variables at the edge and
passed inward. Nothing below the CLI reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREPLAN_", extra="ignore")

    #: Where SQLite files (and, later, the embedded NATS store) live.
    data_dir: Path = Path("careplan-data")
    #: ``sqlite`` (embedded default) or ``postgres`` (production).
    database: Literal["sqlite", "postgres"] = "sqlite"

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "careplan"
    postgres_password: SecretStr = SecretStr("")
    postgres_dbname: str = "careplan"
    #: Each application gets its own schema, named ``<prefix>_<application>``.
    postgres_schema_prefix: str = "careplan"
    postgres_pool_size: int = Field(default=5, ge=1)

    #: Base64 AES key (16, 24 or 32 bytes). When set, stored event state is encrypted.
    cipher_key: SecretStr | None = None
    #: Take a snapshot every N events of an aggregate (0 disables snapshots).
    snapshot_interval: int = Field(default=200, ge=0)
    #: Aggregates kept in memory per application (0 disables the cache).
    aggregate_cache_size: int = Field(default=1000, ge=0)

    def sqlite_path(self, application: str) -> Path:
        return self.data_dir / f"{application.lower()}.sqlite"

    def postgres_schema(self, application: str) -> str:
        return f"{self.postgres_schema_prefix}_{application.lower()}"
