from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "VM consoles"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from console.audit import audit_signals_connect
        from console.directory import directory_signals_connect
        from console.globalconfig import config_rows_sync

        audit_signals_connect()
        directory_signals_connect()

        # Every definition in the registry gets a row, so admin lists them all.
        post_migrate.connect(lambda sender, **kwargs: config_rows_sync(), sender=self, weak=False)
