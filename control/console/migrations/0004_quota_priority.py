# Written for Keep: the client's class in the appliance's waiting line for KV sequences.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0003_permissions'),
    ]

    operations = [
        migrations.AddField(
            model_name='quota',
            name='priority',
            field=models.PositiveSmallIntegerField(blank=True, null=True, validators=[django.core.validators.MaxValueValidator(15)]),
        ),
    ]
