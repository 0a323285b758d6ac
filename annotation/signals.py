"""Signals other apps listen to, so that annotation never imports them."""

from django.dispatch import Signal

# Sent inside the removal's transaction with ``project`` and ``image_ids`` (a set of ints) once
# the images' rows are deleted; a receiver returns how many of its own references it dropped.
# The training app drops them from the project's frozen validation split.
images_removed = Signal()
