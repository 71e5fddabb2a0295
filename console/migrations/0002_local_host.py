from django.conf import settings
from django.db import migrations


def local_host(apps, schema_editor):
    Host = apps.get_model("console", "Host")
    if not Host.objects.filter(uri=settings.LIBVIRT_URI).exists():
        Host.objects.get_or_create(name="local", defaults={"uri": settings.LIBVIRT_URI})


class Migration(migrations.Migration):
    dependencies = [("console", "0001_initial")]
    operations = [migrations.RunPython(local_host, migrations.RunPython.noop)]
