//! Syntax highlighting with syntect, as an egui layout job. The syntax and theme sets are loaded
//! once: they take tens of milliseconds, far too long for every frame.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId};
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, ThemeSet};
use syntect::parsing::SyntaxSet;
use syntect::util::LinesWithEndings;

struct Sets {
    syntaxes: SyntaxSet,
    themes: ThemeSet,
}

fn sets() -> &'static Sets {
    static SETS: OnceLock<Sets> = OnceLock::new();
    SETS.get_or_init(|| Sets {
        syntaxes: SyntaxSet::load_defaults_newlines(),
        themes: ThemeSet::load_defaults(),
    })
}

/// Highlights `code` as `lang` (a file extension such as `py`); unknown languages stay plain.
pub fn job(code: &str, lang: &str, dark: bool, font: FontId) -> LayoutJob {
    let s = sets();
    let syntax = s
        .syntaxes
        .find_syntax_by_extension(lang)
        .unwrap_or_else(|| s.syntaxes.find_syntax_plain_text());
    let theme_name = if dark {
        "base16-mocha.dark"
    } else {
        "InspiredGitHub"
    };
    let mut job = LayoutJob::default();
    let Some(theme) = s.themes.themes.get(theme_name) else {
        job.append(
            code,
            0.0,
            TextFormat::simple(
                font,
                if dark {
                    Color32::LIGHT_GRAY
                } else {
                    Color32::DARK_GRAY
                },
            ),
        );
        return job;
    };
    let mut h = HighlightLines::new(syntax, theme);
    for line in LinesWithEndings::from(code) {
        // A line syntect cannot parse is shown plain rather than dropped.
        let Ok(ranges) = h.highlight_line(line, &s.syntaxes) else {
            job.append(line, 0.0, TextFormat::simple(font.clone(), Color32::GRAY));
            continue;
        };
        for (style, piece) in ranges {
            let c = style.foreground;
            let mut fmt = TextFormat::simple(font.clone(), Color32::from_rgb(c.r, c.g, c.b));
            fmt.italics = style.font_style.contains(FontStyle::ITALIC);
            if style.font_style.contains(FontStyle::UNDERLINE) {
                fmt.underline = egui::Stroke::new(1.0, fmt.color);
            }
            job.append(piece, 0.0, fmt);
        }
    }
    job
}

/// Layouts kept by `cached_job`: a few, since the output and the editors each have one.
const CACHE_ENTRIES: usize = 6;

thread_local! {
    static CACHE: RefCell<Vec<(u64, LayoutJob)>> = const { RefCell::new(Vec::new()) };
    static HIGHLIGHTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times syntect ran on this thread (tests count work, not time).
pub fn highlights_run() -> usize {
    HIGHLIGHTS.with(|h| h.get())
}

/// `job`, memoised by content: syntect runs when the text (or language, theme, font) changes,
/// not every frame.
pub fn cached_job(code: &str, lang: &str, dark: bool, font: FontId) -> LayoutJob {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        code,
        lang,
        dark,
        font.size.to_bits(),
        format!("{:?}", font.family),
    )
        .hash(&mut h);
    let key = h.finish();
    if let Some(j) = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let i = c.iter().position(|(k, _)| *k == key)?;
        let hit = c.remove(i);
        c.push(hit.clone());
        Some(hit.1)
    }) {
        return j;
    }
    HIGHLIGHTS.with(|h| h.set(h.get() + 1));
    let j = job(code, lang, dark, font);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_ENTRIES {
            c.remove(0);
        }
        c.push((key, j.clone()));
    });
    j
}

/// A code editor with highlighting; memoises the last layout so typing stays cheap.
pub fn code_editor(
    ui: &mut egui::Ui,
    text: &mut String,
    lang: &str,
    rows: usize,
    id: &str,
) -> egui::Response {
    let dark = ui.visuals().dark_mode;
    let lang = lang.to_string();
    let mut layouter =
        move |ui: &egui::Ui, buf: &dyn egui::TextBuffer, wrap: f32| -> Arc<egui::Galley> {
            let font = egui::TextStyle::Monospace.resolve(ui.style());
            let mut j = cached_job(buf.as_str(), &lang, dark, font);
            j.wrap.max_width = wrap;
            ui.ctx().fonts_mut(|f| f.layout_job(j))
        };
    ui.add(
        egui::TextEdit::multiline(text)
            .id_salt(id)
            .code_editor()
            .desired_rows(rows)
            .desired_width(f32::INFINITY)
            .layouter(&mut layouter),
    )
}

/// Warms the syntect sets on a background thread so the first frame does not wait for them.
/// syntect compiles a syntax's regexes when they are first matched, so a short Python text is
/// highlighted here too: without it the first frame that shows output took 40 ms in the Output
/// panel (2–3 ms in the frames after), a long frame in the middle of the run.
pub fn preload() {
    std::thread::spawn(|| {
        let _ = job(WARM_UP, "py", true, FontId::monospace(12.0));
    });
}

/// Common Python constructs, so that the patterns they need are compiled before a run.
const WARM_UP: &str = "import os\nfrom a.b import c as d\n\n\n@decorator\nclass Stack(Base):\n    \"\"\"Docstring.\"\"\"\n\n    def push(self, x: int = 0, *args, **kw) -> None:\n        # comment\n        if not x or x in (1, 2.5, 0x1f) and f\"{x!r}\" != 'y':\n            return [i for i in range(len(x))]\n        while True:\n            try:\n                yield lambda y: y % 2\n            except (KeyError, ValueError) as e:\n                raise RuntimeError(b\"bytes\") from e\n";
