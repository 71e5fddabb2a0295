import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from console.globalconfig import (
    CONSOLE_MODE,
    UnknownSetting,
    config_reset,
    config_set,
    config_value,
    definition_get,
)
from console.models import GlobalConfigChange, GlobalConfigValue


def test_console_mode_definition_matches_the_original_setting():
    definition = definition_get(CONSOLE_MODE)
    assert (definition.category, definition.name, definition.type) == ("kvm", "consoleMode", "string")
    assert definition.default == "vnc"
    assert definition.valid_values == ("vnc", "spice")
    assert "restart" in definition.description


@pytest.mark.parametrize("raw, cleaned", [("spice", "spice"), (" vnc ", "vnc"), ("vnc\n", "vnc")])
def test_clean_accepts_valid_values(raw, cleaned):
    assert definition_get(CONSOLE_MODE).clean(raw) == cleaned


@pytest.mark.parametrize("raw", ["rdp", "", "SPICE", "vnc spice"])
def test_clean_refuses_other_values_naming_the_valid_ones(raw):
    with pytest.raises(ValidationError, match="valid values are: vnc, spice"):
        definition_get(CONSOLE_MODE).clean(raw)


def test_unknown_key_names_the_known_ones():
    with pytest.raises(UnknownSetting, match="kvm.consoleMode"):
        definition_get("kvm.nope")


@pytest.mark.django_db
def test_every_definition_has_a_row_after_migrate():
    assert GlobalConfigValue.objects.filter(category="kvm", name="consoleMode").exists()


@pytest.mark.django_db
def test_set_and_reset_are_recorded(user):
    assert config_value(CONSOLE_MODE) == "vnc"
    assert config_set(key=CONSOLE_MODE, value="spice", actor="test", user=user) == ("vnc", "spice")
    assert config_value(CONSOLE_MODE) == "spice"
    assert config_reset(key=CONSOLE_MODE, actor="test") == ("spice", "vnc")
    assert config_value(CONSOLE_MODE) == "vnc"
    changes = list(
        GlobalConfigChange.objects.order_by("id").values_list("old_value", "new_value", "changed_by")
    )
    assert changes == [("vnc", "spice", user.id), ("spice", "vnc", None)]


@pytest.mark.django_db
def test_bad_value_changes_nothing():
    with pytest.raises(ValidationError):
        config_set(key=CONSOLE_MODE, value="rdp", actor="test")
    assert config_value(CONSOLE_MODE) == "vnc"
    assert not GlobalConfigChange.objects.exists()


@pytest.mark.django_db
def test_cli_set_get_reset(capsys):
    call_command("globalconfig", "set", "kvm.consoleMode", "spice")
    call_command("globalconfig", "get", "kvm.consoleMode")
    assert capsys.readouterr().out.splitlines()[-1] == "spice"
    call_command("globalconfig", "reset", "kvm.consoleMode")
    call_command("globalconfig", "list")
    assert "kvm.consoleMode=vnc" in capsys.readouterr().out
    assert GlobalConfigChange.objects.filter(actor="cli").count() == 2


@pytest.mark.django_db
def test_cli_refuses_bad_value_with_the_valid_ones():
    with pytest.raises(CommandError, match="valid values are: vnc, spice"):
        call_command("globalconfig", "set", "kvm.consoleMode", "rdp")
    with pytest.raises(CommandError, match="unknown setting"):
        call_command("globalconfig", "get", "kvm.mode")
