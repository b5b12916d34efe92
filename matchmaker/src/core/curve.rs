//! The rating window: how far apart (in rating points) a ticket accepts an opponent to be, as a
//! function of how long it has waited.

use super::types::ConfigError;

/// A piecewise-linear, non-decreasing curve from waiting time (ms) to window (rating points),
/// flat before its first point and after its last.
///
/// Both [`window`](Self::window) and [`age_for`](Self::age_for) are exact inverses of each other
/// on integer milliseconds: `window(age_for(g)) >= g` and `window(age_for(g) - 1) < g`. The
/// matcher schedules its wake-ups with `age_for`, so this exactness is what makes a scheduled
/// ticket find, at its wake-up, the pair the schedule promised.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowCurve {
    /// (age ms, window), ages strictly increasing from 0, windows non-decreasing.
    points: Vec<(i64, f64)>,
}

impl WindowCurve {
    /// A curve through `points` (age ms, window): the first age is 0, ages strictly increase,
    /// windows are finite, non-negative and never decrease.
    pub fn new(points: Vec<(i64, f64)>) -> Result<WindowCurve, ConfigError> {
        let Some(&(a0, _)) = points.first() else {
            return Err(ConfigError::Curve("no point".into()));
        };
        if a0 != 0 {
            return Err(ConfigError::Curve(format!("first point at age {a0} ms, expected 0")));
        }
        for (i, &(age, w)) in points.iter().enumerate() {
            if !w.is_finite() || w < 0.0 {
                return Err(ConfigError::Curve(format!("window {w} at age {age} ms")));
            }
            if i > 0 {
                let (pa, pw) = points[i - 1];
                if age <= pa {
                    return Err(ConfigError::Curve(format!("age {age} ms does not follow {pa} ms")));
                }
                if w < pw {
                    return Err(ConfigError::Curve(format!("window {w} at {age} ms shrinks from {pw}")));
                }
            }
        }
        Ok(WindowCurve { points })
    }

    /// `start` at once, growing linearly to `end` at `over_ms`, flat after.
    pub fn linear(start: f64, end: f64, over_ms: i64) -> Result<WindowCurve, ConfigError> {
        WindowCurve::new(vec![(0, start), (over_ms, end)])
    }

    /// The points the curve was built from.
    pub fn points(&self) -> &[(i64, f64)] {
        &self.points
    }

    /// The window after waiting `age_ms` (negative ages count as 0).
    pub fn window(&self, age_ms: i64) -> f64 {
        let p = &self.points;
        // `new` guarantees at least one point.
        let (first_age, first_w) = p[0];
        if age_ms <= first_age {
            return first_w;
        }
        // Few points: a linear walk beats a binary search.
        for seg in p.windows(2) {
            let ((a0, w0), (a1, w1)) = (seg[0], seg[1]);
            if age_ms < a1 {
                let x = (age_ms - a0) as f64 / (a1 - a0) as f64;
                // Clamping keeps the curve monotone across segment ends despite rounding.
                return (w0 + (w1 - w0) * x).clamp(w0, w1);
            }
        }
        p[p.len() - 1].1
    }

    /// The widest window, reached at the last point.
    pub fn max_window(&self) -> f64 {
        self.points[self.points.len() - 1].1
    }

    /// The smallest waiting time (ms) at which the window reaches `gap`, or `None` if it never
    /// does.
    pub fn age_for(&self, gap: f64) -> Option<i64> {
        let p = &self.points;
        if gap.is_nan() {
            return None;
        }
        if gap <= p[0].1 {
            return Some(0);
        }
        if gap > self.max_window() {
            return None;
        }
        for seg in p.windows(2) {
            let ((a0, w0), (a1, w1)) = (seg[0], seg[1]);
            if w1 < gap {
                continue;
            }
            // w0 < gap <= w1 here, so w1 > w0 and the segment has a slope.
            let est = a0 + (((gap - w0) / (w1 - w0)) * (a1 - a0) as f64).ceil() as i64;
            let mut age = est.clamp(a0, a1);
            // The estimate is off by at most a step or two of rounding; walk to the exact
            // answer, then fall back to bisection should it be further off.
            for _ in 0..4 {
                if self.window(age) < gap {
                    age += 1;
                } else if age > a0 && self.window(age - 1) >= gap {
                    age -= 1;
                } else {
                    return Some(age);
                }
            }
            let (mut lo, mut hi) = (a0, a1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.window(mid) >= gap {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            return Some(lo);
        }
        None
    }
}

impl Default for WindowCurve {
    /// 100 rating points at once, linearly up to 500 at 40 s.
    fn default() -> Self {
        WindowCurve { points: vec![(0, 100.0), (40_000, 500.0)] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_curve_widens_from_100_to_500_over_40_s() {
        let c = WindowCurve::default();
        for (age, w) in [(-5, 100.0), (0, 100.0), (10_000, 200.0), (20_000, 300.0), (40_000, 500.0), (90_000, 500.0)] {
            assert_eq!(c.window(age), w, "age {age}");
        }
        assert_eq!(c.age_for(50.0), Some(0));
        assert_eq!(c.age_for(300.0), Some(20_000));
        assert_eq!(c.age_for(500.0), Some(40_000));
        assert_eq!(c.age_for(500.1), None);
    }

    #[test]
    fn age_for_is_the_exact_inverse_of_window() {
        let c = WindowCurve::new(vec![(0, 0.0), (7, 3.3), (1_003, 3.3), (40_001, 777.7)]).expect("valid");
        let mut g = 0.0;
        while g <= 777.7 {
            let a = c.age_for(g).expect("reachable");
            assert!(c.window(a) >= g, "gap {g} age {a}");
            assert!(a == 0 || c.window(a - 1) < g, "gap {g} age {a} not minimal");
            g += 0.37;
        }
    }

    #[test]
    fn rejects_bad_curves() {
        for pts in [vec![], vec![(5, 1.0)], vec![(0, 1.0), (0, 2.0)], vec![(0, 2.0), (10, 1.0)], vec![(0, f64::NAN)]] {
            assert!(matches!(WindowCurve::new(pts.clone()), Err(ConfigError::Curve(_))), "{pts:?}");
        }
    }
}
