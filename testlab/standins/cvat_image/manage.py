"""TEST STAND-IN (labforge test stand-in) for CVAT's /home/django/manage.py in the stand-in cvat/server image.

Implements what labforge calls, with Django's behaviour for it:
- `createsuperuser --noinput`: the user from DJANGO_SUPERUSER_USERNAME / _EMAIL / _PASSWORD (Django >= 3.0 reads
  them with --noinput); "Error: That username is already taken." and exit 1 when it exists.
- `shell -c CODE`: runs CODE, against the stand-in `django` package next to this file (users kept in
  /home/django/data, CVAT's data volume).
- `migrate --check`: exit 1 when a migration of this release is not applied (Django's migrate: "--check: Exits
  with a non-zero status if unapplied migrations are detected"), against the real PostgreSQL (labforge_standin/cvat_data.py).
From v2.72.0 it lives at /opt/cvat/manage.py and /home/django/manage.py links to it (CVAT's Dockerfile at 7972cb4f2,
"Link manage.py to the home directory for backwards compatibility").
"""

import os
import sys

sys.path.insert(0, "/opt/labforge-standin")

from django.contrib.auth import get_user_model  # the stand-in package


def main(argv: list[str]) -> int:
    if argv[:1] == ["createsuperuser"] and "--noinput" in argv:
        name = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        if not name:
            print("CommandError: You must use --username with --noinput.", file=sys.stderr)
            return 1
        users = get_user_model().objects
        if users.filter(username=name).exists():
            print("CommandError: Error: That username is already taken.", file=sys.stderr)
            return 1
        users.create(username=name, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""),
                     password=os.environ.get("DJANGO_SUPERUSER_PASSWORD", ""), is_superuser=True)
        print("Superuser created successfully.")
        return 0
    if argv[:1] == ["shell"] and "-c" in argv:
        exec(argv[argv.index("-c") + 1], {"__name__": "__main__"})
        return 0
    if argv[:1] == ["migrate"]:
        from labforge_standin import cvat_data as standin  # the migrations

        if "--check" in argv:
            missing = standin.unapplied()
            if missing:
                print(f"Unapplied migrations: {', '.join(missing)}", file=sys.stderr)
            return 1 if missing else 0
        standin.migrate()
        return 0
    print(f"labforge test stand-in: manage.py {' '.join(argv)} is not implemented", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
