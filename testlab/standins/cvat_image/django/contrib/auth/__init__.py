"""TEST STAND-IN (labforge test stand-in): get_user_model().objects.filter(...).exists() / .values_list(...),
and .create(...), over /home/django/data/labforge-standin-users.json (CVAT's data volume, so users outlive a
container's re-creation as they outlive it in CVAT's database volume). Passwords are kept as sha256 only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STORE = Path("/home/django/data/labforge-standin-users.json")


class QuerySet:
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def exists(self) -> bool:
        return bool(self.rows)

    def values_list(self, *fields: str, flat: bool = False) -> list:
        if flat:
            return [row[fields[0]] for row in self.rows]
        return [tuple(row[f] for f in fields) for row in self.rows]


class Manager:
    def _all(self) -> list[dict]:
        return json.loads(STORE.read_text()) if STORE.exists() else []

    def filter(self, **conditions) -> QuerySet:
        return QuerySet([row for row in self._all() if all(row.get(k) == v for k, v in conditions.items())])

    def create(self, username: str, email: str, password: str, is_superuser: bool) -> None:
        rows = self._all()
        rows.append({"username": username, "email": email, "is_superuser": is_superuser,
                     "password_sha256": hashlib.sha256(password.encode()).hexdigest()})
        STORE.parent.mkdir(parents=True, exist_ok=True)
        STORE.write_text(json.dumps(rows))


class User:
    objects = Manager()


def get_user_model() -> type[User]:
    return User
