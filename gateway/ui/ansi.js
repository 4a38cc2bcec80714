// ANSI SGR colour codes in log lines become styled spans (other escape sequences are dropped).
"use strict";

const ANSI_COLORS = ["#000", "#c33", "#3a3", "#b80", "#36c", "#a3a", "#299", "#bbb"];
const ANSI_BRIGHT = ["#666", "#f55", "#5d5", "#ec3", "#59f", "#d6d", "#4cc", "#fff"];

// Appends `text` to `parent`, styled by its escape codes; `state` carries styles across lines.
function renderAnsi(parent, text, state) {
  state = state || {};
  const re = /\x1b\[([0-9;]*)([A-Za-z])/g;
  let pos = 0, m;
  const emit = (chunk) => {
    if (!chunk) return;
    if (!state.fg && !state.bg && !state.bold && !state.italic && !state.underline) {
      parent.append(document.createTextNode(chunk));
      return;
    }
    const span = document.createElement("span");
    span.textContent = chunk;
    if (state.fg) span.style.color = state.fg;
    if (state.bg) span.style.backgroundColor = state.bg;
    if (state.bold) span.style.fontWeight = "bold";
    if (state.italic) span.style.fontStyle = "italic";
    if (state.underline) span.style.textDecoration = "underline";
    span.className = "ansi";
    parent.append(span);
  };
  while ((m = re.exec(text))) {
    emit(text.slice(pos, m.index));
    pos = re.lastIndex;
    if (m[2] !== "m") continue;
    const codes = m[1] === "" ? [0] : m[1].split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { state.fg = state.bg = null; state.bold = state.italic = state.underline = false; }
      else if (c === 1) state.bold = true;
      else if (c === 3) state.italic = true;
      else if (c === 4) state.underline = true;
      else if (c === 22) state.bold = false;
      else if (c === 39) state.fg = null;
      else if (c === 49) state.bg = null;
      else if (c >= 30 && c <= 37) state.fg = ANSI_COLORS[c - 30];
      else if (c >= 90 && c <= 97) state.fg = ANSI_BRIGHT[c - 90];
      else if (c >= 40 && c <= 47) state.bg = ANSI_COLORS[c - 40];
      else if (c >= 100 && c <= 107) state.bg = ANSI_BRIGHT[c - 100];
      else if ((c === 38 || c === 48) && codes[i + 1] === 2) {  // 24-bit colour
        const rgb = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        if (c === 38) state.fg = rgb; else state.bg = rgb;
        i += 4;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 5) {  // 256 colours: the basic 16 only
        const n = codes[i + 2];
        const col = n < 8 ? ANSI_COLORS[n] : n < 16 ? ANSI_BRIGHT[n - 8] : null;
        if (c === 38) state.fg = col; else state.bg = col;
        i += 2;
      }
    }
  }
  emit(text.slice(pos));
  return state;
}

function stripAnsi(text) {
  return text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
}
