"""Signals other apps listen to, so that annotation never imports them."""

from django.dispatch import Signal

# Sent inside the removal's transaction with ``project`` and ``image_ids`` (a set of ints) once
# the images' rows are deleted; a receiver returns how many of its own references it dropped.
# The training app drops them from the project's frozen validation split.
images_removed = Signal()

# Sent inside a project's deletion transaction with ``project``, before its rows are deleted:
# a receiver deletes its own rows of the project that the cascade cannot (protected foreign
# keys, rows that name the project only by id) and returns the blob keys they owned (a list of
# str), which the deletion's job removes after commit.
project_deleting = Signal()
