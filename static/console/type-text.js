// "Type text": the characters of a string as the key presses of a US-layout keyboard (the
// layout the guest is assumed to use), so it can be typed into a VM that has no clipboard
// agent: login prompts, installers, firmware. Shifted characters press Shift, as a user would.

// KeyboardEvent.code -> PC AT scancode (set 1): what both SPICE and QEMU's VNC take.
const SCANCODES = {
  Digit1: 0x02, Digit2: 0x03, Digit3: 0x04, Digit4: 0x05, Digit5: 0x06, Digit6: 0x07,
  Digit7: 0x08, Digit8: 0x09, Digit9: 0x0a, Digit0: 0x0b, Minus: 0x0c, Equal: 0x0d,
  Tab: 0x0f, KeyQ: 0x10, KeyW: 0x11, KeyE: 0x12, KeyR: 0x13, KeyT: 0x14, KeyY: 0x15,
  KeyU: 0x16, KeyI: 0x17, KeyO: 0x18, KeyP: 0x19, BracketLeft: 0x1a, BracketRight: 0x1b,
  Enter: 0x1c, KeyA: 0x1e, KeyS: 0x1f, KeyD: 0x20, KeyF: 0x21, KeyG: 0x22, KeyH: 0x23,
  KeyJ: 0x24, KeyK: 0x25, KeyL: 0x26, Semicolon: 0x27, Quote: 0x28, Backquote: 0x29,
  ShiftLeft: 0x2a, Backslash: 0x2b, KeyZ: 0x2c, KeyX: 0x2d, KeyC: 0x2e, KeyV: 0x2f,
  KeyB: 0x30, KeyN: 0x31, KeyM: 0x32, Comma: 0x33, Period: 0x34, Slash: 0x35, Space: 0x39,
};
const SHIFT = { code: "ShiftLeft", keysym: 0xffe1, scancode: 0x2a };
const PLAIN = "1234567890-=qwertyuiop[]asdfghjkl;'`\\zxcvbnm,./";
const SHIFTED = '!@#$%^&*()_+QWERTYUIOP{}ASDFGHJKL:"~|ZXCVBNM<>?';
const CODES = [
  "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8", "Digit9",
  "Digit0", "Minus", "Equal", "KeyQ", "KeyW", "KeyE", "KeyR", "KeyT", "KeyY", "KeyU", "KeyI",
  "KeyO", "KeyP", "BracketLeft", "BracketRight", "KeyA", "KeyS", "KeyD", "KeyF", "KeyG",
  "KeyH", "KeyJ", "KeyK", "KeyL", "Semicolon", "Quote", "Backquote", "Backslash", "KeyZ",
  "KeyX", "KeyC", "KeyV", "KeyB", "KeyN", "KeyM", "Comma", "Period", "Slash",
];
export const TYPE_TEXT_LIMIT = 1024; // characters per paste: a password or a command, not a file

/** The key presses for `text`: [{code, keysym, scancode, shift}]; throws naming a character
 * the US layout cannot type. */
export function keystrokes(text) {
  if (text.length > TYPE_TEXT_LIMIT) throw new Error(`at most ${TYPE_TEXT_LIMIT} characters at a time`);
  return Array.from(text.replace(/\r\n?/g, "\n"), (char) => {
    if (char === "\n") return { code: "Enter", keysym: 0xff0d, scancode: SCANCODES.Enter, shift: false };
    if (char === "\t") return { code: "Tab", keysym: 0xff09, scancode: SCANCODES.Tab, shift: false };
    if (char === " ") return { code: "Space", keysym: 0x20, scancode: SCANCODES.Space, shift: false };
    let index = PLAIN.indexOf(char);
    let shift = false;
    if (index < 0) {
      index = SHIFTED.indexOf(char);
      shift = true;
    }
    if (index < 0) throw new Error(`${JSON.stringify(char)} cannot be typed on a US keyboard`);
    const code = CODES[index];
    return { code, keysym: char.charCodeAt(0), scancode: SCANCODES[code], shift };
  });
}

/** Press each key in turn with `press(key, down)`, Shift around shifted characters, a few
 * milliseconds apart so the guest's keyboard buffer keeps up. */
export async function typeKeys(keys, press) {
  for (const key of keys) {
    if (key.shift) press(SHIFT, true);
    press(key, true);
    press(key, false);
    if (key.shift) press(SHIFT, false);
    await new Promise((resolve) => setTimeout(resolve, 8));
  }
}
