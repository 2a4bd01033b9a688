"""Factor set aliases: ``name@alias`` is a movable pointer to one version of the factor set ``name``.

    set_alias(session=s, name="dsprites", alias="prod", version=2)   # create or move
    delete_alias(session=s, name="dsprites", alias="prod")
    resolve_factor_set(session=s, ref="dsprites@prod")               # service.catalog.queries

Aliases are read by every reference parser (``/v1``, v2 model names, gRPC, ``KF_PIN``, the CLI). Serving caches a
resolved alias for at most ``service.serving.runtime._RESOLVE_TTL_S`` seconds, so a moved alias reaches every
replica within that time, without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.catalog.db import savepoint, utcnow
from service.catalog.models import FactorSet, FactorSetAlias
from service.errors import InvalidInputError, NotFoundError

__all__ = ["ALIAS_PATTERN", "check_alias", "delete_alias", "find_alias", "list_aliases", "set_alias"]

ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
_ALIAS = re.compile(ALIAS_PATTERN)


def check_alias(alias: str) -> str:
    """``alias`` if it is a valid alias name (a letter, then letters, digits, ``.``, ``_`` or ``-``; 64 at most)."""
    if not _ALIAS.match(alias):
        raise InvalidInputError(
            f"alias {alias!r} is not valid: start with a letter, then use letters, digits, '.', '_' or '-' "
            "(64 characters at most)"
        )
    return alias


def find_alias(*, session: Session, name: str, alias: str) -> FactorSetAlias | None:
    return session.scalar(select(FactorSetAlias).where(FactorSetAlias.name == name, FactorSetAlias.alias == alias))


def list_aliases(*, session: Session, name: str) -> Sequence[FactorSetAlias]:
    """The aliases of the factor set ``name``, by alias name; :class:`NotFoundError` if no version has that name."""
    _require_name(session, name)
    return session.scalars(
        select(FactorSetAlias).where(FactorSetAlias.name == name).order_by(FactorSetAlias.alias)
    ).all()


def set_alias(*, session: Session, name: str, alias: str, version: int) -> FactorSetAlias:
    """Point ``name@alias`` at ``name:version``, creating the alias or moving it."""
    check_alias(alias)
    _require_name(session, name)
    target = session.scalar(select(FactorSet).where(FactorSet.name == name, FactorSet.version == version))
    if target is None:
        raise NotFoundError("factor set", f"{name}:{version}")
    row = find_alias(session=session, name=name, alias=alias)
    if row is None:
        row = FactorSetAlias(name=name, alias=alias, factor_set_id=target.id)
        try:
            with savepoint(session):  # a concurrent PUT of the same alias: the later one moves it below
                session.add(row)
            session.refresh(target, ["aliases"])
            return row
        except IntegrityError:
            row = find_alias(session=session, name=name, alias=alias)
            assert row is not None
    row.factor_set_id, row.factor_set, row.updated_at = target.id, target, utcnow()
    session.flush()
    return row


def delete_alias(*, session: Session, name: str, alias: str) -> FactorSetAlias:
    row = find_alias(session=session, name=name, alias=alias)
    if row is None:
        raise NotFoundError("alias", f"{name}@{alias}")
    session.delete(row)
    session.flush()
    return row


def _require_name(session: Session, name: str) -> None:
    if session.scalar(select(FactorSet.id).where(FactorSet.name == name).limit(1)) is None:
        raise NotFoundError("factor set", repr(name))
