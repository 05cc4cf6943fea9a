//! Sparser deltas: once a run meets its target, give back the weight changes it does not need.
//!
//! Why: a sample-wise request on a model that memorized its data moves many weights by one
//! integer step each (plain rounding; a re-quantization dead band slowed forgetting until the
//! requests were refused), and a delta costs about a bit per changed weight: measured on the
//! memorizing fixtures, deltas of 7–15 % of the model file against a target of 5 %. Most of
//! those changes are weights whose shadow barely crossed a rounding boundary.
//!
//! Each round keeps the quarter of the changed weights whose shadow moved furthest (in
//! quantization steps), puts every other weight back to its starting integer and pins it there
//! (`TrainState::pinned`), and trains on with the same method until the stopping target holds
//! again: the forgetting is then carried by the changes kept, and a round can only shrink the
//! delta. A round that cannot get the target back within its step budget is undone (the state
//! before it is put back) and tried once more keeping half; the rounds stop once at most `goal`
//! of the weights differ from the start. Every state handed back met the target and passed the
//! retain guard. Float weights (float segments) take part like integer ones: a float weight is
//! changed when its value differs at all, and its drift is measured in a nominal step (the
//! tensor's largest magnitude over 127). Measured (random 10 %, memorizing fixtures, seeds 0–2): changed weights
//! 8–29 % → 3 %, deltas 3.2–4.2 % of the model file, Avg. Gap unchanged or lower, about twice
//! the steps.

use crate::train::TrainState;
use crate::Result;

/// Rounds at most, undone ones included.
const MAX_ROUNDS: usize = 4;
/// A round keeps one in this many of the changes (after a round that lost the target: 2).
const KEEP: usize = 4;
/// What a changed float weight costs a delta, in changed integer weights: the delta stores a
/// float's new 32-bit value, an integer's difference (mostly ±1, which deflates to a few bits).
/// Measured with a plain count instead (a float change = an integer one), a class-wise request
/// on the CNN whose second conv is float changed all of that conv's 4,608 weights and still
/// counted as 2.3 % of the weights: a delta of 8.0 % of the model file.
const FLOAT_COST: usize = 16;

/// The starting weights, to compare a trained state against.
pub(crate) struct Base {
    theta: Vec<f32>,
    /// `(index in theta, integer, quantization step)` of every integer weight entry.
    ints: Vec<(usize, i32, f32)>,
    /// `(index in theta, nominal step)` of every float weight entry (float segments): a float
    /// weight is changed as soon as its value differs at all, so without this every float
    /// layer a run touched was in the delta whole (measured: a class-wise request on the
    /// Conv-only-quantized CNN changed 139,531 of fc1's 200,704 float weights, a delta of 64 %
    /// of the model file).
    floats: Vec<(usize, f32)>,
}

impl Base {
    pub(crate) fn new(st: &TrainState) -> Self {
        Base {
            theta: st.shadow.theta.clone(),
            ints: st.shadow.weight_entries(&st.graph),
            floats: st.shadow.float_weight_entries(),
        }
    }

    /// Weight entries that differ from the start: `(index, shadow drift in steps, float)`.
    fn changed(&self, st: &TrainState) -> Vec<(usize, f32, bool)> {
        let now = st.shadow.weight_entries(&st.graph);
        let theta = &st.shadow.theta;
        let drift = |i: usize, step: f32| (theta[i] - self.theta[i]).abs() / step;
        let ints = self
            .ints
            .iter()
            .zip(now)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(&(i, _, step), _)| (i, drift(i, step), false));
        let floats = self
            .floats
            .iter()
            .filter(|&&(i, _)| theta[i].to_bits() != self.theta[i].to_bits())
            .map(|&(i, step)| (i, drift(i, step), true));
        ints.chain(floats).collect()
    }

    /// Pin every weight entry of `st`, integer or float, that still has its starting value (on
    /// top of whatever is pinned already), so further training leaves them out of the delta.
    /// An integer entry is pinned at its starting shadow, which re-quantizes to its starting
    /// integer under any band.
    pub(crate) fn pin_unchanged(&self, st: &mut TrainState) {
        let now = st.shadow.weight_entries(&st.graph);
        let ints = self
            .ints
            .iter()
            .zip(now)
            .filter(|(a, b)| a.1 == b.1)
            .map(|(a, _)| (a.0, self.theta[a.0]));
        let same: Vec<(usize, f32)> = ints.chain(self.unchanged_floats(st)).collect();
        pin(st, same);
    }

    /// Pin every float weight entry of `st` that still has its starting value (on top of
    /// whatever is pinned already), so further training leaves them out of the delta.
    pub(crate) fn pin_unchanged_floats(&self, st: &mut TrainState) {
        let same: Vec<(usize, f32)> = self.unchanged_floats(st).collect();
        pin(st, same);
    }

    /// `(index, starting value)` of every float weight entry of `st` still at its start.
    fn unchanged_floats<'a>(
        &'a self,
        st: &'a TrainState,
    ) -> impl Iterator<Item = (usize, f32)> + 'a {
        let theta = &st.shadow.theta;
        self.floats
            .iter()
            .filter(move |&&(i, _)| theta[i].to_bits() == self.theta[i].to_bits())
            .map(|&(i, _)| (i, self.theta[i]))
    }

    /// Indices of every weight entry, integer and float.
    fn entries(&self) -> impl Iterator<Item = usize> + '_ {
        self.ints
            .iter()
            .map(|e| e.0)
            .chain(self.floats.iter().map(|e| e.0))
    }
}

/// Put each `(index, value)` of `entries` into `st`'s shadow and pin it there (on top of what
/// is pinned already; `TrainState::step` holds pinned values after every step).
fn pin(st: &mut TrainState, entries: Vec<(usize, f32)>) {
    for &(i, v) in &entries {
        st.shadow.theta[i] = v;
    }
    st.pinned.extend(entries);
    st.pinned.sort_unstable_by_key(|p| p.0);
    st.pinned.dedup_by_key(|p| p.0);
}

/// Shrink the changes of `st` (which meets its target) in rounds, as the module doc says.
/// `train(st, max_steps)` trains on until the target holds (true) or the budget or the guard
/// ends it (false); `budget` is each round's step budget. Returns a note for the run report.
pub(crate) fn sparsify(
    st: &mut TrainState,
    base: &Base,
    goal: f32,
    budget: usize,
    train: &mut dyn FnMut(&mut TrainState, usize) -> Result<bool>,
) -> Result<String> {
    // Changes are counted at their cost in a delta: a float change costs FLOAT_COST integer
    // ones, and the goal is that share of the weights, floats counted at the same cost.
    let (n_int, n_float) = (base.ints.len(), base.floats.len());
    let unit = |e: &(usize, f32, bool)| if e.2 { FLOAT_COST } else { 1 };
    let cost = |c: &[(usize, f32, bool)]| c.iter().map(unit).sum::<usize>();
    let goal_cost = (goal as f64 * (n_int + FLOAT_COST * n_float) as f64) as usize;
    let counts = |c: &[(usize, f32, bool)]| {
        let f = c.iter().filter(|e| e.2).count();
        (c.len() - f, f)
    };
    let pct = |(i, f): (usize, usize)| {
        let p = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        if n_float == 0 {
            format!("{:.2} %", p(i, n_int))
        } else {
            format!("{:.2} % (float {:.2} %)", p(i, n_int), p(f, n_float))
        }
    };
    let first = counts(&base.changed(st));
    let mut rounds = Vec::new();
    let mut keep_one_in = KEEP;
    for _ in 0..MAX_ROUNDS {
        let mut changed = base.changed(st);
        let now = cost(&changed);
        if now <= goal_cost {
            break;
        }
        // Keep the changes that moved most (one in `keep_one_in` of the cost, not less than
        // the goal allows); every other weight goes back to its start and stays there, so a
        // round can only shrink the delta.
        changed.sort_by(|a, b| b.1.total_cmp(&a.1));
        let allowed = (now / keep_one_in).max(goal_cost);
        let mut spent = 0;
        let n = changed
            .iter()
            .take_while(|e| {
                spent += unit(e);
                spent <= allowed
            })
            .count();
        changed.truncate(n);
        let kept = counts(&changed);
        let mut keep: Vec<usize> = changed.iter().map(|c| c.0).collect();
        keep.sort_unstable();
        let before = st.clone();
        st.pinned = base
            .entries()
            .filter(|i| keep.binary_search(i).is_err())
            .map(|i| (i, base.theta[i]))
            .collect();
        st.pinned.sort_unstable_by_key(|p| p.0);
        for &(i, v) in &st.pinned {
            st.shadow.theta[i] = v;
        }
        let forced: Vec<usize> = st.pinned.iter().map(|p| p.0).collect();
        st.shadow.apply_forcing(&mut st.graph, &forced);
        st.sgd.reset();
        if train(st, budget)? {
            rounds.push(pct(counts(&base.changed(st))));
        } else {
            // Undo the round; one more try keeping twice as many, then stop.
            *st = before;
            rounds.push(format!("{}: target lost, undone", pct(kept)));
            if keep_one_in <= 2 {
                break;
            }
            keep_one_in = 2;
        }
    }
    if rounds.is_empty() {
        return Ok(format!(
            "sparser delta: {} of the weights changed, within the goal of {:.2} %",
            pct(first),
            100.0 * goal
        ));
    }
    Ok(format!(
        "sparser delta: {} of the weights changed before, {} after ({} round(s): {})",
        pct(first),
        pct(counts(&base.changed(st))),
        rounds.len(),
        rounds.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{IdxDataset, Split};
    use crate::graph::GradPath;
    use crate::train::Sgd;

    /// Integer weights of `st` as the graph runs them.
    fn ints(st: &TrainState) -> Vec<i32> {
        st.shadow
            .weight_entries(&st.graph)
            .into_iter()
            .map(|e| e.1)
            .collect()
    }

    /// What polish relies on (`super::super::run_epochs`): once the unchanged weights are
    /// pinned and the band is narrowed to plain rounding, further steps move only weights the
    /// run had changed already, and they do move them (by single steps, no band to cross).
    #[test]
    fn pinned_unchanged_weights_stay_out_of_the_delta() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let g = crate::onnx::load(root.join("onnx-models/fmnist_cnn_qdq.onnx")).unwrap();
        let data = IdxDataset::load(root.join("data/fashion-mnist"), Split::Train).unwrap();
        let mut st = TrainState::new(g, Sgd::new(0.05, 0.0, 0.0), GradPath::Int8);
        st.shadow.hysteresis = 4.0;
        let base = Base::new(&st);
        let start = ints(&st);
        // A run's worth of change: large steps along a cross-entropy gradient.
        let batch: Vec<usize> = (0..64).collect();
        for _ in 0..5 {
            let g = st.grad(&data, &batch, false, None).unwrap().grad;
            st.step(&g);
        }
        let run = ints(&st);
        let changed: Vec<usize> = (0..start.len()).filter(|&k| run[k] != start[k]).collect();
        assert!(
            !changed.is_empty() && changed.len() < start.len() / 2,
            "{} of {} weights changed",
            changed.len(),
            start.len()
        );

        base.pin_unchanged(&mut st);
        st.shadow.narrow_band(&st.graph, 0.0);
        assert_eq!(
            ints(&st),
            run,
            "pinning and narrowing the band move no integer"
        );
        let other: Vec<usize> = (64..128).collect();
        for _ in 0..5 {
            let g = st.grad(&data, &other, false, None).unwrap().grad;
            st.step(&g);
        }
        let after = ints(&st);
        let outside = (0..start.len())
            .filter(|&k| after[k] != start[k] && changed.binary_search(&k).is_err())
            .count();
        assert_eq!(outside, 0, "weights outside the run's delta changed");
        let moved = changed.iter().filter(|&&k| after[k] != run[k]).count();
        assert!(moved > 0, "no changed weight moved at plain rounding");
    }
}
