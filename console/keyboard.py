"""Keyboard layouts: text and key combinations turned into the keys a guest's keyboard presses.

A guest reads key positions (scancodes), not characters: which character a key gives depends on
the layout the guest's OS uses. To type "@" into a guest set up for German, the portal presses
AltGr+Q; for "é", the dead acute key, then E. Keys are Linux input key codes (libvirt's
VIR_KEYCODE_SET_LINUX), each keystroke the keys held together, modifiers first.

Each layout lists, per modifier level, the characters of the four rows of a 105-key keyboard
(a space: nothing there). A combining accent in a row is a dead key: it types that accent on
the next letter (é = dead acute + e), or alone before a space. Checked against QEMU's keymaps
(generated from X11's layouts) in tests/test_keyboard.py.

Why not a library: none maps text to key positions for a layout without a display server
(libxkbcommon goes from keys to characters), and these five layouts are the ones the portal
offers; a new one is four rows of characters per level.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from django.utils.translation import gettext, gettext_noop

from console.errors import Invalid

SHIFT, ALTGR, CTRL, ALT, SUPER = 42, 100, 29, 56, 125
SPACE, ENTER, TAB = 57, 28, 15

# The keys of each row, left to right: digits (with the key left of 1), QWERTY, home row with
# the key left of Enter on 105-key keyboards, bottom row with the key right of left Shift.
ROWS = (
    (41, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13),
    (16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27),
    (30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 43),
    (86, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53),
)
LEVELS = ((), (SHIFT,), (ALTGR,), (SHIFT, ALTGR))

GRAVE, ACUTE, CIRCUMFLEX, TILDE, DIAERESIS = "\u0300", "\u0301", "\u0302", "\u0303", "\u0308"
SPACING = {"`": GRAVE, "´": ACUTE, "^": CIRCUMFLEX, "~": TILDE, "¨": DIAERESIS}

# name: (label, levels: base, Shift, AltGr), each level the four rows.
_LAYOUTS: dict[str, tuple[str, tuple[tuple[str, str, str, str], ...]]] = {
    "us": (
        gettext_noop("English (US)"),
        (
            ("`1234567890-=", "qwertyuiop[]", "asdfghjkl;'\\", " zxcvbnm,./"),
            ("~!@#$%^&*()_+", "QWERTYUIOP{}", 'ASDFGHJKL:"|', " ZXCVBNM<>?"),
        ),
    ),
    "uk": (
        gettext_noop("English (UK)"),
        (
            ("`1234567890-=", "qwertyuiop[]", "asdfghjkl;'#", "\\zxcvbnm,./"),
            ('¬!"£$%^&*()_+', "QWERTYUIOP{}", "ASDFGHJKL:@~", "|ZXCVBNM<>?"),
            ("    €        ", "            ", "            ", "           "),
        ),
    ),
    "de": (
        gettext_noop("German"),
        (
            (CIRCUMFLEX + "1234567890ß" + ACUTE, "qwertzuiopü+", "asdfghjklöä#", "<yxcvbnm,.-"),
            ('°!"§$%&/()=?' + GRAVE, "QWERTZUIOPÜ*", "ASDFGHJKLÖÄ'", ">YXCVBNM;:_"),
            ("  ²³   {[]}\\ ", "@ €        ~", "            ", "|      µ   "),
        ),
    ),
    "fr": (
        gettext_noop("French"),
        (
            ("²&é\"'(-è_çà)=", "azertyuiop" + CIRCUMFLEX + "$", "qsdfghjklmù*", "<wxcvbn,;:!"),
            (" 1234567890°+", "AZERTYUIOP" + DIAERESIS + "£", "QSDFGHJKLM%µ", ">WXCVBN?./§"),
            ("  ~#{[|`\\^@]}", "  €        ¤", "            ", "           "),
        ),
    ),
    "ch": (
        gettext_noop("Swiss German"),
        (
            ("§1234567890'" + CIRCUMFLEX, "qwertzuiopü" + DIAERESIS, "asdfghjklöä$", "<yxcvbnm,.-"),
            ('°+"*ç%&/()=?' + GRAVE, "QWERTZUIOPè!", "ASDFGHJKLéà£", ">YXCVBNM;:_"),
            (" |@#  ¬|¢  " + ACUTE + TILDE, "  €       []", "          {}", "\\          "),
        ),
    ),
}
LAYOUT_CHOICES = [(name, label) for name, (label, _) in _LAYOUTS.items()]
DEFAULT_LAYOUT = "us"

Keystroke = tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    name: str
    keys: dict[str, Keystroke]  # a character, or a combining accent (a dead key)

    def strokes(self, char: str) -> list[Keystroke] | None:
        """The keystrokes that type `char`, or None when this layout cannot."""
        if char in self.keys and char not in SPACING.values():
            return [self.keys[char]]
        if char in SPACING and SPACING[char] in self.keys:
            return [self.keys[SPACING[char]], (SPACE,)]  # a dead key, then space: the accent alone
        decomposed = unicodedata.normalize("NFD", char)
        if len(decomposed) == 2 and decomposed[1] in self.keys and decomposed[0] in self.keys:
            return [self.keys[decomposed[1]], self.keys[decomposed[0]]]
        return None


def _layout(name: str) -> Layout:
    keys: dict[str, Keystroke] = {" ": (SPACE,), "\n": (ENTER,), "\r": (ENTER,), "\t": (TAB,)}
    for modifiers, rows in zip(LEVELS, _LAYOUTS[name][1], strict=False):
        for row, chars in zip(ROWS, rows, strict=True):
            for code, char in zip(row, chars, strict=True):
                if char != " ":
                    keys.setdefault(char, (*modifiers, code))
    return Layout(name, keys)


LAYOUTS = {name: _layout(name) for name in _LAYOUTS}


def text_keystrokes(text: str, layout: str) -> list[Keystroke]:
    """Every keystroke that types `text` on `layout`; Invalid naming the characters the layout
    cannot type (nothing is typed then)."""
    keyboard = LAYOUTS[layout]
    strokes: list[Keystroke] = []
    missing: list[str] = []
    for char in text.replace("\r\n", "\n"):
        typed = keyboard.strokes(char)
        if typed is None:
            missing.append(char)
        else:
            strokes.extend(typed)
    if missing:
        shown = " ".join(repr(c) for c in dict.fromkeys(missing))
        raise Invalid(
            gettext("The %(name)s layout (%(layout)s) cannot type %(shown)s; nothing was typed.")
            % {"name": gettext(_LAYOUTS[layout][0]), "layout": layout, "shown": shown},
            field="text",
        )
    return strokes


# Key names for combinations, by their position on a US keyboard ("ctrl+alt+f2", "super+l").
_NAMED = {
    "ctrl": CTRL,
    "control": CTRL,
    "shift": SHIFT,
    "alt": ALT,
    "altgr": ALTGR,
    "super": SUPER,
    "win": SUPER,
    "meta": SUPER,
    "esc": 1,
    "escape": 1,
    "backspace": 14,
    "tab": TAB,
    "enter": ENTER,
    "return": ENTER,
    "space": SPACE,
    "delete": 111,
    "del": 111,
    "insert": 110,
    "home": 102,
    "end": 107,
    "pageup": 104,
    "pagedown": 109,
    "up": 103,
    "down": 108,
    "left": 105,
    "right": 106,
    "printscreen": 99,
    "sysrq": 99,
    "menu": 127,
    **{f"f{n}": 58 + n for n in range(1, 11)},
    "f11": 87,
    "f12": 88,
}
_NAMED.update(
    {char: code[0] for char, code in LAYOUTS["us"].keys.items() if len(code) == 1 and char.isalnum()}
)
MAX_KEYS = 16  # libvirt's limit for one combination

# The console pages' Keys menu: what the browser, the desktop or the window manager would take.
KEY_MENU = [
    *[(f"ctrl+alt+f{n}", f"Ctrl+Alt+F{n}") for n in range(1, 8)],
    ("alt+tab", "Alt+Tab"),
    ("alt+f4", "Alt+F4"),
    ("super", gettext_noop("Super (Windows key)")),
    ("printscreen", "PrintScreen"),
    ("ctrl+w", "Ctrl+W"),
    ("ctrl+t", "Ctrl+T"),
    ("ctrl+n", "Ctrl+N"),
    ("ctrl+alt+backspace", "Ctrl+Alt+Backspace"),
    ("ctrl+esc", "Ctrl+Esc"),
]


# The console pages' sticky modifiers: held (by the portal) with the next key pressed on the VM.
STICKY_MODIFIERS = [
    ("ctrl", "Ctrl"),
    ("alt", "Alt"),
    ("altgr", "AltGr"),
    ("shift", "Shift"),
    ("super", "Super"),
]


def combination_keystroke(combination: str) -> Keystroke:
    """ "ctrl+alt+delete" as the keys held together; Invalid for an unknown name."""
    names = [name.strip().lower() for name in combination.split("+")]
    unknown = [name for name in names if name not in _NAMED]
    if unknown or not names or len(names) > MAX_KEYS:
        raise Invalid(
            f"Unknown key {', '.join(repr(n) for n in unknown) or repr(combination)} in {combination!r}: "
            "use names such as ctrl, alt, shift, super, altgr, delete, tab, enter, esc, f1-f12, "
            "printscreen, up, a-z, 0-9, joined with + (at most 16 keys).",
            field="keys",
        )
    return tuple(_NAMED[name] for name in names)
