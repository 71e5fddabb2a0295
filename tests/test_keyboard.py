"""Keyboard layouts: every key the portal's layouts press for a character is the key QEMU's own
keymaps (generated from X11's layouts, installed with QEMU) give for it; text a layout cannot
type is refused whole; key combinations by name."""

from pathlib import Path

import pytest

from console.errors import Invalid
from console.keyboard import (
    ACUTE,
    ALTGR,
    CIRCUMFLEX,
    DIAERESIS,
    GRAVE,
    LAYOUTS,
    SHIFT,
    TILDE,
    combination_keystroke,
    text_keystrokes,
)

QEMU_KEYMAPS = Path("/usr/share/qemu/keymaps")
QEMU_NAME = {"us": "en-us", "uk": "en-gb", "de": "de", "fr": "fr", "ch": "de-ch"}
# X11 keysym names of the characters the layouts hold (QEMU's maps are the "no dead keys"
# variants: a dead key is listed as its spacing accent).
KEYSYM = {
    **{c: c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"},
    "`": "grave", "~": "asciitilde", "!": "exclam", "@": "at", "#": "numbersign", "$": "dollar",
    "%": "percent", "^": "asciicircum", "&": "ampersand", "*": "asterisk", "(": "parenleft",
    ")": "parenright", "-": "minus", "_": "underscore", "=": "equal", "+": "plus",
    "[": "bracketleft", "]": "bracketright", "{": "braceleft", "}": "braceright",
    ";": "semicolon", ":": "colon", "'": "apostrophe", '"': "quotedbl", "\\": "backslash",
    "|": "bar", ",": "comma", "<": "less", ".": "period", ">": "greater", "/": "slash",
    "?": "question", "¬": "notsign", "£": "sterling", "€": "EuroSign", "¦": "brokenbar",
    "²": "twosuperior", "³": "threesuperior", "§": "section", "°": "degree", "ß": "ssharp",
    "ü": "udiaeresis", "ö": "odiaeresis", "ä": "adiaeresis", "Ü": "Udiaeresis",
    "Ö": "Odiaeresis", "Ä": "Adiaeresis", "µ": "mu", "é": "eacute", "è": "egrave",
    "ç": "ccedilla", "à": "agrave", "ù": "ugrave", "¤": "currency", "¢": "cent",
    ACUTE: "acute", GRAVE: "grave", CIRCUMFLEX: "asciicircum", TILDE: "asciitilde",
    DIAERESIS: "diaeresis",
}  # fmt: skip
DEAD = {ACUTE: "dead_acute", GRAVE: "dead_grave", CIRCUMFLEX: "dead_circumflex", TILDE: "dead_tilde",
        DIAERESIS: "dead_diaeresis"}  # fmt: skip


def qemu_keymap(name: str) -> dict[str, set[tuple[int, ...]]]:
    """keysym name -> the keystrokes (Linux key codes, modifiers first) QEMU's keymap gives."""
    keys: dict[str, set[tuple[int, ...]]] = {}
    for line in (QEMU_KEYMAPS / name).read_text().splitlines():
        words = line.split()
        if not words or line.startswith(("#", "include", "map")) or len(words) < 2:
            continue
        modifiers = [
            m for m in (SHIFT if "shift" in words else None, ALTGR if "altgr" in words else None) if m
        ]
        keys.setdefault(words[0], set()).add((*modifiers, int(words[1], 16)))
    return keys


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_key_is_the_one_qemu_keymaps_give(layout):
    if not (QEMU_KEYMAPS / QEMU_NAME[layout]).exists():
        pytest.skip("QEMU's keymaps are not installed (qemu-system-data)")
    qemu = qemu_keymap(QEMU_NAME[layout])
    checked = 0
    for char, stroke in LAYOUTS[layout].keys.items():
        if char in " \n\r\t":
            continue
        given = qemu.get(KEYSYM[char], set()) | qemu.get(DEAD.get(char, ""), set())
        assert stroke in given, (char, stroke, given)
        checked += 1
    assert checked >= 90  # every printable key of the main block


def test_german_altgr_and_dead_keys():
    assert text_keystrokes("@", "de") == [(ALTGR, 16)]  # AltGr+Q
    assert text_keystrokes("é", "de") == [(13,), (18,)]  # dead acute, then E
    assert text_keystrokes("É", "de") == [(13,), (SHIFT, 18)]
    assert text_keystrokes("ß^", "de") == [(12,), (41,), (57,)]  # a dead key alone: then space
    assert text_keystrokes("zy", "de") == [(21,), (44,)]  # QWERTZ
    assert text_keystrokes("ê", "fr") == [(26,), (18,)]  # French dead circumflex
    assert text_keystrokes("a\r\nb", "us") == [(30,), (28,), (48,)]


def test_text_a_layout_cannot_type_is_refused_whole():
    with pytest.raises(
        Invalid, match=r"English \(US\) layout \(us\) cannot type 'ü' 'ß' '€'; nothing was typed"
    ):
        text_keystrokes("Grüße €ü", "us")
    with pytest.raises(Invalid, match="cannot type '\\\\x1b'"):
        text_keystrokes("\x1b[A", "de")  # control characters are keys, not text


def test_key_combinations_by_name():
    assert combination_keystroke("ctrl+alt+delete") == (29, 56, 111)
    assert combination_keystroke("Ctrl + Alt + F2") == (29, 56, 60)
    assert combination_keystroke("super+l") == (125, 38)
    assert combination_keystroke("printscreen") == (99,)
    with pytest.raises(Invalid, match="Unknown key 'hyper'"):
        combination_keystroke("ctrl+hyper")
