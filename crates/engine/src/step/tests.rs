//! The step state's unit tests.

use super::*;

fn settings() -> EngineSettings {
    let mut s = EngineSettings::new("/unused");
    s.finalize_delay = Duration::from_secs(5);
    s.idle_timeout = Duration::from_secs(600);
    s
}

#[test]
fn finished_steps_are_due_after_the_grace_period_from_their_last_line() {
    let s = settings();
    let t0 = Instant::now();
    let mut state = StepState::new(t0);
    state.segment_len = 10;
    state.finished_at = Some(t0);
    assert_eq!(state.action(t0 + Duration::from_secs(4), &s), Action::Wait);
    assert_eq!(
        state.action(t0 + Duration::from_secs(5), &s),
        Action::Archive
    );
    state.last_append = t0 + Duration::from_secs(3);
    assert_eq!(state.action(t0 + Duration::from_secs(7), &s), Action::Wait);
    assert_eq!(
        state.action(t0 + Duration::from_secs(8), &s),
        Action::Archive
    );
    state.start_archiving();
    assert_eq!(state.action(t0 + Duration::from_secs(60), &s), Action::Wait);
}

#[test]
fn unfinished_steps_wait_for_the_idle_timeout_and_retries_for_backoff() {
    let s = settings();
    let t0 = Instant::now();
    let mut state = StepState::new(t0);
    state.segment_len = 1;
    assert_eq!(
        state.action(t0 + Duration::from_secs(599), &s),
        Action::Wait
    );
    assert_eq!(
        state.action(t0 + Duration::from_secs(600), &s),
        Action::Archive
    );
    state.phase = Phase::Backoff {
        failures: 1,
        retry_at: t0 + Duration::from_secs(900),
    };
    assert_eq!(
        state.action(t0 + Duration::from_secs(899), &s),
        Action::Wait
    );
}

#[test]
fn steps_without_data_are_forgotten_after_the_idle_timeout() {
    let s = settings();
    let t0 = Instant::now();
    let mut state = StepState::new(t0);
    state.archived_at = Some(t0 + Duration::from_secs(10));
    assert_eq!(
        state.action(t0 + Duration::from_secs(609), &s),
        Action::Wait
    );
    assert_eq!(
        state.action(t0 + Duration::from_secs(610), &s),
        Action::Forget
    );
}

/// A stored object must not be taken for missing at the first 404 (read-after-write
/// lag), also after a restart when the spool shows that earlier segments were archived.
/// Finding 8 of issue 12: timers past the clock's range mean "never", not a panic that
/// silently ends the scheduler.
#[test]
fn timers_past_the_clocks_range_never_come() {
    let mut s = settings();
    s.finalize_delay = Duration::MAX;
    s.idle_timeout = Duration::MAX;
    let t0 = Instant::now();
    let mut state = StepState::new(t0);
    assert_eq!(state.action(t0, &s), Action::Wait, "no data");
    state.appended(10, t0);
    assert_eq!(state.action(t0, &s), Action::Wait, "running");
    state.finished(t0);
    assert_eq!(state.action(t0, &s), Action::Wait, "finished");
}

#[test]
fn a_missing_object_is_believed_only_when_none_was_stored_or_after_patience() {
    let t0 = Instant::now();
    let patience = Duration::from_secs(60);
    let mut fresh = StepState::new(t0);
    assert!(fresh.missing_object(t0, patience));
    fresh.object_stored();
    assert!(!fresh.missing_object(t0, patience));
    assert!(!fresh.missing_object(t0 + Duration::from_secs(59), patience));
    assert!(fresh.missing_object(t0 + Duration::from_secs(60), patience));
    let delay = Duration::from_secs(5);
    let mut archived_before = StepState::recovered(t0, &BTreeSet::from([2, 3]), true, delay);
    assert!(!archived_before.missing_object(t0, patience));
    let mut never_archived = StepState::recovered(t0, &BTreeSet::from([0, 1]), true, delay);
    assert!(never_archived.missing_object(t0, patience));
}

/// The phase table, walked: failures count up through backoff and reset on success; a
/// removed step stays removed whatever its run does.
#[test]
fn archive_runs_move_the_phase_as_the_table_says() {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let t0 = Instant::now();
    let mut state = StepState::new(t0);
    state.appended(10, t0);
    assert_eq!(state.seal(), (0..1, Some(0)));
    assert_eq!(state.seal(), (0..1, None));
    state.start_archiving();
    assert_eq!(state.phase, Phase::Archiving { failures: 0 });
    state.archive_failed(t0, &backoff);
    assert!(matches!(state.phase, Phase::Backoff { failures: 1, .. }));
    state.start_archiving();
    state.archive_failed(t0, &backoff);
    state.start_archiving();
    assert_eq!(state.failures(), 2);
    state.sealed_removed(1);
    assert!(!state.has_data());
    state.archive_succeeded(t0);
    assert_eq!((state.phase, state.archived_at), (Phase::Idle, Some(t0)));

    state.start_archiving();
    assert_eq!(state.remove(), 1..2);
    state.archive_failed(t0, &backoff);
    state.archive_succeeded(t0);
    state.start_archiving();
    assert!(state.is_removed());
}
