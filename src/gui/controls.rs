//! The controls panel: task, sampler knobs, device and model. Problems with the combination are
//! shown in red beside the control they are about, and keep Generate disabled.

use std::path::PathBuf;

use super::highlight;
use super::settings::{Mode, Settings};
use crate::sampler::{ParamProblem, Schedule, UnmaskRule};

/// What the user asked for in this frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Generate,
    Cancel,
    Race,
    /// Load this model folder (`None`: the embedded model).
    LoadModel(Option<PathBuf>),
    PickModelFolder,
}

/// What the panel needs to know besides the settings.
pub struct ControlsState<'a> {
    pub problems: &'a [ParamProblem],
    pub devices: &'a [String],
    pub running: bool,
    pub model_ready: bool,
    pub model_status: &'a str,
}

fn problem(ui: &mut egui::Ui, problems: &[ParamProblem], field: &str) {
    for p in problems.iter().filter(|p| p.field == field) {
        ui.label(
            egui::RichText::new(format!("! {}", p.message))
                .color(ui.visuals().error_fg_color)
                .small(),
        );
    }
}

/// A labelled number control with its problems below it. The label names the DragValue for
/// screen readers and tests.
fn number<N: egui::emath::Numeric>(
    ui: &mut egui::Ui,
    label: &str,
    v: &mut N,
    range: std::ops::RangeInclusive<N>,
    speed: f64,
    problems: &[ParamProblem],
    field: &str,
) {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::DragValue::new(v).range(range).speed(speed))
            .labelled_by(l.id);
    });
    problem(ui, problems, field);
}

pub fn show(ui: &mut egui::Ui, s: &mut Settings, st: &ControlsState) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::ScrollArea::vertical()
        .id_salt("controls")
        .show(ui, |ui| {
            ui.heading("Task");
            ui.horizontal(|ui| {
                for m in Mode::ALL {
                    ui.selectable_value(&mut s.mode, m, m.name());
                }
            });
            ui.label(if s.mode == Mode::Repair {
                "Instruction (optional)"
            } else {
                "Prompt"
            });
            highlight::code_editor(ui, &mut s.prompt, &s.lang.clone(), 6, "prompt");
            match s.mode {
                Mode::Complete => {}
                Mode::Infill => {
                    ui.label("Suffix (the code after the hole)");
                    highlight::code_editor(ui, &mut s.suffix, &s.lang.clone(), 3, "suffix");
                }
                Mode::Repair => {
                    ui.label("Code to repair");
                    highlight::code_editor(ui, &mut s.repair_code, &s.lang.clone(), 5, "repair");
                    number(
                        ui,
                        "edit budget",
                        &mut s.repair_budget,
                        0..=512,
                        0.2,
                        st.problems,
                        "budget",
                    );
                }
            }
            ui.checkbox(&mut s.chat, "chat template");
            ui.checkbox(&mut s.params.heal, "heal prompt end")
                .on_hover_text(
                    "Back the prompt off a trailing newline or partial token and let the first \
                     generated token re-type it (e.g. \"\\n\" becomes \"\\n    \"), so the \
                     model continues from a token boundary it saw in training",
                );

            ui.separator();
            ui.heading("Sampler");
            let p = &mut s.params;
            number(
                ui,
                "gen length",
                &mut p.gen_length,
                1..=4096,
                1.0,
                st.problems,
                "gen_length",
            );
            number(
                ui,
                "block size",
                &mut p.block_size,
                1..=4096,
                0.5,
                st.problems,
                "block_size",
            );
            number(
                ui,
                "steps per block",
                &mut p.steps,
                1..=4096,
                0.2,
                st.problems,
                "steps",
            );
            ui.horizontal(|ui| {
                ui.label("rule");
                egui::ComboBox::from_id_salt("rule")
                    .selected_text(p.rule.name())
                    .show_ui(ui, |ui| {
                        for r in UnmaskRule::ALL {
                            ui.selectable_value(&mut p.rule, r, r.name())
                                .on_hover_text(r.score_name());
                        }
                    });
            });
            ui.add_enabled_ui(p.rule == UnmaskRule::Threshold, |ui| {
                ui.horizontal(|ui| {
                    let l = ui.label("threshold τ");
                    ui.add(egui::Slider::new(&mut p.threshold, 0.0..=1.0))
                        .labelled_by(l.id);
                });
            });
            problem(ui, st.problems, "threshold");
            ui.add_enabled_ui(p.rule != UnmaskRule::Threshold, |ui| {
                ui.horizontal(|ui| {
                    ui.label("schedule");
                    egui::ComboBox::from_id_salt("schedule")
                        .selected_text(p.schedule.name())
                        .show_ui(ui, |ui| {
                            for sc in Schedule::ALL {
                                ui.selectable_value(&mut p.schedule, sc, sc.name());
                            }
                        });
                });
            });
            number(
                ui,
                "temperature",
                &mut p.temperature,
                0.0..=5.0,
                0.01,
                st.problems,
                "temperature",
            );
            number(
                ui,
                "top-k",
                &mut p.top_k,
                0..=100_000,
                1.0,
                st.problems,
                "top_k",
            );
            number(
                ui,
                "top-p",
                &mut p.top_p,
                0.0..=1.0,
                0.005,
                st.problems,
                "top_p",
            );
            number(
                ui,
                "edit noise",
                &mut p.edit_noise,
                0.0..=1.0,
                0.005,
                st.problems,
                "edit_noise",
            );
            number(
                ui,
                "repetition penalty",
                &mut p.repetition_penalty,
                1.0..=3.0,
                0.005,
                st.problems,
                "repetition_penalty",
            );
            number(
                ui,
                "no-repeat n-gram",
                &mut p.no_repeat_ngram,
                0..=64,
                0.1,
                st.problems,
                "no_repeat_ngram",
            );
            number(
                ui,
                "seed",
                &mut p.seed,
                0..=u64::MAX,
                1.0,
                st.problems,
                "seed",
            );
            ui.checkbox(&mut p.kv_cache, "KV cache");
            ui.checkbox(&mut p.stop_at_eos, "stop at EOS");

            ui.separator();
            ui.heading("Model");
            ui.horizontal(|ui| {
                ui.label("device");
                let before = s.device.clone();
                egui::ComboBox::from_id_salt("device")
                    .selected_text(s.device.clone())
                    .show_ui(ui, |ui| {
                        for d in st.devices {
                            ui.selectable_value(&mut s.device, d.clone(), d.as_str());
                        }
                    });
                if s.device != before {
                    actions.push(Action::LoadModel(s.model.clone()));
                }
            });
            let current = s
                .model
                .as_ref()
                .map_or("embedded".to_string(), |p| p.display().to_string());
            egui::ComboBox::from_id_salt("model")
                .selected_text(current)
                .width(ui.available_width() - 8.0)
                .show_ui(ui, |ui| {
                    if ui.selectable_label(s.model.is_none(), "embedded").clicked() {
                        actions.push(Action::LoadModel(None));
                    }
                    for f in &s.recent {
                        if ui
                            .selectable_label(s.model.as_ref() == Some(f), f.display().to_string())
                            .clicked()
                        {
                            actions.push(Action::LoadModel(Some(f.clone())));
                        }
                    }
                });
            if ui.button("Open folder…").clicked() {
                actions.push(Action::PickModelFolder);
            }
            ui.label(egui::RichText::new(st.model_status).small());

            ui.separator();
            ui.horizontal(|ui| {
                let can = st.model_ready && st.problems.is_empty() && !st.running;
                if ui
                    .add_enabled(can, egui::Button::new("Generate"))
                    .on_hover_text("Ctrl+Enter")
                    .clicked()
                {
                    actions.push(Action::Generate);
                }
                if ui
                    .add_enabled(st.running, egui::Button::new("Cancel"))
                    .clicked()
                {
                    actions.push(Action::Cancel);
                }
                if ui
                    .add_enabled(can, egui::Button::new("Race"))
                    .on_hover_text("autoregressive vs these settings")
                    .clicked()
                {
                    actions.push(Action::Race);
                }
            });
            if !st.problems.is_empty() {
                ui.label(
                    egui::RichText::new("Fix the settings marked in red to generate.")
                        .color(ui.visuals().error_fg_color),
                );
            }
        });
    actions
}
