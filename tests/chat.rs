//! Chat templates rendered with minijinja against golden strings from transformers'
//! `apply_chat_template` (tests/fixtures/chat_golden.json, see tests/fixtures/README.md).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;
use unmask::chat::{self, ChatTemplate, Message};
use unmask::model::DiffusionModel;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn golden() -> Value {
    let file = fixtures().join("chat_golden.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn templates_match_transformers() {
    let g = golden();
    let cases = g["cases"].as_array().expect("cases");
    let mut checked = 0;
    for case in cases {
        let name = format!("{} / {}", case["template"], case["messages"]);
        let cfg_path = case["tokenizer_config"].as_str().expect("tokenizer_config");
        let cfg_file = if Path::new(cfg_path).is_absolute() {
            PathBuf::from(cfg_path)
        } else {
            fixtures().join(cfg_path)
        };
        let text = std::fs::read_to_string(&cfg_file)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", cfg_file.display()));
        let cfg: Value = serde_json::from_str(&text).expect("tokenizer_config JSON");
        let tpl = ChatTemplate::from_tokenizer_config(&cfg, &cfg_file)
            .unwrap_or_else(|| panic!("{name}: no chat_template"));
        let key = case["messages"].as_str().expect("messages key");
        let messages: Vec<Message> =
            serde_json::from_value(g["messages"][key].clone()).expect("messages");
        let add = case["add_generation_prompt"].as_bool().unwrap_or(true);
        let got = tpl
            .render(&messages, add)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = case["text"].as_str().expect("text");
        assert_eq!(got, want, "{name}");

        // Where the golden file has ids, the fixture tokenizer must give the same ones.
        if let Some(ids) = case.get("input_ids").and_then(Value::as_array) {
            let want_ids: Vec<u32> = ids
                .iter()
                .filter_map(Value::as_u64)
                .map(|i| i as u32)
                .collect();
            let folder = cfg_file.parent().expect("folder");
            let tok =
                tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).expect("tokenizer");
            let enc = tok.encode(got.as_str(), false).expect("encode");
            assert_eq!(enc.get_ids(), &want_ids[..], "{name}: ids");
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} cases checked");
}

#[test]
fn preview_shows_the_exact_tokens() {
    let g = golden();
    // BOS per family as tests/fixtures/README.md lists it, where the reference prepends one to an
    // untemplated prompt (LLaDA's tokenizer, Dream's evaluations; SDAR never).
    for (family, bos) in [
        ("llada", Some(374u32)),
        ("dream", Some(398)),
        ("sdar", None),
    ] {
        let m =
            DiffusionModel::load(&fixtures().join(family), DType::F32, &Device::Cpu).expect("load");
        // What transformers' apply_chat_template renders and its tokenizer encodes.
        let case = g["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["template"] == family && c["messages"] == "user_only")
            .expect("golden case");
        let msg = g["messages"]["user_only"][0]["content"]
            .as_str()
            .expect("content");
        let want_ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).expect("ids");
        let p = chat::preview(&m, msg, true).expect("preview");
        assert!(p.templated, "{family}");
        assert_eq!(p.text, case["text"].as_str().expect("text"), "{family}");
        assert_eq!(p.ids, want_ids, "{family}");
        assert_eq!(p.ids.len(), p.tokens.len());
        let tok = tokenizers::Tokenizer::from_file(fixtures().join(family).join("tokenizer.json"))
            .expect("tokenizer");
        assert_eq!(
            p.tokens[1],
            tok.id_to_token(want_ids[1]).expect("token"),
            "{family}"
        );

        let plain = chat::preview(&m, "abc", false).expect("preview");
        assert!(!plain.templated);
        assert_eq!(plain.text, "abc");
        let mut want: Vec<u32> = bos.into_iter().collect();
        want.extend(tok.encode("abc", false).expect("encode").get_ids());
        assert_eq!(plain.ids, want, "{family}: plain prompt");
    }
}
