"""Translations: the pages, their messages and the console pages' JavaScript in German and
French, chosen by the browser's Accept-Language or the language switch at the foot of every
page; the catalogues are complete, and every placeholder survives translation (msgfmt --check)."""

import re
import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

from console.models import Host, VirtualMachine

ROOT = Path(__file__).resolve().parent.parent
CATALOGUES = sorted((ROOT / "locale").glob("*/LC_MESSAGES/*.po"))


@pytest.mark.parametrize("catalogue", CATALOGUES, ids=lambda p: f"{p.parts[-3]}-{p.stem}")
def test_each_catalogue_is_complete_and_keeps_its_placeholders(catalogue):
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(catalogue)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\d+ translated messages\.\n", result.stderr), result.stderr  # none fuzzy or left


def test_both_languages_have_the_same_messages():
    for domain in ("django", "djangojs"):
        ids = {
            lang: set(
                re.findall(
                    r'^msgid "(.+)"$', (ROOT / f"locale/{lang}/LC_MESSAGES/{domain}.po").read_text(), re.M
                )
            )
            for lang in ("de", "fr")
        }
        assert ids["de"] == ids["fr"], domain


def test_catalogues_hold_every_message_of_the_code(tmp_path):
    """makemessages finds nothing new: a string marked since was translated too."""
    before = {p: p.read_text() for p in CATALOGUES}
    try:
        for domain in ("django", "djangojs"):
            subprocess.run(
                [
                    str(ROOT / ".venv/bin/python"),
                    "manage.py",
                    "makemessages",
                    "-d",
                    domain,
                    "-l",
                    "de",
                    "--no-obsolete",
                    "--no-location",
                    *[
                        f"--ignore={d}"
                        for d in (
                            ".venv",
                            "node_modules",
                            "var",
                            "static/novnc",
                            "static/spice-html5",
                            "static/xterm",
                            "static/bundles",
                            "test-artifacts",
                            "tests",
                            "bench",
                        )
                    ],
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        path = ROOT / "locale/de/LC_MESSAGES/django.po"
        after = subprocess.run(
            ["msgfmt", "--statistics", "-o", "/dev/null", str(path)], capture_output=True, text=True
        )
        assert "untranslated" not in after.stderr and "fuzzy" not in after.stderr, after.stderr
        js = ROOT / "locale/de/LC_MESSAGES/djangojs.po"
        after = subprocess.run(
            ["msgfmt", "--statistics", "-o", "/dev/null", str(js)], capture_output=True, text=True
        )
        assert "untranslated" not in after.stderr and "fuzzy" not in after.stderr, after.stderr
    finally:
        for path, text in before.items():
            path.write_text(text)


@pytest.mark.django_db
def test_the_browsers_language_chooses_and_the_switch_overrides(client, user):
    page = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="fr-CH,fr;q=0.9")
    assert '<html lang="fr">' in page.content.decode() and "Se connecter" in page.content.decode()
    client.force_login(user)
    host = Host.objects.create(name="fake", uri="test:///default")
    VirtualMachine.objects.create(name="test", owner=user, host=host)
    listing = client.get("/", HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "Virtuelle Maschinen" in listing and "Abmelden" in listing and "1 VM" in listing
    client.post(reverse("set_language"), {"language": "fr", "next": "/"})
    listing = client.get("/", HTTP_ACCEPT_LANGUAGE="de").content.decode()  # the switch wins
    assert "Machines virtuelles" in listing and 'value="fr" lang="fr" selected' in listing


@pytest.mark.django_db
def test_messages_errors_and_the_consoles_ends_are_translated(client, user):
    client.force_login(user)
    host = Host.objects.create(name="fake", uri="test:///default")
    vm = VirtualMachine.objects.create(name="test", owner=user, host=host)
    client.post(reverse("set_language"), {"language": "de", "next": "/"})
    shared = client.post(reverse("console:vm-share", args=[vm.id]), {"username": "nobody"}, follow=True)
    assert "Es gibt keinen aktiven Benutzer" in shared.content.decode()
    catalogue = client.get(reverse("javascript-catalog")).content.decode()  # non-ASCII as \uXXXX
    assert "Verbunden" in catalogue and "Steuerung geben" in catalogue
    from django.utils import translation

    from console.errors import end_table

    with translation.override("fr"):
        assert end_table()["advice"]["4011"] == "la VM a fermé sa console (elle a été arrêtée ou redémarrée)"
    with translation.override("de"):
        from console.errors import Invalid
        from console.keyboard import text_keystrokes

        with pytest.raises(Invalid, match="Die Tastaturbelegung Deutsch"):
            text_keystrokes("€" * 1 + "\u2603", "de")
