"""The mask table's indexes for scale (tests/annotation/test_query_plans.py, docs/scale.md).

- No single-column index on Mask.project, Mask.image, Mask.annotator: each is the prefix of a
  composite index that serves the same lookups (mask_project_status_id, mask_image_status,
  mask_annotator_time). On PostgreSQL the planner preferred the single-column ones and then
  sorted or filtered the whole range, and each costs a write per inserted mask.
- mask_annotator_time, mask_project_time and the new mask_reviewed_by (replacing the
  reviewed_by column index) are partial: automatic masks, the bulk of the table at scale, have
  no annotator or reviewer, so they neither pay those index writes nor fill the ranges the
  stats pages read.

DROP INDEX holds a short exclusive lock on the table; docs/scale.md says how to drop the old
indexes concurrently on a live table instead.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0004_automatic_runs"),
        ("engine", "0003_automatic_runs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="mask",
            name="mask_annotator_time",
        ),
        migrations.RemoveIndex(
            model_name="mask",
            name="mask_project_time",
        ),
        migrations.AlterField(
            model_name="mask",
            name="annotator",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="mask",
            name="image",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="masks",
                to="annotation.image",
            ),
        ),
        migrations.AlterField(
            model_name="mask",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="masks",
                to="annotation.project",
            ),
        ),
        migrations.AlterField(
            model_name="mask",
            name="reviewed_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="mask",
            index=models.Index(
                condition=models.Q(("annotator__isnull", False)),
                fields=["annotator", "created_at"],
                name="mask_annotator_time",
            ),
        ),
        migrations.AddIndex(
            model_name="mask",
            index=models.Index(
                condition=models.Q(
                    ("annotator__isnull", False), ("source", "prefill"), _connector="OR"
                ),
                fields=["project", "created_at"],
                name="mask_project_time",
            ),
        ),
        migrations.AddIndex(
            model_name="mask",
            index=models.Index(
                condition=models.Q(("reviewed_by__isnull", False)),
                fields=["reviewed_by"],
                name="mask_reviewed_by",
            ),
        ),
    ]
