"""manage.py globalconfig list | get KEY | set KEY VALUE | reset KEY"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.globalconfig import DEFINITIONS, UnknownSetting, config_reset, config_set, config_value


class Command(BaseCommand):
    help = "List, read and change global settings (the same validation as Django admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="every setting with its value, default and valid values")
        sub.add_parser("get", help="print one setting's value").add_argument("key")
        setter = sub.add_parser("set", help="change a setting")
        setter.add_argument("key")
        setter.add_argument("value")
        sub.add_parser("reset", help="set a setting back to its default").add_argument("key")

    def handle(self, *args: str, verb: str, **options: str) -> None:
        try:
            if verb == "list":
                for key, definition in DEFINITIONS.items():
                    valid = "|".join(definition.valid_values) or definition.type
                    self.stdout.write(
                        f"{key}={config_value(key)}\t(default {definition.default}; {valid})"
                        f"\t{definition.description}"
                    )
            elif verb == "get":
                self.stdout.write(config_value(options["key"]))
            elif verb == "set":
                old, new = config_set(key=options["key"], value=options["value"], actor="cli")
                self.stdout.write(f"{options['key']}: {old} -> {new}")
            elif verb == "reset":
                old, new = config_reset(key=options["key"], actor="cli")
                self.stdout.write(f"{options['key']}: {old} -> {new} (default)")
        except (UnknownSetting, ValidationError) as exc:
            message = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
            raise CommandError(message) from None
        if verb in ("set", "reset") and options["key"] == "kvm.consoleMode" and old != new:
            self.stdout.write("Running VMs keep their console protocol until they are restarted.")
