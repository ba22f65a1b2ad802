//! What the reconciler does with one VM at start-up, decided from its record and what was
//! found running: a pure function, so every crash case is a unit test.

use hostel_state::{DesiredState, IntentOp, ObservedState, RestartPolicy, Timestamp, Vm};

/// What runs for a VM, as found on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No QEMU (or one that could not be controlled and was killed).
    Nothing,
    /// A QEMU whose guest runs.
    Running,
    /// A QEMU whose guest is paused or was never continued (`prelaunch`): a daemon cut
    /// between QEMU's launch and `cont`.
    Paused,
}

/// The evidence at hand about a QEMU that ended while no daemon watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// The guest's console ends with the kernel's power-off line.
    pub powered_off: bool,
    /// The VM's disks are all there (what a create makes before it is acknowledged).
    pub disks_complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Kill what runs; remove disks, run directory and record.
    Delete,
    /// A create cut before it was acknowledged and before its disks were made: undone like
    /// a delete, leaving neither record nor disks.
    UndoCreate,
    /// Adopt the running QEMU, then do `then`.
    Adopt(AfterAdopt),
    /// No QEMU: record `state` (and `desired`, when it changes), then start if `start`.
    Record {
        state: ObservedState,
        last_exit: Option<&'static str>,
        desired: Option<DesiredState>,
        clear_intent: bool,
        start: bool,
    },
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAdopt {
    /// It runs as wanted.
    Keep,
    /// Paused but wanted running: `cont`.
    Continue,
    /// Finish the stop asked for (or stop one not wanted running): the power button until
    /// `deadline`, or a kill if `force` (a paused guest cannot answer the button). Then a
    /// start if `restart` (the VM is wanted running: a restart, or a start asked for during
    /// the stop).
    Stop {
        force: bool,
        deadline: Timestamp,
        restart: bool,
    },
}

pub const STOPPED_WHILE_DOWN: &str = "stopped while the daemon was down";
pub const POWERED_OFF_WHILE_DOWN: &str = "guest powered off while the daemon was down";
pub const CRASHED_WHILE_DOWN: &str = "QEMU exited while the daemon was down";

/// The step that takes `vm` from what was found toward what is wanted. `default_deadline` is
/// the deadline of a stop nobody asked a grace period for.
pub fn plan(vm: &Vm, found: Found, ev: Evidence, default_deadline: Timestamp) -> Step {
    let intent = vm.intent.map(|i| i.op);
    if intent == Some(IntentOp::Delete) {
        return Step::Delete;
    }
    if vm.observed.state == ObservedState::Creating {
        // Never acknowledged as made. With its disks there (and nothing running: a
        // standby's claim cut half-way runs a half-configured guest) it is finished as a
        // stopped VM; otherwise undone.
        if found == Found::Nothing && ev.disks_complete {
            return Step::Record {
                state: ObservedState::Stopped,
                last_exit: None,
                desired: None,
                clear_intent: false,
                start: vm.desired == DesiredState::Running,
            };
        }
        return Step::UndoCreate;
    }
    let stop_asked = matches!(intent, Some(IntentOp::Stop | IntentOp::Kill));
    match found {
        Found::Running | Found::Paused => {
            let paused = found == Found::Paused;
            if let Some(i) = vm.intent.filter(|_| stop_asked) {
                return Step::Adopt(AfterAdopt::Stop {
                    force: paused || i.op == IntentOp::Kill,
                    deadline: i.deadline,
                    restart: vm.desired == DesiredState::Running,
                });
            }
            match (vm.desired, paused) {
                (DesiredState::Running, false) => Step::Adopt(AfterAdopt::Keep),
                (DesiredState::Running, true) => Step::Adopt(AfterAdopt::Continue),
                (DesiredState::Stopped, _) => Step::Adopt(AfterAdopt::Stop {
                    force: paused,
                    deadline: default_deadline,
                    restart: false,
                }),
            }
        }
        Found::Nothing if stop_asked => Step::Record {
            state: ObservedState::Stopped,
            last_exit: Some(STOPPED_WHILE_DOWN),
            desired: None,
            clear_intent: true,
            start: vm.desired == DesiredState::Running,
        },
        Found::Nothing => not_running(vm, ev),
    }
}

/// No QEMU and nothing pending: what the recorded state says happened.
fn not_running(vm: &Vm, ev: Evidence) -> Step {
    let wanted = vm.desired == DesiredState::Running;
    let record = |state, last_exit, desired, start| Step::Record {
        state,
        last_exit,
        desired,
        clear_intent: false,
        start,
    };
    match vm.observed.state {
        // A start cut before or during the launch: finish it.
        ObservedState::Starting if wanted => record(ObservedState::Stopped, None, None, true),
        ObservedState::Running | ObservedState::Starting | ObservedState::Stopping => {
            if !wanted {
                record(
                    ObservedState::Stopped,
                    Some(STOPPED_WHILE_DOWN),
                    None,
                    false,
                )
            } else if ev.powered_off {
                // The guest's own power-off is its owner's request to stop, as when watched.
                let restart = vm.spec.restart_policy() == RestartPolicy::Always;
                let desired = (!restart).then_some(DesiredState::Stopped);
                record(
                    ObservedState::Stopped,
                    Some(POWERED_OFF_WHILE_DOWN),
                    desired,
                    restart,
                )
            } else {
                let restart = vm.spec.restart_policy() != RestartPolicy::Never;
                record(
                    ObservedState::Crashed,
                    Some(CRASHED_WHILE_DOWN),
                    None,
                    restart,
                )
            }
        }
        // Wanted running but never started: a start cut before it recorded anything.
        ObservedState::Stopped if wanted => record(ObservedState::Stopped, None, None, true),
        _ => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostel_state::{IntentOp, ObservedStatus, TenantId, VmId, VmIntent, VmName, VmSpecRecord};

    fn vm(desired: DesiredState, state: ObservedState, intent: Option<IntentOp>) -> Vm {
        Vm {
            id: VmId::new_random(),
            tenant: TenantId::new_random(),
            name: VmName::new("v").unwrap(),
            spec: VmSpecRecord::new(1, 64, 1, "busybox")
                .unwrap()
                .with_restart_policy(RestartPolicy::OnFailure),
            desired,
            observed: ObservedStatus {
                state,
                pid: None,
                since: Timestamp::from_unix_millis(0),
                last_exit: None,
                restart_count: 0,
            },
            created_at: Timestamp::from_unix_millis(0),
            intent: intent.map(|op| VmIntent {
                op,
                deadline: Timestamp::from_unix_millis(42),
            }),
            generation: 1,
        }
    }

    const DISKS: Evidence = Evidence {
        powered_off: false,
        disks_complete: true,
    };
    const T: Timestamp = Timestamp::from_unix_millis(7);

    use DesiredState::{Running as WantRun, Stopped as WantStop};
    use ObservedState as O;

    #[test]
    fn a_paused_qemu_is_continued_if_wanted_running_and_killed_if_not() {
        let v = vm(WantRun, O::Starting, None);
        assert_eq!(
            plan(&v, Found::Paused, DISKS, T),
            Step::Adopt(AfterAdopt::Continue)
        );
        let v = vm(WantStop, O::Starting, None);
        assert_eq!(
            plan(&v, Found::Paused, DISKS, T),
            Step::Adopt(AfterAdopt::Stop {
                force: true,
                deadline: T,
                restart: false,
            })
        );
        let v = vm(WantRun, O::Running, Some(IntentOp::Stop));
        assert_eq!(
            plan(&v, Found::Paused, DISKS, T),
            Step::Adopt(AfterAdopt::Stop {
                force: true,
                deadline: Timestamp::from_unix_millis(42),
                restart: true,
            })
        );
    }

    #[test]
    fn an_interrupted_stop_is_finished_with_its_own_deadline() {
        let v = vm(WantStop, O::Stopping, Some(IntentOp::Stop));
        assert_eq!(
            plan(&v, Found::Running, DISKS, T),
            Step::Adopt(AfterAdopt::Stop {
                force: false,
                deadline: Timestamp::from_unix_millis(42),
                restart: false,
            })
        );
        let v = vm(WantStop, O::Stopping, Some(IntentOp::Kill));
        assert!(matches!(
            plan(&v, Found::Running, DISKS, T),
            Step::Adopt(AfterAdopt::Stop { force: true, .. })
        ));
        // The QEMU ended meanwhile: the stop is done, not a crash.
        match plan(&v, Found::Nothing, DISKS, T) {
            Step::Record {
                state,
                clear_intent,
                start,
                ..
            } => assert_eq!((state, clear_intent, start), (O::Stopped, true, false)),
            other => panic!("{other:?}"),
        }
    }

    /// A restart is wanted-running with a stop pending: cut before its QEMU ended, the stop
    /// is finished and the VM started again; cut after, it is started.
    #[test]
    fn an_interrupted_restart_is_finished_with_a_start() {
        let v = vm(WantRun, O::Stopping, Some(IntentOp::Stop));
        assert_eq!(
            plan(&v, Found::Running, DISKS, T),
            Step::Adopt(AfterAdopt::Stop {
                force: false,
                deadline: Timestamp::from_unix_millis(42),
                restart: true,
            })
        );
        for state in [O::Stopping, O::Stopped] {
            match plan(
                &vm(WantRun, state, Some(IntentOp::Stop)),
                Found::Nothing,
                DISKS,
                T,
            ) {
                Step::Record {
                    state,
                    clear_intent,
                    start,
                    ..
                } => assert_eq!((state, clear_intent, start), (O::Stopped, true, true)),
                other => panic!("{state}: {other:?}"),
            }
        }
        // After the stop was done (intent cleared) and before the start.
        match plan(&vm(WantRun, O::Stopped, None), Found::Nothing, DISKS, T) {
            Step::Record { start, .. } => assert!(start),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_interrupted_delete_is_finished_whatever_runs() {
        for found in [Found::Nothing, Found::Running, Found::Paused] {
            let v = vm(WantStop, O::Running, Some(IntentOp::Delete));
            assert_eq!(plan(&v, found, DISKS, T), Step::Delete);
        }
    }

    #[test]
    fn a_start_cut_before_qemu_launched_is_finished() {
        for state in [O::Starting, O::Stopped] {
            match plan(&vm(WantRun, state, None), Found::Nothing, DISKS, T) {
                Step::Record { start: true, .. } => {}
                other => panic!("{state}: {other:?}"),
            }
        }
        // One that had crashed before stays down (its policy was applied then).
        assert_eq!(
            plan(&vm(WantRun, O::Crashed, None), Found::Nothing, DISKS, T),
            Step::Nothing
        );
    }

    #[test]
    fn a_guest_that_powered_off_unwatched_is_stopped_not_crashed() {
        let v = vm(WantRun, O::Running, None);
        let off = Evidence {
            powered_off: true,
            ..DISKS
        };
        match plan(&v, Found::Nothing, off, T) {
            Step::Record {
                state,
                desired,
                start,
                last_exit,
                ..
            } => {
                assert_eq!(state, O::Stopped);
                assert_eq!(desired, Some(WantStop));
                assert!(!start);
                assert_eq!(last_exit, Some(POWERED_OFF_WHILE_DOWN));
            }
            other => panic!("{other:?}"),
        }
        // Without the evidence it crashed, and on_failure restarts it.
        match plan(&v, Found::Nothing, DISKS, T) {
            Step::Record { state, start, .. } => assert_eq!((state, start), (O::Crashed, true)),
            other => panic!("{other:?}"),
        }
        // Wanted stopped (a stop was under way): stopped, whatever the console says.
        match plan(&vm(WantStop, O::Running, None), Found::Nothing, DISKS, T) {
            Step::Record { state, start, .. } => assert_eq!((state, start), (O::Stopped, false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cut_create_is_finished_with_its_disks_and_undone_without() {
        let v = vm(WantStop, O::Creating, None);
        match plan(&v, Found::Nothing, DISKS, T) {
            Step::Record { state, start, .. } => assert_eq!((state, start), (O::Stopped, false)),
            other => panic!("{other:?}"),
        }
        let no_disks = Evidence {
            disks_complete: false,
            ..DISKS
        };
        assert_eq!(plan(&v, Found::Nothing, no_disks, T), Step::UndoCreate);
        // A standby claim cut half-way: its guest is half-configured.
        assert_eq!(plan(&v, Found::Running, DISKS, T), Step::UndoCreate);
    }
}
