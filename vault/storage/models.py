"""Every table of linevault, as SQLAlchemy 2.x typed models.

Secret material lives only in the ``LargeBinary`` columns that hold envelopes
(``wrapped``, ``wrapped_dek``, ``ciphertext``, ``totp_secret_enc``); every other column is
metadata that may be read by operators and reviewers. Hashes of tokens are stored, never
tokens. Schema changes go through an Alembic migration in ``migrations/versions``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vault.storage.types import UTCDateTime

__all__ = [
    "AuditCheckpoint",
    "AuditEventRow",
    "AuditHead",
    "AuthzEpoch",
    "Base",
    "Grant",
    "GrantLine",
    "IntegrityState",
    "Kek",
    "KeyRotation",
    "KeyRotationRequest",
    "Line",
    "Membership",
    "MfaChallenge",
    "RecoveryCode",
    "RefreshLease",
    "Runner",
    "RunnerToken",
    "RunnerUsage",
    "Session",
    "SystemSecret",
    "Tenant",
    "Throttle",
    "User",
    "Webhook",
    "WebhookAttempt",
    "WebhookDedupe",
    "WebhookDelivery",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


ID = String(40)


# --- keys -----------------------------------------------------------------------------


class SystemSecret(Base):
    """Service-wide secrets (audit signing key, HMAC key, TOTP key), wrapped by the root."""

    __tablename__ = "system_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    root_key_id: Mapped[str] = mapped_column(String(128))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    public: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Kek(Base):
    """One version of a tenant's key-encryption key, wrapped by the root key.

    ``wrapped`` is set to NULL when the version is destroyed (crypto-shredding); the row
    stays as a tombstone so the audit trail and rotations can still name it.
    """

    __tablename__ = "keks"
    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # active | retired | destroyed
    root_key_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KeyRotation(Base):
    """Progress of a tenant KEK rotation, so a rewrap resumes after a crash."""

    __tablename__ = "key_rotations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID, index=True)
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running | done
    rewrapped: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KeyRotationRequest(Base):
    """A tenant whose KEK must be rotated because a credential was revoked or replaced.

    Debounced: the first request sets ``due_at``, later ones keep it. A server's scheduler
    deletes the row and starts the rotation in one transaction (``vault/keys/schedule.py``).
    """

    __tablename__ = "key_rotation_requests"
    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IntegrityState(Base):
    """One row: when rows older than their MAC columns were stamped (``None``: not yet)."""

    __tablename__ = "integrity_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    macs_backfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the audit head was first sealed with its MAC (migration 0004f).
    head_sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- tenants, users ---------------------------------------------------------------------


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    active_kek_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # active | suspended (vault/lines/states.py): a suspended tenant's lines are not
    # served. Read by the fetch's one SQL read; a change moves the authorization epoch.
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    platform_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_pending_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_enrolled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    credentials_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The vault generated the password for someone else: it must be changed first.
    password_change_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Session(Base):
    """A human session; only the SHA-256 of its 256-bit token is stored."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    mfa_fresh_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Where it was opened, shown to its user (GET /v1/me/sessions).
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)


class MfaChallenge(Base):
    """The short-lived ``mfa_token`` between a correct password and the TOTP code."""

    __tablename__ = "mfa_challenges"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Throttle(Base):
    """Failure counters per account and per client, shared by every server process."""

    __tablename__ = "throttles"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Membership(Base):
    __tablename__ = "memberships"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- lines and credentials --------------------------------------------------------------


class Line(Base):
    """A connected chat line and its current credential version.

    Only the current version is kept: replacing a credential overwrites the envelope, and
    revoking it sets ``wrapped_dek`` and ``ciphertext`` to NULL (crypto-shredding).
    """

    __tablename__ = "lines"
    __table_args__ = (Index("ix_lines_tenant_kek", "tenant_id", "kek_version"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # active | suspended | revoked
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kek_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # HMAC over (id, tenant, status, version) under a root-derived key
    # (vault/keys/integrity.py): a status flipped by direct SQL is refused by the fetch.
    status_mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # What the platform says the credential belongs to (vault/connectors), as JSON text,
    # and the outcome of the last check: ok | unverified | invalid | refresh_failing |
    # not_checked. Never any secret.
    account: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    provider_status: Mapped[str] = mapped_column(
        String(16), default="not_checked", server_default="not_checked"
    )
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RefreshLease(Base):
    """Who may refresh a line's platform token now (vault/lines/refresh.py).

    One row per line, claimed by one conditional upsert: a claim succeeds only when the
    previous lease has run out, and every claim adds one to ``fencing``. The commit of a
    refreshed token checks ``owner`` and ``fencing`` in its own transaction, so a holder
    whose lease ran out and was taken over can never commit. ``failures`` and
    ``next_attempt_at`` are the background refresher's back-off after failed attempts.
    """

    __tablename__ = "refresh_leases"
    line_id: Mapped[str] = mapped_column(
        ForeignKey("lines.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(64))
    fencing: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- runners and grants -----------------------------------------------------------------


class Runner(Base):
    __tablename__ = "runners"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RunnerToken(Base):
    """A short-lived runner access token; only its keyed hash is stored."""

    __tablename__ = "runner_tokens"
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"))
    all_lines: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # "full" (the fetch returns the whole credential) or "use" (no signing material; the
    # runner signs through the vault). Migration 0005b; copied to each grant_lines row.
    access: Mapped[str] = mapped_column(String(8), default="full", server_default="full")


class GrantLine(Base):
    """One (runner, tenant, line-or-*) entry of a grant, shaped for the fetch lookup."""

    __tablename__ = "grant_lines"
    __table_args__ = (Index("ix_grant_lines_lookup", "runner_id", "tenant_id", "line_id"),)
    grant_id: Mapped[str] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), primary_key=True
    )
    line_id: Mapped[str] = mapped_column(ID, primary_key=True)  # a line id or "*"
    tenant_id: Mapped[str] = mapped_column(ID)
    runner_id: Mapped[str] = mapped_column(ID)
    # The grant's access ("full" | "use"), read by the fetch in its one SQL read.
    access: Mapped[str] = mapped_column(String(8), default="full", server_default="full")
    # HMAC over (grant, tenant, runner, line, access) under a root-derived key
    # (vault/keys/integrity.py): an injected or edited row is refused by the fetch.
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class RunnerUsage(Base):
    """Fetches per runner per minute, summed by the audit writer for cross-process limits."""

    __tablename__ = "runner_usage"
    runner_id: Mapped[str] = mapped_column(ID, primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


# --- audit ------------------------------------------------------------------------------


class AuditHead(Base):
    """The single row every chain append locks: last sequence number and hash, and the
    MAC over both that every append sets (``vault.audit.chain.HeadSeal``)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuthzEpoch(Base):
    """One counter that every change to fetch authorization state moves (by triggers).

    The fetch path caches its authorization decisions in memory and the audit writer
    checks this counter in the same statement that writes the fetch's event: a decision
    made under an older value is thrown away and made again from the database, so a
    revocation committed anywhere is honoured by the next request in every process.
    Triggers (migration 0002) move it on UPDATE/DELETE of every table the fetch reads.
    """

    __tablename__ = "authz_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_seq", "tenant_id", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_resource", "resource_id", "seq"),
        Index("ix_audit_events_actor", "actor_id", "seq"),
        Index("ix_audit_events_ts", "ts"),
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tenant_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    resource_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed (seq, hash) statement over the chain, verifiable with the public key."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (UniqueConstraint("seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


# --- webhooks (vault/webhooks/) ---------------------------------------------------------


class Webhook(Base):
    """A delivery target: a tenant's (``tenant_id``) or the platform's (NULL: every tenant).

    ``events`` is the subscribed event names, comma-separated with a leading and trailing
    comma (``,line.revoked,line.replaced,``) so a subscription is one ``LIKE``. The signing
    secret is sealed like a credential: a tenant's under a fresh DEK wrapped by the
    tenant's KEK (``kek_version``, ``wrapped_dek``), the platform's under a key derived
    from the root-protected HMAC secret (``kek_version`` NULL). Tenant deletion destroys
    the KEK, so a copied row opens nothing (``vault/keys/webhook_secrets.py``).
    """

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[str] = mapped_column(String(1000))
    kek_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """The transactional outbox: one event for one webhook, written with the change.

    ``seq`` orders deliveries; ``order_key`` (the line, else the tenant) keeps one line's
    events in order. A dispatcher claims a due row by setting ``claimed_by`` and
    ``lease_until`` with a conditional UPDATE; a crashed claimer's lease runs out.
    ``event_id`` is the ``webhook-id`` header, the same on every retry.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "webhook_id", "order_key", "seq"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    webhook_id: Mapped[str] = mapped_column(ID)
    tenant_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    event_type: Mapped[str] = mapped_column(String(64))
    order_key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One delivery attempt and its outcome, for the delivery log."""

    __tablename__ = "webhook_attempts"
    delivery_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ID, index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookDedupe(Base):
    """Events sent at most once per key (``line.expiring`` per line and expiry)."""

    __tablename__ = "webhook_dedupe"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
