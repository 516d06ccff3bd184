# Written for Keep: each client's rates and requests in flight (appliance/ratelimit.py).

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0004_quota_priority'),
    ]

    operations = [
        migrations.AddField(
            model_name='quota',
            name='requests_per_second',
            field=models.FloatField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(0), django.core.validators.MaxValueValidator(100000)]),
        ),
        migrations.AddField(
            model_name='quota',
            name='request_burst',
            field=models.PositiveIntegerField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000000)]),
        ),
        migrations.AddField(
            model_name='quota',
            name='tokens_per_minute',
            field=models.PositiveBigIntegerField(blank=True, null=True, validators=[django.core.validators.MaxValueValidator(1000000000000000)]),
        ),
        migrations.AddField(
            model_name='quota',
            name='max_in_flight',
            field=models.PositiveSmallIntegerField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(4096)]),
        ),
    ]
