"""The one settings object of a linevault process.

Built once at the edge (CLI or app factory) and passed down; domain code receives the
values it needs through constructors and never reads the environment itself.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.errors import Unprocessable
from vault.lines.expiry import parse_window  # the one parser of such windows

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every tunable of the service; environment variables carry the ``LINEVAULT_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="LINEVAULT_", extra="ignore", frozen=True)

    data_dir: Path = Path("./var")
    database_url: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8210, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable text when stderr is a terminal, JSON lines otherwise (files, collectors).
    log_format: Literal["auto", "text", "json"] = "auto"

    # Key provider ("root of trust").
    kms_provider: Literal["local", "pkcs11"] = "local"
    root_key: SecretStr | None = None  # base64; overrides the key file for the local provider
    root_key_file: Path | None = None  # default: <data_dir>/root.key
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = None
    pkcs11_key_label: str = "linevault-root"
    kek_cache_size: int = Field(default=10_000, ge=0)
    kek_cache_ttl_seconds: float = Field(default=300.0, ge=0)
    rewrap_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # Revoking or replacing a credential schedules a rotation of the tenant's KEK, at most
    # this long after the first such change (debounced; docs/keys.md). Each server
    # process checks for due rotations every ``revocation_rotation_poll_seconds``.
    revocation_rotation_delay_seconds: float = Field(default=600.0, ge=0, le=86_400)
    revocation_rotation_poll_seconds: float = Field(default=10.0, gt=0, le=3600)

    # Human sessions and second factor.
    session_idle_minutes: float = Field(default=30.0, gt=0)
    session_absolute_hours: float = Field(default=12.0, gt=0)
    mfa_fresh_minutes: float = Field(default=5.0, gt=0)
    mfa_token_ttl_seconds: int = Field(default=300, gt=0)
    # Account safety (docs/security.md): until a user has enrolled a second factor, or
    # has changed a password the vault generated for them, their sessions reach only the
    # account set-up routes (vault.authz.ACCOUNT_SETUP_PATHS).
    require_mfa: bool = True
    require_password_change: bool = True
    throttle_free_failures: int = Field(default=5, ge=1)
    throttle_max_delay_seconds: int = Field(default=900, ge=1)
    # The block after the last free failure; each further failure doubles it (to the max).
    throttle_first_delay_seconds: int = Field(default=1, ge=1)
    # argon2 runs at once at most budget / argon2's memory cost (19 MiB): 256 MiB -> 13;
    # a login that finds no slot within the wait is refused with 429.
    argon2_memory_budget_mib: int = Field(default=256, ge=19)
    argon2_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    # Failed unauthenticated requests (bad bearer tokens, bad runner client credentials,
    # failed logins) per client address and window: past the limit they get 429, and
    # after the first (unauth_audited_per_window) of a window they are audited as one
    # aggregated event per address and window.
    unauth_window_seconds: int = Field(default=60, ge=1, le=3600)
    unauth_failures_per_window: int = Field(default=60, ge=1)
    unauth_audited_per_window: int = Field(default=1, ge=1)

    # Runners.
    runner_token_ttl_seconds: int = Field(default=300, gt=0, le=86_400)
    runner_rate_limit_per_minute: int = Field(default=600_000, ge=1)
    lease_ttl_seconds: int = Field(default=60, ge=0)
    # Fetch decisions kept per process (0: every fetch reads the database; see
    # docs/architecture.md, "The hot path").
    fetch_cache_size: int = Field(default=10_000, ge=0)

    # Audit.
    audit_batch_max: int = Field(default=512, ge=1)
    # Under load, how long the group-commit writer waits for a batch to fill (0: never).
    audit_batch_linger_ms: float = Field(default=0.5, ge=0, le=50)
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=30.0, gt=0)
    # How far the head may run past its newest signed checkpoint before verification
    # fails: events, and seconds by event time. The checkpointer keeps the unsigned tail
    # below CHECKPOINT_EVERY events and CHECKPOINT_SECONDS (see docs/audit.md), so these
    # may not be smaller; the margin on the seconds covers clocks of several hosts.
    audit_max_unsigned_events: int = Field(default=1000, ge=1)
    audit_max_unsigned_seconds: float = Field(default=60.0, gt=0)
    # A directory outside the database (append-only storage the database's administrators
    # cannot write) where every signed checkpoint is also appended as a C2SP signed note.
    audit_anchor_dir: Path | None = None

    # Database timeouts: nothing waits on the database forever (docs/operations.md,
    # "Timeouts"). Connect: per host of the URL (libpq ``connect_timeout``). Statement:
    # PostgreSQL's ``statement_timeout`` and, for a server that stops answering at all,
    # TCP keepalives and ``tcp_user_timeout``; SQLite's busy timeout (waiting for the
    # write lock). Pool: waiting for a free connection of the process's pool. A request
    # that hits one of them gets 503 ``unavailable`` (``audit_unavailable`` when its audit
    # event could not be written in time). 0 turns the statement timeout off (migrations
    # of a very large database).
    db_connect_timeout_seconds: int = Field(default=5, ge=1, le=300)
    db_statement_timeout_seconds: float = Field(default=15.0, ge=0, le=3600)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    # Webhooks (docs/webhooks.md). Targets resolving to private, loopback or link-local
    # addresses are refused at creation and at every delivery unless this is true.
    webhook_allow_private: bool = False
    webhook_max_per_tenant: int = Field(default=10, ge=1, le=1000)
    # Each server process's dispatcher: how often it looks for due deliveries, how many
    # it sends at once, each request's timeout, and how long a claim holds before another
    # process may take the delivery over (a crashed sender's claim runs out).
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Retries: exponential backoff with jitter from the first delay up to the longest,
    # until the retry window (from the event) has passed; then the delivery is dead.
    webhook_retry_first_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=3 * 86_400.0, gt=0)
    # line.expiring: sent once per line and expiry, this long before expires_at; the
    # dispatcher scans for such lines every webhook_expiry_scan_seconds.
    webhook_expiring_window_seconds: float = Field(default=7 * 86_400.0, gt=0)
    webhook_expiry_scan_seconds: float = Field(default=300.0, gt=0)
    # Delivered and dead deliveries (and their attempts) are kept this long for the log.
    webhook_log_retention_days: float = Field(default=30.0, gt=0)

    # SQLite's page cache per connection and its memory-mapped reads, shared by every
    # connection of the process through the OS page cache (0: no mmap). A large database
    # read at random through SQLite's default 2 MB cache pays a system call per page.
    sqlite_cache_mib: int = Field(default=8, ge=1, le=4096)
    sqlite_mmap_mib: int = Field(default=1024, ge=0, le=65_536)

    # Platform connectors (docs/connectors.md). Base URLs are settings so that a local
    # stand-in can replace the platforms; PROVIDER_CHECKS=off makes no outbound call at
    # all (provider_status "not_checked"). Each check is bounded by the two timeouts, and
    # at most CONNECTOR_MAX_CONCURRENT outbound calls run at once per process (a call that
    # finds no slot within the connect timeout counts as "unreachable").
    provider_checks: bool = True
    telegram_api_url: str = "https://api.telegram.org"
    graph_api_url: str = "https://graph.facebook.com"
    instagram_api_url: str = "https://graph.instagram.com"
    connector_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    connector_read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    connector_max_concurrent: int = Field(default=8, ge=1, le=256)
    # The periodic check of every active line's credential with its platform, every this
    # many seconds per server process (0: off, the default).
    provider_check_interval_seconds: float = Field(default=0.0, ge=0, le=7 * 86_400)
    # The Instagram refresher (vault/lines/refresh.py): a token expiring within
    # INSTAGRAM_REFRESH_BEFORE (a window such as 10d, as ``expiring_within`` takes it)
    # and at least 24 h old is renewed, once per line across all processes. Each process
    # looks every INSTAGRAM_REFRESH_INTERVAL_SECONDS (0: off); a claim (lease) lasts
    # INSTAGRAM_REFRESH_LEASE_SECONDS; failed attempts wait from RETRY_FIRST up to
    # RETRY_MAX seconds (exponential, with jitter; the first delay is also the floor).
    instagram_refresh_before: str = "10d"
    instagram_refresh_interval_seconds: float = Field(default=600.0, ge=0, le=86_400)
    instagram_refresh_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    instagram_refresh_retry_first_seconds: float = Field(default=600.0, gt=0, le=86_400)
    instagram_refresh_retry_max_seconds: float = Field(default=6 * 3600.0, gt=0, le=7 * 86_400)

    # HTTP.
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated
    # addresses or networks, as uvicorn's forwarded_allow_ips). Unset: the headers are
    # ignored and the TCP peer is the client address, loopback included.
    trusted_proxies: str | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    threadpool_size: int = Field(default=64, ge=4, le=1024)

    @model_validator(mode="after")
    def _tail_covers_cadence(self) -> Settings:
        """A verifier stricter than the checkpointer would fail a healthy chain."""
        if self.audit_max_unsigned_events < self.audit_checkpoint_every:
            raise ValueError("audit_max_unsigned_events must be >= audit_checkpoint_every")
        if self.audit_max_unsigned_seconds < self.audit_checkpoint_seconds:
            raise ValueError("audit_max_unsigned_seconds must be >= audit_checkpoint_seconds")
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("webhook_lease_seconds must be > webhook_timeout_seconds")
        outbound = self.connector_connect_timeout_seconds + self.connector_read_timeout_seconds
        if self.instagram_refresh_lease_seconds <= outbound:
            raise ValueError(
                "instagram_refresh_lease_seconds must be > the connector connect + read timeouts"
            )
        return self

    @field_validator("instagram_refresh_before", mode="after")
    @classmethod
    def _refresh_window(cls, value: str) -> str:
        try:
            parse_window(value, field="instagram_refresh_before")
        except Unprocessable as exc:
            raise ValueError(exc.detail) from None
        return value

    @property
    def instagram_refresh_window(self) -> timedelta:
        """``instagram_refresh_before`` as a duration."""
        return parse_window(self.instagram_refresh_before, field="instagram_refresh_before")

    @field_validator(
        "data_dir", "root_key_file", "pkcs11_pin_file", "audit_anchor_dir", mode="after"
    )
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL: the configured one, or SQLite inside the data dir."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'linevault.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.root_key_file or self.data_dir / "root.key"
