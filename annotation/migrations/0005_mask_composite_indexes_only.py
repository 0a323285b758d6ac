"""Drop the single-column indexes of Mask.project, Mask.image and Mask.annotator.

Each is the prefix of a composite index that serves the same lookups (mask_project_status_id,
mask_image_status, mask_annotator_time); on PostgreSQL the planner preferred the single-column
ones and then sorted or filtered the whole range (tests/annotation/test_query_plans.py), and each
index costs a write per inserted mask. DROP INDEX holds a short exclusive lock on the table;
docs/scale.md says how to drop them concurrently on a live table instead.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0004_automatic_runs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
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
    ]
