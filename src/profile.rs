//! Where a request's time goes (`forget --profile`): wall time per phase of the run (forward,
//! loss, backward, optimizer, re-quantization, guard and stopping checks, metrics, setup, and the
//! rest of the method's own work), and the time the int8 GEMMs take inside the forward and the
//! backward, summed over the threads that ran them.
//!
//! Why: a speed claim needs to know which part to make faster; a profile of a whole run by an
//! external tool mixes measurement passes into training and cannot say which GEMM belongs to
//! the forward and which to the backward.
//!
//! Phases nest (a guard check runs repair steps, whose forward and backward count as forward
//! and backward): each phase's time is *exclusive*, the time spent in it and not in a phase
//! entered inside it, so the phases add up to the run. The profiler is off by default (each hook
//! is then one load); `enable` turns it on for the calling thread, the one that runs the
//! request, whose phases are timed; GEMMs are counted on whatever thread runs them, for the
//! phase that thread is in. It assumes one profiled request at a time (the CLI's case).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::kernels::{self, PackedWeights};

/// A phase of a request (its discriminant indexes the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Setting the request up: targets, anchors, reference model.
    Setup,
    /// Integer forward passes that record a tape for the backward.
    Forward,
    /// Losses and their gradients w.r.t. the logits.
    Loss,
    /// Backward passes (weight and input gradients).
    Backward,
    /// The optimizer's update of the f32 shadow weights.
    Optimizer,
    /// Re-quantizing the shadow weights into the graph's integers.
    Requantize,
    /// The retain guard's probe checks and the stopping rule.
    Checks,
    /// Before/after measurements (accuracies, MIA, gap).
    Metrics,
    /// The rest of the method's own work: projections, vector arithmetic, batching.
    Other,
}

/// Every phase, in discriminant order.
const PHASES: [Phase; N] = [
    Phase::Setup,
    Phase::Forward,
    Phase::Loss,
    Phase::Backward,
    Phase::Optimizer,
    Phase::Requantize,
    Phase::Checks,
    Phase::Metrics,
    Phase::Other,
];

const N: usize = Phase::Other as usize + 1;

impl Phase {
    fn index(self) -> usize {
        self as usize
    }

    /// Stable name, as in the report.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Forward => "forward",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::Requantize => "requantize",
            Phase::Checks => "guard and stop checks",
            Phase::Metrics => "metrics",
            Phase::Other => "other (projection, vectors, batches)",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static WALL_NS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static GEMM_NS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static GEMM_CALLS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Phase the profiled thread is in, for GEMMs that run on other threads.
static CURRENT: AtomicUsize = AtomicUsize::new(Phase::Other as usize);

thread_local! {
    /// Is this the profiled thread?
    static ON: Cell<bool> = const { Cell::new(false) };
    /// Open phases of this thread and when the innermost one (re)started.
    static STACK: RefCell<Vec<(Phase, Instant)>> = const { RefCell::new(Vec::new()) };
}

/// Turn the profiler on for the calling thread and clear its figures.
pub fn enable() {
    ON.with(|on| on.set(true));
    for c in WALL_NS.iter().chain(&GEMM_NS).chain(&GEMM_CALLS) {
        c.store(0, Ordering::Relaxed);
    }
    ENABLED.store(true, Ordering::Relaxed);
}

/// Is the profiler on (for GEMMs)?
fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn add(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Run `f` as phase `phase` (its exclusive wall time is added to the phase's figure).
pub fn timed<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    if !enabled() || !ON.with(Cell::get) {
        return f();
    }
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        if let Some((outer, since)) = s.last_mut() {
            add(&WALL_NS[outer.index()], *since);
        }
        s.push((phase, Instant::now()));
    });
    CURRENT.store(phase.index(), Ordering::Relaxed);
    let out = f();
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        if let Some((p, since)) = s.pop() {
            add(&WALL_NS[p.index()], since);
        }
        if let Some((outer, since)) = s.last_mut() {
            *since = Instant::now();
            CURRENT.store(outer.index(), Ordering::Relaxed);
        }
    });
    out
}

/// The int8 GEMM (`kernels::gemm_u8i8`), its time counted for the current phase when profiling.
pub fn gemm(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    if !enabled() {
        return kernels::gemm_u8i8(m, a, a_zp, w, c);
    }
    let phase = CURRENT.load(Ordering::Relaxed);
    let t = Instant::now();
    kernels::gemm_u8i8(m, a, a_zp, w, c);
    add(&GEMM_NS[phase], t);
    GEMM_CALLS[phase].fetch_add(1, Ordering::Relaxed);
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    /// Exclusive wall time, seconds.
    pub seconds: f64,
    /// Time inside int8 GEMMs during the phase, summed over threads, seconds.
    pub gemm_thread_seconds: f64,
    pub gemm_calls: u64,
}

/// The figures so far, phases with no time left out.
pub fn breakdown() -> Vec<PhaseTime> {
    PHASES
        .iter()
        .enumerate()
        .map(|(i, p)| PhaseTime {
            phase: p.name(),
            seconds: WALL_NS[i].load(Ordering::Relaxed) as f64 * 1e-9,
            gemm_thread_seconds: GEMM_NS[i].load(Ordering::Relaxed) as f64 * 1e-9,
            gemm_calls: GEMM_CALLS[i].load(Ordering::Relaxed),
        })
        .filter(|t| t.seconds > 0.0 || t.gemm_calls > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(ms: u64) {
        let t = Instant::now();
        while t.elapsed().as_millis() < ms as u128 {
            std::hint::black_box(0);
        }
    }

    fn seconds(p: Phase) -> f64 {
        breakdown()
            .iter()
            .find(|t| t.phase == p.name())
            .map_or(0.0, |t| t.seconds)
    }

    #[test]
    fn nested_phases_are_exclusive_and_add_up() {
        enable();
        let t = Instant::now();
        timed(Phase::Checks, || {
            spin(20);
            timed(Phase::Forward, || spin(30));
            spin(10);
        });
        let total = t.elapsed().as_secs_f64();
        let (checks, forward) = (seconds(Phase::Checks), seconds(Phase::Forward));
        // Each phase got at least the time spent in it; counting the forward inside the check
        // too would make the two add up to more than the whole (≥ 90 ms of a ~60 ms run).
        assert!(checks >= 0.030 && forward >= 0.030, "{checks} {forward}");
        assert!(
            checks + forward <= total + 1e-6,
            "{checks} + {forward} > {total}"
        );
        // Phases of other threads (other tests) are not timed; a phase outside any other runs.
        timed(Phase::Setup, || spin(1));
        assert!(seconds(Phase::Setup) >= 0.001);
        ON.with(|on| on.set(false));
        ENABLED.store(false, Ordering::Relaxed);
    }
}
