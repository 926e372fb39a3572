//! The fork view: the original run and its fork (or any second trace of the same canvas) side by
//! side at their ends, positions whose final token or commit step differs outlined on both (and
//! marked on the Canvas view's commit map).

use std::collections::HashSet;
use std::sync::Arc;

use super::canvas::{self, CanvasCache, CanvasView};
use super::colors::ColorMode;
use super::store::{LaneRun, Store};
use crate::fork::Difference;
use crate::trace::Trace;

/// The differences between the main run and the fork, recomputed only when either gains a step
/// or is replaced.
#[derive(Default)]
pub struct DiffCache {
    key: Option<(u64, usize, u64, usize)>,
    /// (position, how it differs), in position order.
    pub list: Arc<Vec<(usize, Difference)>>,
    pub set: Arc<HashSet<usize>>,
}

/// Positions that differ between the main run and the fork (empty until both exist).
pub fn diff(store: &mut Store) -> &DiffCache {
    let key = match (&store.main.trace, &store.fork.trace) {
        (Some(a), Some(b)) => Some((store.main.run, a.len(), store.fork.run, b.len())),
        _ => None,
    };
    if store.diff.key != key {
        let list = match (&store.main.trace, &store.fork.trace) {
            (Some(a), Some(b)) => crate::fork::differences(a, b),
            _ => Vec::new(),
        };
        store.diff = DiffCache {
            key,
            set: Arc::new(list.iter().map(|&(p, _)| p).collect()),
            list: Arc::new(list),
        };
    }
    &store.diff
}

fn column(
    ui: &mut egui::Ui,
    title: &str,
    l: &LaneRun,
    cache: &mut CanvasCache,
    marked: &HashSet<usize>,
    mode: ColorMode,
) {
    ui.heading(title);
    let Some(t) = super::race::trace_or_status(ui, l, "no run") else {
        return;
    };
    ui.label(summary(t, l.status.is_active()));
    let k = t.len();
    let model = cache.get(l.run, t, k);
    let v = CanvasView {
        trace: t,
        model,
        cursor: k,
        mode,
        hover: None,
        font_size: 12.0,
        marked: Some(marked),
        selected: None,
    };
    // Both ways: a line wider than the half window scrolls inside its column instead of being
    // drawn over the other canvas.
    egui::ScrollArea::both().id_salt(title).show(ui, |ui| {
        canvas::show(ui, &v);
    });
}

fn summary(t: &Trace, running: bool) -> String {
    let edits = t.header.intervention.as_ref().map_or(String::new(), |i| {
        let list: Vec<String> = i
            .edits
            .iter()
            .map(|e| match e.token {
                Some(_) => format!("{} pinned to {:?}", e.pos, e.text),
                None => format!("{} re-masked", e.pos),
            })
            .chain(i.force_next.iter().map(|p| format!("{p} committed next")))
            .collect();
        format!(" · forked at step {}: {}", i.at_step, list.join(", "))
    });
    format!(
        "{} steps{}{}",
        t.len(),
        if running { " (decoding…)" } else { "" },
        edits
    )
}

pub fn show(ui: &mut egui::Ui, store: &mut Store, mode: ColorMode) {
    let d = diff(store);
    let marked = d.set.clone();
    let by_step = d
        .list
        .iter()
        .filter(|(_, k)| *k == Difference::CommitStep)
        .count();
    match (&store.main.trace, &store.fork.trace) {
        (Some(a), Some(_)) => {
            let n = a.header.gen_end - a.header.gen_start;
            ui.strong(format!(
                "{} of {n} generated positions differ (outlined in red on both; {} by token, \
                 {by_step} by commit step only; marked on the Canvas view's commit map)",
                marked.len(),
                marked.len() - by_step
            ));
        }
        _ => {
            ui.weak(
                "Pause a run, click a tile, pin a token or re-mask it, then Continue from here.",
            );
        }
    }
    ui.separator();
    let [a, b] = &mut store.fork_canvas;
    ui.columns(2, |cols| {
        column(&mut cols[0], "original", &store.main, a, &marked, mode);
        column(&mut cols[1], "fork", &store.fork, b, &marked, mode);
    });
}
