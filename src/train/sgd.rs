//! Stochastic gradient descent with momentum and weight decay, over one flattened parameter vector
//! (the f32 shadow weights). Same update as PyTorch's `torch.optim.SGD` (dampening 0, no
//! Nesterov), so learning rates and schedules from the literature carry over unchanged.

/// SGD with momentum `μ` and L2 weight decay, PyTorch semantics.
#[derive(Debug, Clone)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    velocity: Vec<f32>,
}

impl Sgd {
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Self {
        Sgd {
            lr,
            momentum,
            weight_decay,
            velocity: Vec::new(),
        }
    }

    /// PyTorch semantics: d = g + wd·θ; v = μ·v + d; θ −= lr·v. Velocity sized on first call.
    ///
    /// Panics if `grad` and `params` differ in length, or if `params` changed length since the
    /// velocity was sized (call [`Sgd::reset`] first when the parameter vector changes).
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(
            params.len(),
            grad.len(),
            "SGD: {} parameters, {} gradients",
            params.len(),
            grad.len()
        );
        if self.velocity.is_empty() {
            self.velocity = vec![0.0; params.len()];
        }
        assert_eq!(
            self.velocity.len(),
            params.len(),
            "SGD: velocity sized for {} parameters, step given {}",
            self.velocity.len(),
            params.len()
        );
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        for ((p, &g), v) in params.iter_mut().zip(grad).zip(&mut self.velocity) {
            let d = g + wd * *p;
            *v = mu * *v + d;
            *p -= lr * *v;
        }
    }

    /// [`Sgd::step`] in coordinates `φ = D·θ` (`graph::metric`): `grad` is `∂L/∂φ`, the
    /// velocity lives in `φ`, and `θ` moves by the `φ` step divided by `D` (weight decay acts on
    /// `φ`). An empty `d` is `D = 1`: exactly [`Sgd::step`].
    pub fn step_scaled(&mut self, params: &mut [f32], grad: &[f32], d: &[f32]) {
        if d.is_empty() {
            return self.step(params, grad);
        }
        assert_eq!(
            d.len(),
            params.len(),
            "SGD: {} factors, {} parameters",
            d.len(),
            params.len()
        );
        if self.velocity.is_empty() {
            self.velocity = vec![0.0; params.len()];
        }
        assert_eq!(
            self.velocity.len(),
            params.len(),
            "SGD: velocity sized for another vector"
        );
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        for (((p, &g), v), &m) in params.iter_mut().zip(grad).zip(&mut self.velocity).zip(d) {
            let dd = g + wd * *p * m;
            *v = mu * *v + dd;
            *p -= lr * *v / m;
        }
    }

    /// Forget the velocity (the next step starts from zero momentum).
    pub fn reset(&mut self) {
        self.velocity.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::approx_constant)] // −3.14 below is a hand-computed value, not π
    fn three_steps_by_hand() {
        // lr 0.5, μ 0.9, wd 0.1; θ0 = [1, −2], g = [0.5, 1] at every step.
        // step 1: d = [0.6, 0.8];          v = [0.6, 0.8];           θ = [0.7, −2.4]
        // step 2: d = [0.57, 0.76];        v = [1.11, 1.48];         θ = [0.145, −3.14]
        // step 3: d = [0.5145, 0.686];     v = [1.5135, 2.018];      θ = [−0.61175, −4.149]
        let mut opt = Sgd::new(0.5, 0.9, 0.1);
        let mut theta = [1.0f32, -2.0];
        let expected = [[0.7f32, -2.4], [0.145, -3.14], [-0.61175, -4.149]];
        for want in expected {
            opt.step(&mut theta, &[0.5, 1.0]);
            for (a, b) in theta.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{theta:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn plain_sgd_and_reset() {
        let mut opt = Sgd::new(0.1, 0.0, 0.0);
        let mut theta = [1.0f32];
        opt.step(&mut theta, &[2.0]);
        assert!((theta[0] - 0.8).abs() < 1e-7);
        // With momentum, a reset makes the next step behave like the first one.
        let mut opt = Sgd::new(0.1, 0.9, 0.0);
        let mut a = [0.0f32; 3];
        opt.step(&mut a, &[1.0; 3]);
        opt.reset();
        let mut b = [0.0f32; 3];
        opt.step(&mut b, &[1.0; 3]);
        assert_eq!(a, b);
        // A different length is fine after a reset.
        opt.reset();
        opt.step(&mut [0.0; 5], &[1.0; 5]);
    }

    /// `step_scaled` is SGD on `φ = D·θ`: three steps on θ with gradients `∂L/∂φ` land where
    /// plain SGD on φ lands, divided by D (a quadratic loss `½‖φ − t‖²`, so `∂L/∂φ = φ − t`).
    #[test]
    fn scaled_steps_are_sgd_in_folded_coordinates() {
        let d = [61.0f32, 0.5, 1.0];
        let t = [3.0f32, -1.0, 0.25];
        let mut theta = [0.02f32, 4.0, -1.0];
        let mut phi: Vec<f32> = theta.iter().zip(&d).map(|(a, b)| a * b).collect();
        let (mut on_theta, mut on_phi) = (Sgd::new(0.1, 0.9, 0.01), Sgd::new(0.1, 0.9, 0.01));
        for _ in 0..3 {
            let g: Vec<f32> = theta
                .iter()
                .zip(&d)
                .zip(&t)
                .map(|((a, m), t)| a * m - t)
                .collect();
            on_theta.step_scaled(&mut theta, &g, &d);
            let g: Vec<f32> = phi.iter().zip(&t).map(|(p, t)| p - t).collect();
            on_phi.step(&mut phi, &g);
        }
        for ((a, p), m) in theta.iter().zip(&phi).zip(&d) {
            assert!(
                (a - p / m).abs() <= 1e-6 * (p / m).abs().max(1.0),
                "{theta:?} vs {phi:?}"
            );
        }
        // No factors: exactly `step`.
        let (mut a, mut b) = ([1.0f32, -2.0], [1.0f32, -2.0]);
        let (mut o1, mut o2) = (Sgd::new(0.5, 0.9, 0.1), Sgd::new(0.5, 0.9, 0.1));
        o1.step_scaled(&mut a, &[0.5, 1.0], &[]);
        o2.step(&mut b, &[0.5, 1.0]);
        assert_eq!(a, b);
    }
}
