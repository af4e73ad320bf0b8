//! The restore-loop breaker (security review B2): an object restored more than
//! `restore_loop_limit` times within `restore_loop_window` is being deleted again by
//! something (a controller that owns it, a CD tool, the tokens controller after its
//! ServiceAccount went). Restoring it again would fight that for ever, each round costing
//! writes, Events and alerts. So its restores stop, the incident RestoreLoop is reported,
//! and a new value of the guard's `secretguard.dev/resume-restores` annotation resumes them.
//! Pure: the history lives in the target's record.

use std::time::{Duration, Instant};

use super::decide::{Action, Decision, Reason, TargetState};

/// Restore times kept per object, at most (the limit is checked within the window).
pub const HISTORY: usize = 64;

/// Whether the restores in `history` (when each was made) reach `limit` within `window`
/// before `now`: one more would be a loop.
pub fn tripped(history: &[Instant], now: Instant, limit: usize, window: Duration) -> bool {
    history
        .iter()
        .filter(|t| now.saturating_duration_since(**t) < window)
        .count()
        >= limit
}

/// The decision with its restores held back: RestoreLoop instead.
pub fn hold(mut decision: Decision) -> Decision {
    decision.actions.retain(|a| !a.is_restore());
    decision.state = Some(TargetState::RestoreLoop);
    if !decision.incidents.contains(&Reason::RestoreLoop) {
        decision.incidents.push(Reason::RestoreLoop);
    }
    decision.requeue_after = None;
    decision
}

/// Whether the decision restores the object.
pub fn restores(decision: &Decision) -> bool {
    decision.actions.iter().any(Action::is_restore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_trips_at_the_limit_within_the_window_only() {
        let now = Instant::now() + Duration::from_secs(3600);
        let window = Duration::from_secs(600);
        let recent: Vec<Instant> = (1..=5).map(|m| now - Duration::from_secs(m * 60)).collect();
        assert!(tripped(&recent, now, 5, window));
        assert!(!tripped(&recent[..4], now, 5, window));
        let old: Vec<Instant> = (1..=5)
            .map(|m| now - Duration::from_secs(m * 200))
            .collect();
        assert!(
            !tripped(&old, now, 5, window),
            "two are older than the window"
        );
    }

    #[test]
    fn a_held_decision_restores_nothing_and_says_why() {
        let d = Decision {
            state: Some(TargetState::Missing),
            actions: vec![Action::RestoreIdentical],
            incidents: vec![Reason::SecretDeleted],
            ..Default::default()
        };
        let held = hold(d);
        assert!(held.actions.is_empty());
        assert_eq!(held.state, Some(TargetState::RestoreLoop));
        assert_eq!(held.incidents, [Reason::SecretDeleted, Reason::RestoreLoop]);
    }
}
