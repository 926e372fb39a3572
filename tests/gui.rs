//! The playground window driven through egui_kittest: real widgets clicked, real runs on the
//! embedded model (or the tiny SDAR fixture until the embedded model is trained), and image
//! snapshots rendered with a wgpu software adapter.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use unmask::gui::store::RunStatus;
use unmask::gui::PlaygroundApp;
use unmask::sampler::SamplerParams;
use unmask::trace::{
    Commit, Finish, FinishReason, Metrics, Reopen, StepEvent, TaskKind, Trace, TraceHeader,
    TRACE_VERSION,
};

/// The embedded model, or the tiny SDAR fixture while `assets/` has no trained model yet.
fn model_dir() -> PathBuf {
    let embedded = unmask::model::embedded_dir();
    if embedded.join("config.json").exists() {
        embedded
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdar")
    }
}

fn harness() -> Harness<'static, PlaygroundApp> {
    let dir = model_dir();
    // The model may write any character (tokens are bytes); missing glyphs must not fail a test.
    Harness::builder()
        .with_size([1400.0, 900.0])
        .allow_missing_glyphs()
        .build_eframe(move |_cc| PlaygroundApp::new_for_test(&dir))
}

/// Steps the harness (letting the engine thread work between frames) until `done` holds.
fn step_until(
    h: &mut Harness<'_, PlaygroundApp>,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&mut PlaygroundApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state_mut()) {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

fn wait_model(h: &mut Harness<'_, PlaygroundApp>) {
    step_until(h, "the model to load", Duration::from_secs(120), |a| {
        assert!(
            a.model_error().is_none(),
            "model failed: {:?}",
            a.model_error()
        );
        a.model_ready()
    });
}

/// Steps until the background file work (open, save, export) has ended.
fn wait_io(h: &mut Harness<'_, PlaygroundApp>) {
    step_until(h, "file work to end", Duration::from_secs(30), |a| {
        !a.io_busy()
    });
}

fn set_number(h: &mut Harness<'_, PlaygroundApp>, label: &str, v: f64) {
    h.get_by_role_and_label(Role::SpinButton, label)
        .set_value_accesskit(v);
    h.run_steps(2);
}

/// Sets a small run with the controls, presses Generate and waits for the end.
fn generate(h: &mut Harness<'_, PlaygroundApp>, gen: usize, block: usize, steps: usize) {
    wait_model(h);
    set_number(h, "gen length", gen as f64);
    set_number(h, "block size", block as f64);
    set_number(h, "steps per block", steps as f64);
    // The window's default rule is the confidence threshold (steps are then only an upper
    // bound); this run checks the fixed step count, so use the scheduled rule.
    h.state_mut().settings.params.rule = unmask::sampler::UnmaskRule::LowConfidence;
    h.run_steps(1);
    // A stop token would leave later blocks masked; turn stopping off so the canvas fills up.
    if h.state().settings.params.stop_at_eos {
        h.get_by_label("stop at EOS").click();
        h.run_steps(2);
    }
    assert!(!h.state().settings.params.stop_at_eos);
    h.get_by_label("Generate").click();
    h.run_steps(2);
    step_until(h, "the run to finish", Duration::from_secs(120), |a| {
        !a.running()
    });
    assert!(
        matches!(h.state().store.main.status, RunStatus::Finished(_)),
        "status: {:?}",
        h.state().store.main.status
    );
}

#[test]
fn generate_uses_the_controls_and_fills_canvas_and_metrics() {
    let mut h = harness();
    generate(&mut h, 32, 8, 2);
    let app = h.state_mut();
    let t = app.store.trace().expect("a trace").clone();
    assert_eq!(t.header.params.gen_length, 32);
    assert_eq!(t.header.params.block_size, 8);
    assert_eq!(t.header.params.steps, 2);
    // Block-causal models align blocks to absolute positions, so the region may span one more.
    let blocks = t.events.iter().map(|e| e.block).max().map_or(0, |b| b + 1);
    assert!(blocks <= 32 / 8 + 1, "{blocks} blocks");
    assert!(
        t.len() <= blocks * 2,
        "{} steps for {blocks} blocks of at most 2 steps",
        t.len()
    );
    assert!(t
        .events
        .iter()
        .all(|e| e.step < 2 && e.block_end - e.block_start == 8));
    let cells = app.displayed_cells();
    let region = &cells[t.header.gen_start..t.header.gen_end];
    assert!(
        region.iter().all(|c| !c.masked),
        "masked tiles left at the end"
    );
    assert_eq!(app.store.cursor, t.len());
    let m = app.store.metrics().expect("metrics");
    assert!(m.tokens_per_second() > 0.0 && m.forwards > 0);
    h.run_steps(1);
    h.get_by_label("tokens/s");
    let shown = format!("{:.1}", m.tokens_per_second());
    assert!(
        h.query_all_by_label(&shown).next().is_some(),
        "tokens/s value {shown} not shown"
    );
    assert!(h.query_by_label("masks left").is_some());
}

/// Checks the canvas shown after `k` steps against what the sampler recorded while it ran, not
/// against a replay: the initial canvas at 0; after step k, that step's commits in place with its
/// index, as many masks in the generated region as it left, the prompt untouched; at the end, the
/// finished run's tokens.
fn check_canvas(cells: &[unmask::trace::Cell], t: &unmask::trace::Trace, k: usize) {
    let h = &t.header;
    let tokens: Vec<u32> = cells.iter().map(|c| c.token).collect();
    assert_eq!(tokens.len(), h.initial.len(), "step {k}: canvas length");
    assert_eq!(
        tokens[..h.gen_start],
        h.initial[..h.gen_start],
        "step {k}: prompt"
    );
    if k == 0 {
        assert_eq!(tokens, h.initial, "before the first step");
        assert!(cells.iter().all(|c| c.committed_at.is_none()));
        return;
    }
    let e = &t.events[k - 1];
    for c in &e.commits {
        let cell = &cells[c.pos];
        assert_eq!(
            (cell.token, cell.committed_at, cell.masked),
            (c.token, Some(e.index), false),
            "step {k}: position {}",
            c.pos
        );
    }
    let masks = cells[h.gen_start..h.gen_end]
        .iter()
        .filter(|c| c.masked)
        .count();
    assert_eq!(masks, e.masks_left, "step {k}: masks left");
    if k == t.len() {
        let fin = t.finish.as_ref().expect("finished");
        assert_eq!(
            tokens[h.gen_start..h.gen_start + fin.tokens.len()],
            fin.tokens[..],
            "the finished canvas"
        );
    }
}

#[test]
fn scrubbing_shows_the_canvas_of_that_step() {
    let mut h = harness();
    generate(&mut h, 32, 8, 4);
    let t = h.state().store.trace().expect("trace").clone();
    assert!(t.len() >= 3);
    h.key_press(egui::Key::Home);
    h.run_steps(1);
    assert_eq!(h.state().store.cursor, 0);
    check_canvas(&h.state_mut().displayed_cells(), &t, 0);
    for k in 1..=3 {
        h.key_press(egui::Key::ArrowRight);
        h.run_steps(1);
        assert_eq!(h.state().store.cursor, k);
        check_canvas(&h.state_mut().displayed_cells(), &t, k);
    }
    h.key_press(egui::Key::ArrowLeft);
    h.run_steps(1);
    check_canvas(&h.state_mut().displayed_cells(), &t, 2);
    h.get_by_label_contains(&format!("step 2 of {}", t.len()));
    h.key_press(egui::Key::End);
    h.run_steps(1);
    assert_eq!(h.state().store.cursor, t.len());
    check_canvas(&h.state_mut().displayed_cells(), &t, t.len());
}

#[test]
fn a_saved_trace_reopens_with_the_same_canvas() {
    let mut h = harness();
    generate(&mut h, 32, 8, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.jsonl");
    let before = h.state().store.trace().expect("trace").clone();
    h.state_mut().store.set_cursor(3);
    let canvas = h.state_mut().displayed_cells();
    h.state_mut().save_trace(&path);
    wait_io(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    // A fresh window opens it through the same path the Open dialog takes.
    let mut h2 = harness();
    h2.state_mut().open_trace(&path);
    wait_io(&mut h2);
    assert!(h2.state().errors().is_empty(), "{:?}", h2.state().errors());
    // Timings pass through JSON text and may differ in the last bit; what was decoded may not.
    let after = h2.state().store.trace().expect("trace").clone();
    assert_eq!(after.header, before.header);
    assert_eq!(after.len(), before.len());
    assert_eq!(
        after.finish.as_ref().map(|f| &f.tokens),
        before.finish.as_ref().map(|f| &f.tokens)
    );
    check_canvas(&h2.state_mut().displayed_cells(), &before, before.len());
    h2.state_mut().store.set_cursor(3);
    h2.run_steps(1);
    assert_eq!(h2.state_mut().displayed_cells(), canvas);
}

#[test]
fn a_bad_trace_shows_an_error_and_the_app_keeps_running() {
    let mut h = harness();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "this is not a trace\n").expect("write");
    h.state_mut().open_trace(&garbage);
    wait_io(&mut h);
    h.get_by_label_contains("Could not open trace");
    h.get_by_label_contains("garbage.jsonl, line 1");

    // A good trace cut in the middle of a step record.
    let good = dir.path().join("good.jsonl");
    synthetic_trace().save(&good).expect("save");
    let text = std::fs::read_to_string(&good).expect("read");
    let cut = dir.path().join("truncated.jsonl");
    std::fs::write(&cut, &text[..text.len() * 2 / 3]).expect("write");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert!(h.state().errors().is_empty());
    h.state_mut().open_trace(&cut);
    wait_io(&mut h);
    h.get_by_label_contains("truncated.jsonl, line");
    assert!(
        h.state().store.trace().is_none(),
        "a bad file must not replace the canvas"
    );

    // Still alive: the good one opens and draws.
    h.get_by_label("Dismiss").click();
    h.state_mut().open_trace(&good);
    wait_io(&mut h);
    assert!(h.state().errors().is_empty());
    assert_eq!(h.state().store.len(), synthetic_trace().len());
}

#[test]
fn cancel_stops_a_run() {
    let mut h = harness();
    wait_model(&mut h);
    set_number(&mut h, "gen length", 448.0);
    set_number(&mut h, "block size", 1.0);
    set_number(&mut h, "steps per block", 1.0);
    h.state_mut().settings.params.kv_cache = false;
    h.get_by_label("Generate").click();
    h.run_steps(1);
    assert!(h.state().running());
    h.get_by_label("Cancel").click();
    let start = Instant::now();
    let mut frames = 0;
    while h.state().running() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "cancel took longer than 10 s"
        );
        h.step();
        frames += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        h.state().store.main.status,
        RunStatus::Finished(FinishReason::Cancelled)
    );
    let t = h.state().store.trace().expect("trace kept");
    assert!(t.len() < 448, "the run went on to the end");
    assert!(frames < 200, "{frames} frames");
}

/// A small hand-made run: fixed numbers, so snapshots do not depend on timing.
fn synthetic_trace() -> Trace {
    let prompt = ["def", " inc", "(x", "):"];
    let gen = [
        "\n", "   ", " y", " =", " x", " +", " 1", "\n", "   ", " return", " y", "\n", "\n",
        "print", "(inc", "(1))",
    ];
    let (mask, n_prompt, n_gen) = (99u32, prompt.len(), gen.len());
    let params = SamplerParams {
        gen_length: n_gen,
        block_size: 8,
        steps: 4,
        ..SamplerParams::default()
    };
    let mut initial: Vec<u32> = (0..n_prompt as u32).collect();
    initial.extend(std::iter::repeat_n(mask, n_gen));
    let mut initial_text: Vec<String> = prompt.iter().map(|s| s.to_string()).collect();
    initial_text.extend(std::iter::repeat_n("[MASK]".to_string(), n_gen));
    let header = TraceHeader {
        version: TRACE_VERSION,
        model_id: "synthetic".into(),
        model_hash: "0000".into(),
        family: "sdar".into(),
        tokenizer: "synthetic".into(),
        params,
        task: TaskKind::Complete,
        prompt: prompt.concat(),
        mask_id: mask,
        stop_ids: vec![],
        vocab_size: None,
        initial,
        initial_text,
        gen_start: n_prompt,
        gen_end: n_prompt + n_gen,
        device: "cpu".into(),
        heal: None,
        intervention: None,
    };
    let mut t = Trace::new(header);
    // Each block: steps commit 2 positions in a fixed, non-left-to-right order.
    let order = [3usize, 0, 6, 1, 2, 7, 4, 5];
    let mut nfe = 0;
    for block in 0..2 {
        for step in 0..4 {
            let commits = order[step * 2..step * 2 + 2]
                .iter()
                .map(|&o| {
                    let i = block * 8 + o;
                    let prob = 0.35 + 0.08 * ((i * 7) % 8) as f32;
                    Commit {
                        pos: n_prompt + i,
                        token: 100 + i as u32,
                        text: gen[i].into(),
                        prob,
                        score: prob,
                        top: vec![
                            (100 + i as u32, gen[i].into(), prob),
                            (7, " z".into(), (1.0 - prob) / 2.0),
                        ],
                        previous: None,
                    }
                })
                .collect();
            nfe += 1;
            let index = block * 4 + step;
            t.events.push(StepEvent {
                index,
                block,
                step,
                block_start: n_prompt + block * 8,
                block_end: n_prompt + block * 8 + 8,
                planned: 2,
                commits,
                reopened: if index == 6 {
                    vec![Reopen {
                        pos: n_prompt + 11,
                        token: 111,
                        text: gen[11].into(),
                        prob: 0.2,
                    }]
                } else {
                    vec![]
                },
                best_left: if step < 3 {
                    Some((n_prompt + block * 8 + order[step * 2 + 2], 0.3))
                } else {
                    None
                },
                masks_left: n_gen - (index + 1) * 2,
                in_flight: 8,
                forward_ms: 10.0,
                step_ms: 12.0,
                nfe,
                elapsed_ms: 12.0 * (index + 1) as f64,
            });
        }
    }
    // Step 7 re-opened position 11 (already committed at step 6); commit it again as a revision.
    if let Some(e) = t.events.get_mut(7) {
        e.commits.push(Commit {
            pos: n_prompt + 11,
            token: 111,
            text: gen[11].into(),
            prob: 0.9,
            score: 0.9,
            top: vec![],
            previous: Some(111),
        });
    }
    t.finish = Some(Finish {
        reason: FinishReason::Complete,
        tokens: (0..n_gen as u32).map(|i| 100 + i).collect(),
        text: gen.concat(),
        metrics: Metrics {
            total_ms: 96.0,
            forwards: 8,
            tokens: n_gen,
            steps: 8,
            first_block_ms: 48.0,
        },
        repaired_distance: None,
    });
    t
}

/// The race's two lanes from the synthetic run: AR one token per step, diffusion as above.
fn synthetic_race(app: &mut PlaygroundApp) {
    let diffusion = synthetic_trace();
    let mut ar = diffusion.clone();
    ar.header.params.block_size = 1;
    ar.header.params.steps = 1;
    ar.events.clear();
    let n = diffusion.header.gen_end - diffusion.header.gen_start;
    for i in 0..n {
        let c = diffusion
            .events
            .iter()
            .flat_map(|e| e.commits.iter())
            .find(|c| c.pos == diffusion.header.gen_start + i)
            .cloned();
        let Some(c) = c else { continue };
        let pos = c.pos;
        ar.events.push(StepEvent {
            index: i,
            block: i,
            step: 0,
            block_start: pos,
            block_end: pos + 1,
            planned: 1,
            commits: vec![c],
            reopened: vec![],
            best_left: None,
            masks_left: n - i - 1,
            in_flight: 1,
            forward_ms: 9.0,
            step_ms: 10.0,
            nfe: i + 1,
            elapsed_ms: 10.0 * (i + 1) as f64,
        });
    }
    if let Some(f) = ar.finish.as_mut() {
        f.metrics = Metrics {
            total_ms: 160.0,
            forwards: n,
            tokens: n,
            steps: n,
            first_block_ms: 10.0,
        };
    }
    let s = &mut app.store;
    s.begin(unmask::gui::store::Lane::RaceAr);
    s.begin(unmask::gui::store::Lane::RaceDiffusion);
    s.race_ar.trace = Some(Arc::new(ar));
    s.race_ar.status = RunStatus::Finished(FinishReason::Complete);
    s.race_diffusion.trace = Some(Arc::new(diffusion));
    s.race_diffusion.status = RunStatus::Finished(FinishReason::Complete);
    s.race_playing = false;
    s.race_clock_ms = 60.0;
}

/// CI services set `CI=true`; there a missing renderer is a broken machine, not a skip.
fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[test]
fn snapshots_of_the_main_views() {
    // The software renderer (lavapipe) is the reference. Without any adapter there is nothing to
    // compare: a developer's machine says so and passes, CI (which installs lavapipe) fails.
    let renderer = std::panic::catch_unwind(egui_kittest::wgpu::WgpuTestRenderer::new);
    let Ok(renderer) = renderer else {
        let msg = "snapshots_of_the_main_views: no wgpu adapter (install mesa-vulkan-drivers)";
        assert!(!running_in_ci(), "{msg}");
        eprintln!("SKIPPED {msg}");
        return;
    };
    let dir = model_dir();
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .allow_missing_glyphs()
        .renderer(renderer)
        .build_eframe(move |_cc| PlaygroundApp::new_for_test(&dir));
    wait_model(&mut h);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("synthetic.jsonl");
    synthetic_trace().save(&path).expect("save");
    h.state_mut().open_trace(&path);
    wait_io(&mut h);
    h.state_mut().store.set_cursor(7);
    h.run_steps(4);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let opts = egui_kittest::SnapshotOptions::new()
        .threshold(2.0)
        .max_failed_pixels(3000);
    let mut results = egui_kittest::SnapshotResults::new();
    results.add(h.try_snapshot_options("canvas_commit_step", &opts));

    h.state_mut().settings.color_mode = unmask::gui::colors::ColorMode::Probability;
    h.state_mut().store.set_cursor(8);
    h.run_steps(3);
    results.add(h.try_snapshot_options("canvas_probability", &opts));

    synthetic_race(h.state_mut());
    h.state_mut().settings.view = unmask::gui::settings::View::Race;
    h.run_steps(3);
    results.add(h.try_snapshot_options("race", &opts));
    results.unwrap();
}

/// `width` generated positions decoded one per step, left to right, over `steps` steps (the
/// rest stay masked); every 40th token ends a line so the canvas has rows.
fn long_trace(width: usize, steps: usize) -> Trace {
    let mask = 9u32;
    let params = SamplerParams {
        gen_length: width,
        block_size: 1,
        steps: 1,
        ..SamplerParams::default()
    };
    let mut initial = vec![1u32];
    initial.extend(std::iter::repeat_n(mask, width));
    let mut initial_text = vec!["#".to_string()];
    initial_text.extend(std::iter::repeat_n("[MASK]".to_string(), width));
    let header = TraceHeader {
        version: TRACE_VERSION,
        model_id: "synthetic".into(),
        model_hash: "0000".into(),
        family: "sdar".into(),
        tokenizer: "synthetic".into(),
        params,
        task: TaskKind::Complete,
        prompt: "#".into(),
        mask_id: mask,
        stop_ids: vec![],
        vocab_size: None,
        initial,
        initial_text,
        gen_start: 1,
        gen_end: 1 + width,
        device: "cpu".into(),
        heal: None,
        intervention: None,
    };
    let mut t = Trace::new(header);
    for i in 0..steps.min(width) {
        let pos = 1 + i;
        t.events.push(StepEvent {
            index: i,
            block: i,
            step: 0,
            block_start: pos,
            block_end: pos + 1,
            planned: 1,
            commits: vec![Commit {
                pos,
                token: 20 + (i % 7) as u32,
                text: if i % 40 == 39 {
                    "x\n".into()
                } else {
                    "x".into()
                },
                prob: (i % 10) as f32 / 10.0,
                score: (i % 13) as f32,
                top: vec![],
                previous: None,
            }],
            reopened: vec![],
            best_left: None,
            masks_left: width - i - 1,
            in_flight: 1,
            forward_ms: 1.0,
            step_ms: 1.0,
            nfe: i + 1,
            elapsed_ms: (i + 1) as f64,
        });
    }
    t
}

#[test]
fn a_new_step_writes_one_commit_map_row_and_uploads_only_it() {
    use unmask::gui::commit_map::{Raster, Synced, MAX_SIDE};
    // Past MAX_SIDE steps the map halves its resolution in time; appending stays one row.
    let full = long_trace(300, MAX_SIDE + 700);
    let full = {
        // More steps than positions: repeat commits over the same positions.
        let mut t = full;
        let n = t.events.len();
        for i in n..MAX_SIDE + 700 {
            let mut e = t.events[i % n].clone();
            e.index = i;
            t.events.push(e);
        }
        t
    };
    let mut partial = Trace::new(full.header.clone());
    let mut r = Raster::new(&partial, 1);
    for e in &full.events {
        partial.events.push(e.clone());
        let before = r.rows_written;
        let synced = Synced::of(&r);
        let generation = r.generation;
        r.update(&partial);
        assert_eq!(
            r.rows_written - before,
            1,
            "rows written for step {}",
            e.index
        );
        if synced.rows > 0 && r.generation == generation {
            let send = synced
                .rows_to_send(&r)
                .expect("an append, not a full upload");
            assert_eq!(send.len(), 1, "rows uploaded for step {}", e.index);
        }
        assert!(r.rows <= MAX_SIDE && r.cols <= MAX_SIDE);
    }
    assert_eq!(r.steps_per_row, 2);
    let bulk = Raster::build(&full, 1);
    assert_eq!((bulk.rows, bulk.cols), (r.rows, r.cols));
    assert!(bulk.data == r.data, "streamed and bulk rasters differ");
}

#[test]
fn a_frame_after_a_new_step_does_one_step_of_work() {
    use unmask::engine::Event;
    use unmask::gui::store::Lane;
    let mut h = harness();
    let full = long_trace(400, 60);
    let run = h.state_mut().store.begin(Lane::Main);
    h.state_mut().store.apply(Event::Started {
        run,
        header: Box::new(full.header.clone()),
    });
    h.run_steps(2);
    for e in full.events.iter().take(50) {
        let app = h.state_mut();
        let rows = app.commit_map_raster().map_or(0, |r| r.rows_written);
        let uploaded = app.commit_map_rows_uploaded();
        let canvas = app.store.canvas.work;
        app.store.apply(Event::Step {
            run,
            event: Box::new(e.clone()),
        });
        h.run_steps(1);
        let highlights = unmask::gui::highlight::highlights_run();
        // Frames with nothing new do no work.
        h.run_steps(2);
        assert_eq!(unmask::gui::highlight::highlights_run(), highlights);
        let app = h.state_mut();
        let r = app.commit_map_raster().expect("raster");
        assert_eq!(
            r.rows_written - rows,
            1,
            "commit-map rows built for step {}",
            e.index
        );
        assert_eq!(r.steps, e.index + 1);
        let work = app.store.canvas.work;
        assert_eq!(
            work.replays, canvas.replays,
            "the canvas was replayed from step 0"
        );
        assert_eq!(work.steps_applied - canvas.steps_applied, 1);
        if e.index > 0 {
            // The CPU painter recolours everything when the colour scale moves (commit-step
            // colours are relative to the run's length); in probability mode it only appends.
            assert!(app.commit_map_rows_uploaded() >= uploaded);
        }
    }
    // Probability colours do not depend on the run's length: each step uploads one row.
    h.state_mut().settings.color_mode = unmask::gui::colors::ColorMode::Probability;
    h.run_steps(2);
    for e in full.events.iter().skip(50) {
        let uploaded = h.state().commit_map_rows_uploaded();
        h.state_mut().store.apply(Event::Step {
            run,
            event: Box::new(e.clone()),
        });
        h.run_steps(1);
        assert_eq!(h.state().commit_map_rows_uploaded() - uploaded, 1);
    }
}

#[test]
fn a_huge_trace_opens_and_scrubs_in_bounded_memory() {
    use unmask::gui::commit_map::MAX_SIDE;
    let n = 100_000;
    let t = long_trace(n, n);
    let mut h = harness();
    h.state_mut().store.load(t);
    h.run_steps(2);
    let r = h.state().commit_map_raster().expect("raster");
    assert!(
        r.cols <= MAX_SIDE && r.rows <= MAX_SIDE,
        "{} × {}",
        r.cols,
        r.rows
    );
    assert!(r.data.len() <= MAX_SIDE * MAX_SIDE);
    assert_eq!(r.steps, n);
    assert!(r.pos_per_col > 1 && r.steps_per_row > 1);
    h.state_mut().store.set_cursor(n / 2);
    h.run_steps(1);
    let cells = h.state_mut().displayed_cells();
    assert!(!cells[n / 2].masked && cells[n / 2 + 1].masked);
    h.key_press(egui::Key::Home);
    h.run_steps(1);
    assert_eq!(h.state().store.cursor, 0);
}

#[test]
fn a_fifo_trace_does_not_freeze_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("trace.fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(ok.success());
    let mut h = harness();
    h.state_mut().open_trace(&fifo);
    // Traces are read only from regular files (issue 12): a FIFO is a clear error, not a read
    // that waits for a writer; either way the window keeps drawing frames meanwhile.
    for _ in 0..5 {
        h.run_steps(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_io(&mut h);
    let errors = h.state().errors().join("\n");
    assert!(
        errors.contains("trace.fifo") && errors.contains("FIFO"),
        "{errors}"
    );
    assert_eq!(h.state().store.len(), 0);
}

#[test]
fn the_canvas_png_draws_the_token_text() {
    let mut h = harness();
    h.state_mut().store.load(synthetic_trace());
    h.run_steps(2);
    let ctx = h.ctx.clone();
    let img = h.state_mut().canvas_image(&ctx).expect("image");
    if let Ok(p) = std::env::var("UNMASK_SAVE_CANVAS_PNG") {
        img.save(p).expect("save");
    }
    // Glyph pixels are the text colours the canvas uses on its tiles (dark or light).
    let text_px = img
        .pixels()
        .filter(|p| matches!(p.0, [20, 20, 20, 255] | [235, 235, 235, 255]))
        .count();
    assert!(text_px > 100, "{text_px} text pixels");
    let map = h.state().commit_map_image().expect("map");
    assert!(map.width() >= 16 && map.height() >= 8);
}

#[test]
fn the_race_line_compares_speed_and_output() {
    assert_eq!(unmask::gui::race::edit_distance(&[1, 2, 3], &[1, 3]), 1);
    assert_eq!(unmask::gui::race::edit_distance(&[], &[4, 5]), 2);
    assert_eq!(unmask::gui::race::edit_distance(&[1, 2], &[2, 1]), 2);
    let mut h = harness();
    synthetic_race(h.state_mut());
    h.state_mut().settings.view = unmask::gui::settings::View::Race;
    h.run_steps(2);
    // AR: 16 tokens in 160 ms; diffusion: 16 in 96 ms.
    assert!(
        (unmask::gui::race::speedup(&h.state().store).expect("speedup") - 160.0 / 96.0).abs()
            < 1e-9
    );
    h.get_by_label_contains("speedup ×1.67");
    h.get_by_label_contains("token edit distance 0");
    h.get_by_label_contains("100.0 tokens/s · 16 forwards");
}

#[test]
fn gui_flags_set_the_window_and_the_report_counts_frames() {
    use clap::Parser;
    let cli = unmask::cli::Cli::try_parse_from([
        "unmask",
        "gui",
        "--prompt",
        "def f():\n",
        "--gen-length",
        "40",
        "--block-size",
        "8",
        "--steps",
        "4",
        "--no-stop",
        "--run",
        "--quit-when-done",
        "--report",
        "r.json",
    ])
    .expect("flags parse");
    let Some(unmask::cli::Command::Gui(args)) = cli.command else {
        panic!("not the gui command")
    };
    assert!(args.run && args.quit_when_done);
    let mut settings = unmask::gui::settings::Settings::default();
    let kept_temperature = settings.params.temperature;
    unmask::gui::apply_args(&mut settings, &args);
    assert_eq!(settings.prompt, "def f():\n");
    assert_eq!(
        (
            settings.params.gen_length,
            settings.params.block_size,
            settings.params.steps
        ),
        (40, 8, 4)
    );
    assert!(!settings.params.stop_at_eos);
    assert_eq!(settings.params.temperature, kept_temperature);
    assert!(unmask::cli::Cli::try_parse_from(["unmask", "gui", "--run", "--race"]).is_err());

    let mut h = harness();
    generate(&mut h, 16, 8, 2);
    let r = h.state().report();
    assert!(r.frames > 0 && r.frame_ms_max >= r.frame_ms_median);
    let run = r.run.expect("run figures");
    assert!(run.tokens > 0 && run.tokens_per_second > 0.0);
    assert_eq!((run.block_size, run.steps_per_block), (8, 2));
}

#[test]
fn the_decoding_exports_as_an_animated_png_one_frame_per_step() {
    let mut h = harness();
    h.state_mut().store.load(synthetic_trace());
    h.run_steps(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("decoding.png");
    let ctx = h.ctx.clone();
    // At 2.5 steps a second each frame shows for 0.4 s.
    h.state_mut().export_animation(&ctx, &path, 2.5);
    wait_io(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&path).expect("written"),
    ));
    let reader = decoder.read_info().expect("a png");
    let anim = reader.info().animation_control().expect("animated");
    assert_eq!(anim.num_frames as usize, synthetic_trace().len() + 1);
    let fc = reader
        .info()
        .frame_control
        .expect("the first frame's control");
    assert_eq!(
        (fc.delay_num, fc.delay_den),
        (100, 250),
        "a frame per step at 2.5 steps/s"
    );
}

#[test]
fn pause_pin_and_continue_make_a_fork_that_replays() {
    use unmask::trace::{Edit, Intervention};
    let mut h = harness();
    generate(&mut h, 32, 8, 4);
    let t = h.state().store.trace().expect("trace").clone();
    // Pause at step 10 (two blocks finished, the third under way) with the timeline keys.
    let at = 10;
    assert!(t.len() > at, "{} steps", t.len());
    h.key_press(egui::Key::Home);
    h.run_steps(1);
    for _ in 0..at {
        h.key_press(egui::Key::ArrowRight);
        h.run_steps(1);
    }
    assert_eq!(h.state().store.cursor, at);
    let cells = t.cells_at(at);
    let pos = (t.header.gen_start..t.header.gen_end)
        .find(|&p| {
            !cells[p].masked && cells[p].top.len() >= 2 && cells[p].top[1].0 != cells[p].token
        })
        .expect("a committed tile with an alternative");
    let (alt, alt_text, _) = cells[pos].top[1].clone();
    // What a click on the tile does.
    h.state_mut().select_tile(pos);
    h.run_steps(2);
    h.get_by_label_contains(&format!("pin #{alt} ")).click();
    h.run_steps(2);
    assert_eq!(h.state().intervene.edits.len(), 1);
    h.get_by_label("Continue from here").click();
    h.run_steps(1);
    step_until(
        &mut h,
        "the fork to finish",
        Duration::from_secs(120),
        |a| !a.running(),
    );
    let fork = h.state().store.fork.trace.clone().expect("a fork");
    let edit = Edit {
        pos,
        token: Some(alt),
        text: alt_text,
    };
    assert_eq!(
        fork.header.intervention,
        Some(Intervention {
            at_step: at,
            edits: vec![edit],
            force_next: vec![],
        })
    );
    assert_eq!(fork.header.initial[pos], alt);
    assert_eq!(fork.tokens_at(fork.len())[pos], alt, "the pin held");
    // Positions committed before the fork point are unchanged except the pinned one.
    let diff = unmask::fork::differing_positions(&t, &fork);
    assert!(diff.contains(&pos));
    assert_eq!(h.state().settings.view, unmask::gui::settings::View::Fork);
    h.run_steps(2);
    h.get_by_label_contains(&format!(
        "{} of {} generated positions differ",
        diff.len(),
        t.header.gen_end - t.header.gen_start
    ));
    // The saved fork keeps its intervention, and decoding its header again reproduces it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fork.jsonl");
    fork.save(&path).expect("save");
    let back = Trace::load(&path).expect("load");
    assert_eq!(back.header, fork.header);
    assert_eq!(back.cells_at(back.len()), fork.cells_at(fork.len()));
    let m = unmask::model::DiffusionModel::load(
        &model_dir(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("model");
    let again = unmask::session::run(
        &m,
        back.header.clone(),
        "cpu",
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("replay decode");
    assert_eq!(
        again.finish.map(|f| f.tokens),
        fork.finish.as_ref().map(|f| f.tokens.clone())
    );
    // The blocks the fork starts with already decoded go into the exact key/value cache once:
    // the cached decode agrees with recomputing everything, and no forward recomputes them.
    let mut uncached = back.header.clone();
    uncached.params.kv_cache = false;
    let plain = unmask::session::run(
        &m,
        uncached,
        "cpu",
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("uncached decode");
    assert_eq!(
        plain.finish.map(|f| f.tokens),
        fork.finish.as_ref().map(|f| f.tokens.clone())
    );
    let block = t.header.params.block_size;
    assert!(
        fork.events.iter().skip(1).all(|e| e.in_flight <= 2 * block),
        "a forward recomputed finished blocks: {:?}",
        fork.events.iter().map(|e| e.in_flight).collect::<Vec<_>>()
    );
}

#[test]
fn a_typed_pin_and_a_forced_commit_make_a_fork_that_replays_and_diffs() {
    let mut h = harness();
    generate(&mut h, 32, 8, 4);
    let t = h.state().store.trace().expect("trace").clone();
    let at = 10;
    assert!(t.len() > at, "{} steps", t.len());
    h.state_mut().store.set_cursor(at);
    h.state_mut().store.follow = false;
    h.run_steps(1);
    let cells = t.cells_at(at);
    // A masked position of the block decoded next that the original did not commit next.
    let next = &t.events[at];
    let committed_next: Vec<usize> = next.commits.iter().map(|c| c.pos).collect();
    let forced = (next.block_start..next.block_end)
        .find(|&p| cells[p].masked && !committed_next.contains(&p))
        .expect("a masked position the original left for later");
    h.state_mut().select_tile(forced);
    h.run_steps(2);
    h.get_by_label("commit next").click();
    h.run_steps(2);
    assert_eq!(h.state().intervene.force, vec![forced]);
    // A committed tile: typed text that is several tokens is refused inline; one token is pinned.
    let pinned = (t.header.gen_start..next.block_start)
        .find(|&p| !cells[p].masked)
        .expect("a committed tile");
    h.state_mut().select_tile(pinned);
    h.run_steps(2);
    h.get_by_role_and_label(Role::TextInput, "token:").focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "token:")
        .type_text("definitely not one token");
    h.run_steps(1);
    h.get_by_label("pin typed").click();
    h.run_steps(2);
    h.get_by_label_contains("not one: pin one token at a time");
    assert_eq!(h.state().intervene.edits.len(), 0);
    let m = unmask::model::DiffusionModel::load(
        &model_dir(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("model");
    let one = "=";
    let id = m.encode(one).expect("encode");
    assert_eq!(id.len(), 1, "{one:?} is one token of the model");
    h.state_mut().intervene.typed.clear();
    h.get_by_role_and_label(Role::TextInput, "token:").focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "token:")
        .type_text(one);
    h.run_steps(1);
    h.get_by_label("pin typed").click();
    h.run_steps(2);
    assert_eq!(h.state().intervene.typed_error, None);
    assert_eq!(h.state().intervene.edits.len(), 1);
    assert_eq!(h.state().intervene.edits[0].token, Some(id[0]));
    h.get_by_label("Continue from here").click();
    h.run_steps(1);
    step_until(
        &mut h,
        "the fork to finish",
        Duration::from_secs(120),
        |a| !a.running(),
    );
    let fork = h.state().store.fork.trace.clone().expect("a fork");
    let iv = fork
        .header
        .intervention
        .clone()
        .expect("intervention recorded");
    assert_eq!((iv.at_step, iv.force_next.clone()), (at, vec![forced]));
    assert_eq!(fork.header.initial[pinned], id[0]);
    assert!(
        fork.events[0].commits.iter().any(|c| c.pos == forced),
        "the forced position committed at the fork's first step"
    );
    // The file keeps the intervention, and decoding its header again reproduces the fork.
    let dir = tempfile::tempdir().expect("tempdir");
    let (pa, pb) = (
        dir.path().join("original.jsonl"),
        dir.path().join("fork.jsonl"),
    );
    t.save(&pa).expect("save");
    fork.save(&pb).expect("save");
    let back = Trace::load(&pb).expect("load");
    assert_eq!(back.header, fork.header);
    let again = unmask::session::run(
        &m,
        back.header.clone(),
        "cpu",
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("replay decode");
    let commits = |t: &Trace| -> Vec<Vec<(usize, u32)>> {
        t.events
            .iter()
            .map(|e| e.commits.iter().map(|c| (c.pos, c.token)).collect())
            .collect()
    };
    assert_eq!(
        commits(&again),
        commits(&fork),
        "the same commits, step by step"
    );
    assert_eq!(
        again.finish.map(|f| f.tokens),
        fork.finish.as_ref().map(|f| f.tokens.clone())
    );
    // File > Diff two saved traces (the paths as the dialogs would give them).
    let want = unmask::fork::differences(&t, &fork);
    assert!(
        want.contains(&(pinned, unmask::fork::Difference::Token)) || cells[pinned].token == id[0]
    );
    h.state_mut().diff_traces(&pa, &pb);
    wait_io(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert_eq!(h.state().settings.view, unmask::gui::settings::View::Fork);
    h.run_steps(2);
    h.get_by_label_contains(&format!(
        "{} of {} generated positions differ",
        want.len(),
        t.header.gen_end - t.header.gen_start
    ));
    // The commit map of the Canvas view marks them.
    h.state_mut().settings.view = unmask::gui::settings::View::Canvas;
    h.run_steps(2);
    h.get_by_label_contains(&format!("{} differ from the fork", want.len()));
    // Traces of different prompts: an error naming both files.
    let other = dir.path().join("other.jsonl");
    let mut different = t.clone();
    different.header.prompt = "class Stack:\n".into();
    different.save(&other).expect("save");
    h.state_mut().diff_traces(&pa, &other);
    wait_io(&mut h);
    let errs = h.state().errors().join("\n");
    assert!(
        errs.contains("different prompts")
            && errs.contains("original.jsonl")
            && errs.contains("other.jsonl"),
        "{errs}"
    );
}

#[test]
fn engine_events_find_their_lane_by_run_id() {
    use unmask::engine::Event;
    use unmask::gui::store::{Lane, Store};
    let header = synthetic_trace().header;
    let mut s = Store::default();
    let ar = s.begin(Lane::RaceAr);
    let diffusion = s.begin(Lane::RaceDiffusion);
    assert_ne!(ar, diffusion);
    s.apply(Event::Started {
        run: diffusion,
        header: Box::new(header.clone()),
    });
    assert!(s.race_diffusion.trace.is_some());
    assert!(s.race_ar.trace.is_none() && s.main.trace.is_none() && s.fork.trace.is_none());
    assert_eq!(s.race_diffusion.status, RunStatus::Running);
    assert_eq!(s.lane_of(ar), Some(Lane::RaceAr));
    // A superseded run's events are dropped; the lane keeps waiting for its new run.
    let old = s.begin(Lane::Main);
    let new = s.begin(Lane::Main);
    s.apply(Event::Started {
        run: old,
        header: Box::new(header.clone()),
    });
    assert_eq!(s.lane_of(old), None);
    assert!(s.main.trace.is_none());
    assert_eq!(s.main.status, RunStatus::Queued);
    s.apply(Event::Started {
        run: new,
        header: Box::new(header),
    });
    assert!(s.main.trace.is_some());
    // An idle lane (run 0) never takes an event.
    s.apply(Event::Failed {
        run: 0,
        error: "boom".into(),
    });
    assert_eq!(s.fork.status, RunStatus::Idle);
}

#[test]
fn explain_charts_the_block_under_the_cursor() {
    use unmask::gui::explain::{block_bars, chart_title};
    let t = synthetic_trace();
    // Block 2 planned two commits per step; its last step made three (a revision).
    let bars: Vec<_> = block_bars(&t, &t.events[5])
        .iter()
        .map(|b| (b.step, b.planned, b.committed, b.current))
        .collect();
    assert_eq!(
        bars,
        vec![
            (1, 2, 2, false),
            (2, 2, 2, true),
            (3, 2, 2, false),
            (4, 2, 3, false)
        ]
    );
    let mut h = harness();
    wait_model(&mut h);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("synthetic.jsonl");
    t.save(&path).expect("save");
    h.state_mut().open_trace(&path);
    wait_io(&mut h);
    h.state_mut().store.set_cursor(3);
    h.run_steps(3);
    // The chart of block 1, with its three series in the legend.
    h.get_by_label(&chart_title(&t.events[2]));
    for series in ["planned", "committed", "this step"] {
        h.get_by_label(series);
    }
    // The cursor moves into block 2: the chart follows it.
    h.state_mut().store.set_cursor(6);
    h.run_steps(3);
    h.get_by_label(&chart_title(&t.events[5]));
    assert!(h.query_by_label(&chart_title(&t.events[2])).is_none());
    // Before the first step there is no step to chart.
    h.state_mut().store.set_cursor(0);
    h.run_steps(3);
    assert!(h.query_by_label("planned").is_none());
}
