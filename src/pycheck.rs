//! Does generated code parse as Python? The one home of that judgement, used by `unmask eval`,
//! `unmask self-train` and the race's quality line. The parser is `rustpython-parser` (a Python 3
//! grammar in Rust), checked against CPython's `ast.parse` on the eval prompts' completions and
//! on every line prefix of the held-out prompts (docs/eval agreement figures in `docs/benchmarks.md`).

use rustpython_parser::{parse, Mode};

/// Whether `src` parses as a Python module. A NUL byte is an error, as in `ast.parse`.
pub fn parses(src: &str) -> bool {
    !src.contains('\0') && parse(src, Mode::Module, "<generated>").is_ok()
}

/// The validity rule for a completion of `prompt`: unless the model ended it with end-of-text
/// (`stopped`), the completion is cut after its last newline; it is valid when prompt + cut
/// completion parses, or parses once its last line is dropped (a compound statement whose body the
/// length limit cut off) — and at least one complete, non-blank generated line remains.
pub fn judge(prompt: &str, completion: &str, stopped: bool) -> bool {
    let comp = if stopped {
        completion
    } else {
        completion.rfind('\n').map_or("", |i| &completion[..=i])
    };
    let lines = split_lines(comp);
    let blank = |l: &&str| l.trim().is_empty();
    if lines.iter().all(blank) {
        return false;
    }
    if parses(&format!("{prompt}{comp}")) {
        return true;
    }
    let head = &lines[..lines.len() - 1];
    !head.is_empty() && !head.iter().all(blank) && parses(&format!("{prompt}{}", head.concat()))
}

/// Lines with their endings, split where Python's `str.splitlines` splits.
fn split_lines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let end = match c {
            '\r' => match it.peek() {
                Some(&(j, '\n')) => {
                    it.next();
                    j + 1
                }
                _ => i + 1,
            },
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => i + c.len_utf8(),
            _ => continue,
        };
        out.push(&s[start..end]);
        start = end;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_modules() {
        assert!(parses("def f(x):\n    return x + 1\n"));
        assert!(parses("match x:\n    case [a, *_]:\n        pass\n"));
        assert!(!parses("def f(x)\n    return x\n"));
        assert!(!parses("x = (1,\n"));
        assert!(!parses("x = 1\0"));
    }

    #[test]
    fn the_rule_cuts_at_the_last_line_and_forgives_a_cut_body() {
        let p = "def f(x):\n";
        assert!(
            judge(p, "    return x\n    y = (", false),
            "the partial line is cut"
        );
        assert!(
            judge(p, "    return x", true),
            "a stopped run is judged whole"
        );
        assert!(!judge(p, "    return x", false), "no complete line");
        assert!(!judge(p, "    y = (\n    return x", true));
        // `if x:` with its body cut off by the length limit: valid once that line is dropped.
        assert!(judge(p, "    y = x\n    if y:\n", false));
        assert!(!judge(p, "    if y:\n", false), "nothing generated remains");
        assert!(!judge(p, "   \n", false), "blank lines only");
        assert!(!judge(p, "no newline", false));
    }

    #[test]
    fn lines_split_as_python_splits_them() {
        assert_eq!(
            split_lines("a\r\nb\rc\x0cd"),
            vec!["a\r\n", "b\r", "c\x0c", "d"]
        );
        assert_eq!(split_lines(""), Vec::<&str>::new());
    }
}
