//! Terminal output to HTML: SGR colours and weights become `<span>`s with
//! classes (the CSP forbids inline styles), every other escape sequence is
//! dropped, and the text is HTML-escaped.
//!
//! The renderer keeps its state between calls, so a log read chunk by chunk
//! renders as a whole would: a colour, an escape sequence or a UTF-8
//! character split across two chunks comes out right.

use std::fmt::Write;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(&self) -> String {
        let mut classes = Vec::new();
        if let Some(fg) = self.fg {
            classes.push(format!("f{fg}"));
        }
        if let Some(bg) = self.bg {
            classes.push(format!("b{bg}"));
        }
        for (on, class) in [
            (self.bold, "bold"),
            (self.dim, "dim"),
            (self.italic, "italic"),
            (self.underline, "underline"),
        ] {
            if on {
                classes.push(class.to_string());
            }
        }
        classes.join(" ")
    }
}

/// The longest escape sequence kept while waiting for its end; longer
/// ones are garbage and dropped.
const MAX_PENDING: usize = 256;

#[derive(Default)]
pub struct AnsiRenderer {
    style: Style,
    /// Bytes of an escape sequence or a UTF-8 character not yet complete.
    pending: Vec<u8>,
}

impl AnsiRenderer {
    /// Renders `bytes`, holding back an incomplete sequence at its end for
    /// the next call. Every call returns balanced HTML.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len() + 64);
        let mut text = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            if byte == 0x1b {
                match escape_len(&input[i..]) {
                    Some(len) => {
                        let sequence = &input[i..i + len];
                        if sequence.len() > 2 && sequence[1] == b'[' && sequence[len - 1] == b'm' {
                            self.flush(&mut out, &mut text);
                            self.apply_sgr(&sequence[2..len - 1]);
                        }
                        i += len;
                    }
                    None if input.len() - i < MAX_PENDING => {
                        self.pending = input[i..].to_vec();
                        break;
                    }
                    None => i += 1,
                }
                continue;
            }
            // Carriage returns redraw a terminal line; a page shows lines.
            if byte != b'\r' {
                text.push(byte);
            }
            i += 1;
        }
        // A UTF-8 character cut at the end waits for the rest.
        if self.pending.is_empty() {
            let cut = incomplete_utf8_tail(&text);
            if cut > 0 {
                self.pending = text.split_off(text.len() - cut);
            }
        }
        self.flush(&mut out, &mut text);
        out
    }

    fn flush(&self, out: &mut String, text: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let decoded = String::from_utf8_lossy(text);
        let classes = self.style.classes();
        if classes.is_empty() {
            escape_into(out, &decoded);
        } else {
            let _ = write!(out, "<span class=\"{classes}\">");
            escape_into(out, &decoded);
            out.push_str("</span>");
        }
        text.clear();
    }

    fn apply_sgr(&mut self, params: &[u8]) {
        let text = String::from_utf8_lossy(params);
        let mut codes = text
            .split([';', ':'])
            .map(|p| p.parse::<u16>().unwrap_or(0));
        let mut any = false;
        while let Some(code) = codes.next() {
            any = true;
            match code {
                0 => self.style = Style::default(),
                1 => self.style.bold = true,
                2 => self.style.dim = true,
                3 => self.style.italic = true,
                4 => self.style.underline = true,
                22 => {
                    self.style.bold = false;
                    self.style.dim = false;
                }
                23 => self.style.italic = false,
                24 => self.style.underline = false,
                30..=37 => self.style.fg = Some((code - 30) as u8),
                39 => self.style.fg = None,
                40..=47 => self.style.bg = Some((code - 40) as u8),
                49 => self.style.bg = None,
                90..=97 => self.style.fg = Some((code - 90 + 8) as u8),
                100..=107 => self.style.bg = Some((code - 100 + 8) as u8),
                38 | 48 => {
                    // 256 colours map onto the 16 when they are among
                    // them; others (and true colour) keep the default.
                    let colour = match codes.next() {
                        Some(5) => codes.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            codes.next();
                            codes.next();
                            codes.next();
                            None
                        }
                        _ => None,
                    };
                    if code == 38 {
                        self.style.fg = colour;
                    } else {
                        self.style.bg = colour;
                    }
                }
                _ => {}
            }
        }
        if !any {
            self.style = Style::default();
        }
    }
}

/// The length of the escape sequence at the start of `input`, or None when
/// it is not complete yet.
fn escape_len(input: &[u8]) -> Option<usize> {
    match input.get(1)? {
        // CSI: parameters and intermediates, then a final byte 0x40..=0x7e.
        b'[' => input[2..]
            .iter()
            .position(|b| (0x40..=0x7e).contains(b))
            .map(|p| p + 3),
        // OSC: ends with BEL or ESC \.
        b']' => {
            let rest = &input[2..];
            let bel = rest.iter().position(|b| *b == 0x07).map(|p| p + 3);
            let st = rest.windows(2).position(|w| w == b"\x1b\\").map(|p| p + 4);
            match (bel, st) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        // Two-byte sequences (ESC =, ESC >, ESC 7…).
        _ => Some(2),
    }
}

/// How many bytes at the end of `text` start a UTF-8 character not yet complete.
fn incomplete_utf8_tail(text: &[u8]) -> usize {
    for back in 1..=3.min(text.len()) {
        let byte = text[text.len() - back];
        if byte & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let needed = match byte {
            b if b & 0xe0 == 0xc0 => 2,
            b if b & 0xf0 == 0xe0 => 3,
            b if b & 0xf8 == 0xf0 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AnsiRenderer;

    fn render(bytes: &[u8]) -> String {
        AnsiRenderer::default().push(bytes)
    }

    #[test]
    fn colours_become_classes_and_text_is_escaped() {
        assert_eq!(
            render(b"\x1b[1m\x1b[32mPlan:\x1b[0m <b>&\"x\"</b>\r\n"),
            "<span class=\"f2 bold\">Plan:</span> &lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;\n"
        );
        assert_eq!(
            render(b"\x1b[91;44mhi\x1b[39mx\x1b[m."),
            "<span class=\"f9 b4\">hi</span><span class=\"b4\">x</span>."
        );
    }

    #[test]
    fn other_sequences_are_dropped() {
        assert_eq!(
            render(b"a\x1b[2Kb\x1b]0;title\x07c\x1b[38;2;1;2;3md"),
            "abcd"
        );
    }

    #[test]
    fn sequences_and_characters_split_across_chunks_render_whole() {
        let whole = "x\x1b[31mrouge é ✓\x1b[0m y".as_bytes();
        for cut in 0..whole.len() {
            let mut renderer = AnsiRenderer::default();
            let mut out = renderer.push(&whole[..cut]);
            out += &renderer.push(&whole[cut..]);
            let text: String = out
                .replace("<span class=\"f1\">", "")
                .replace("</span>", "");
            assert_eq!(text, "xrouge é ✓ y", "cut at {cut}: {out}");
        }
    }

    #[test]
    fn a_script_in_the_log_stays_text() {
        let out = render(b"<script>alert(1)</script>\x1b[31m<img src=x onerror=alert(1)>");
        assert!(!out.contains("<script") && !out.contains("<img"), "{out}");
    }
}
