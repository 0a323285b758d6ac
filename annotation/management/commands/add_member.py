"""``manage.py add_member PROJECT USERNAME --role annotator|reviewer|admin [--create-user]``."""

import secrets
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from annotation.models import Membership
from annotation.services.projects import membership_set


class Command(BaseCommand):
    help = (
        "Give a user a role in a project (or change it). With --create-user a missing user is "
        "created; without --password a random password is generated and printed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Membership.Role.values)
        parser.add_argument("--create-user", action="store_true", help="create a missing user")
        parser.add_argument("--password", help="password for the user created by --create-user")
        parser.add_argument("--email", default="", help="email for the created user")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        username: str = options["username"]
        user = User.objects.filter(username=username).first()
        if user is not None and options["password"]:
            raise CommandError(
                f"user {username!r} exists; --password only sets the password of a new user"
            )
        if user is None and not options["create_user"]:
            raise CommandError(f"unknown user {username!r}; pass --create-user to create it")
        generated = ""
        try:
            with transaction.atomic():
                if user is None:
                    password = options["password"] or secrets.token_urlsafe(12)
                    generated = "" if options["password"] else password
                    user = _create_user(username, options["email"], password)
                membership = membership_set(project=project, user=user, role=options["role"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        if generated:
            self.stdout.write(f"created user {username!r} with password {generated}")
        self.stdout.write(f"{username} is {membership.role} of project {project.name!r}")


def _create_user(username: str, email: str, password: str) -> User:
    candidate = User(username=username, email=email)
    try:
        candidate.full_clean(exclude=["password"])
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise CommandError("; ".join(exc.messages)) from exc
    return User.objects.create_user(username=username, email=email, password=password)
