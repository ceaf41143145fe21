"""The permission table itself: every permission has a row, rows name known roles, and a
permission without a row is allowed to nobody (deny by default)."""

from __future__ import annotations

import pytest

from vault import authz
from vault.authz import (
    PLATFORM_PERMISSIONS,
    PLATFORM_ROLES,
    RUNNER_PERMISSIONS,
    TENANT_PERMISSIONS,
    TENANT_ROLES,
    Permission,
    PlatformPermission,
    RunnerPermission,
    UserPrincipal,
    authorize,
    authorize_platform,
    platform_allows,
)
from vault.errors import Forbidden, NotFound

TENANT = "tnt_1"


def person(
    *, role: str | None = None, platform_role: str | None = None, tenant: str = TENANT
) -> UserPrincipal:
    return UserPrincipal(
        user_id="usr_1",
        email="p@example.test",
        platform_role=platform_role,  # type: ignore[arg-type]
        session_id="ses_1",
        mfa_fresh=True,
        tenant_roles={tenant: role} if role else {},
    )


EVERY_PERSON = [
    *(person(role=role) for role in TENANT_ROLES),
    *(person(platform_role=role) for role in PLATFORM_ROLES),
]


def test_every_permission_has_a_row_of_known_roles() -> None:
    assert set(TENANT_PERMISSIONS) == set(Permission)
    assert set(PLATFORM_PERMISSIONS) == set(PlatformPermission)
    assert set(RunnerPermission) == RUNNER_PERMISSIONS
    for roles in TENANT_PERMISSIONS.values():
        assert roles <= set(TENANT_ROLES)
    for roles in PLATFORM_PERMISSIONS.values():
        assert roles <= set(PLATFORM_ROLES)


def drop_row(monkeypatch: pytest.MonkeyPatch, table: str, permission: object) -> None:
    rows = dict(getattr(authz, table))
    del rows[permission]
    monkeypatch.setattr(authz, table, rows)


def test_a_tenant_permission_without_a_row_is_allowed_to_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop_row(monkeypatch, "TENANT_PERMISSIONS", Permission.LINE_READ)
    for who in EVERY_PERSON:
        # A role in the tenant (or a platform role): the row is missing, so Forbidden.
        with pytest.raises(Forbidden):
            authorize(who, TENANT, Permission.LINE_READ)
    # The other rows still answer.
    assert authorize(person(role="member"), TENANT, Permission.TENANT_READ) == "member"


def test_a_platform_permission_without_a_row_is_allowed_to_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop_row(monkeypatch, "PLATFORM_PERMISSIONS", PlatformPermission.RUNNER_READ)
    for who in EVERY_PERSON:
        assert not platform_allows(who, PlatformPermission.RUNNER_READ)
        with pytest.raises(Forbidden):
            authorize_platform(who, PlatformPermission.RUNNER_READ)
    assert platform_allows(person(platform_role="admin"), PlatformPermission.RUNNER_CREATE)


@pytest.mark.parametrize("permission", list(Permission))
def test_tenant_rows(permission: Permission) -> None:
    for role in TENANT_ROLES:
        who = person(role=role)
        if role in TENANT_PERMISSIONS[permission]:
            assert authorize(who, TENANT, permission) == role
        else:
            with pytest.raises(Forbidden):
                authorize(who, TENANT, permission)


@pytest.mark.parametrize("permission", list(Permission))
def test_no_role_in_the_tenant_is_not_found(permission: Permission) -> None:
    """Whatever the row says, the tenant's resources are not revealed to outsiders."""
    for who in (person(), person(role="owner", tenant="tnt_other")):
        with pytest.raises(NotFound):
            authorize(who, TENANT, permission)


def test_platform_roles_act_as_owner_and_auditor_in_every_tenant() -> None:
    admin, auditor = person(platform_role="admin"), person(platform_role="auditor")
    for permission in Permission:
        assert authorize(admin, TENANT, permission) == "owner"
        if "auditor" in TENANT_PERMISSIONS[permission]:
            assert authorize(auditor, TENANT, permission) == "auditor"
        else:
            with pytest.raises(Forbidden):
                authorize(auditor, TENANT, permission)


@pytest.mark.parametrize("permission", list(PlatformPermission))
def test_platform_rows(permission: PlatformPermission) -> None:
    for role in PLATFORM_ROLES:
        who = person(platform_role=role)
        allowed = role in PLATFORM_PERMISSIONS[permission]
        assert platform_allows(who, permission) is allowed
        if allowed:
            assert authorize_platform(who, permission) is who
        else:
            with pytest.raises(Forbidden):
                authorize_platform(who, permission)
    for who in (person(), person(role="owner")):  # a tenant role is no platform role
        assert not platform_allows(who, permission)
        with pytest.raises(Forbidden):
            authorize_platform(who, permission)


def test_the_mfa_column_is_enforced_after_the_role_check() -> None:
    """A stale session meets MfaRequired on a sensitive row, only after 404/403; the
    request's own second factor is asked, and an undecided row needs MFA."""
    import dataclasses

    from vault.errors import MfaRequired

    stale = dataclasses.replace(person(role="owner"), mfa_fresh=False)
    assert authorize(stale, TENANT, Permission.LINE_READ) == "owner"  # no MFA needed
    with pytest.raises(MfaRequired):
        authorize(stale, TENANT, Permission.LINE_REVOKE)
    with pytest.raises(NotFound):  # a stranger hears nothing about MFA
        authorize(dataclasses.replace(stale, tenant_roles={}), TENANT, Permission.LINE_REVOKE)
    with pytest.raises(Forbidden):
        member = dataclasses.replace(stale, tenant_roles={TENANT: "member"})
        authorize(member, TENANT, Permission.LINE_REVOKE)
    asked: list[str] = []
    with_code = dataclasses.replace(stale, second_factor=lambda: asked.append("code"))
    authorize(with_code, TENANT, Permission.GRANT_WRITE)
    assert asked == ["code"]
    admin = dataclasses.replace(person(platform_role="admin"), mfa_fresh=False)
    with pytest.raises(MfaRequired):
        authorize_platform(admin, PlatformPermission.RUNNER_CREATE)
    assert authorize_platform(admin, PlatformPermission.RUNNER_READ) is admin
    assert authz.needs_mfa("no.such.row") is True  # type: ignore[arg-type]


def test_member_changes_touching_owners_or_admins_need_mfa() -> None:
    from vault.authz import member_permission

    plain = Permission.MEMBER_WRITE
    manager = Permission.MEMBER_WRITE_MANAGER
    assert member_permission(new_role="member", current_role=None) is plain
    assert member_permission(new_role="auditor", current_role="member") is plain
    for new, current in (
        ("owner", None),
        ("admin", None),
        ("member", "admin"),
        ("auditor", "owner"),
    ):
        assert member_permission(new_role=new, current_role=current) is manager
    assert authz.TENANT_NEEDS_MFA[manager] and not authz.TENANT_NEEDS_MFA[plain]
