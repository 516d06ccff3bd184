from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "control.console"
    label = "console"
    verbose_name = "Keep"

    def ready(self) -> None:
        from control.console import signals  # noqa: F401  (connects the receivers)
