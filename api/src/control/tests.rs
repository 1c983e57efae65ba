use super::*;

#[test]
fn states_round_trip_as_kebab_case() {
    for s in [
        "empty",
        "created",
        "running",
        "paused",
        "shutting-down",
        "stopped",
    ] {
        let v = VmState::parse(s).unwrap();
        assert_eq!(v.as_str(), s);
        assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{s}\""));
    }
    assert_eq!(VmState::parse("halted"), None);
}

#[test]
fn the_transition_table_refuses_with_409_and_names_the_state() {
    let shut = VmAction::Shutdown(ShutdownParams::default());
    assert!(VmState::Running.check(&shut).is_ok());
    let e = VmState::Paused.check(&shut).unwrap_err();
    assert_eq!(e.status, 409);
    assert!(
        e.message.contains("paused") && e.message.contains("resume"),
        "{e}"
    );
    assert!(VmState::Running.check(&VmAction::Pause).is_ok());
    assert_eq!(
        VmState::Paused.check(&VmAction::Pause).unwrap_err().status,
        409
    );
    assert!(VmState::Paused.check(&VmAction::Resume).is_ok());
    assert!(VmState::Created.check(&VmAction::Boot).is_ok());
    assert!(VmState::Running.check(&VmAction::Boot).is_err());
    assert!(VmState::Stopped.check(&VmAction::Destroy).is_err());
    assert!(VmState::ShuttingDown.check(&VmAction::Destroy).is_ok());
    let e = VmState::Empty.check(&VmAction::Pause).unwrap_err();
    assert!(e.message.contains("PUT /v1/vm"), "{e}");
}

#[test]
fn shutdown_params_refuse_unknown_fields() {
    let p: ShutdownParams = serde_json::from_str(r#"{"timeout_s": 5, "force": true}"#).unwrap();
    assert_eq!(p.timeout_s, Some(5));
    let e = serde_json::from_str::<ShutdownParams>(r#"{"timeout": 5}"#).unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
}

#[test]
fn every_action_name_builds_its_action() {
    for n in VmAction::NAMES {
        let a = VmAction::from_name(n, ShutdownParams::default()).unwrap();
        assert_eq!(a.name(), n);
    }
    assert!(VmAction::from_name("explode", ShutdownParams::default()).is_none());
}
