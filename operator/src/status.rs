//! The pure status step: what the operator observed of a Broadcast's pods in, its status out
//! (phase, conditions that keep their transition times, observedGeneration).

use castyard_crd::{
    Broadcast, BroadcastStatus, DesiredState, DestinationState, Phase, desired_workloads,
};
use castyard_proto::termination::Termination;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What one worker pod looks like from outside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodObservation {
    pub ready: bool,
    /// The pod has failed, or its container is crash-looping.
    pub failed: bool,
    /// Why, when the worker said (its termination message): the condition's reason.
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl PodObservation {
    pub fn from_pod(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let waiting = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find(|w| {
                matches!(
                    w.reason.as_deref(),
                    Some(
                        "CrashLoopBackOff"
                            | "ImagePullBackOff"
                            | "ErrImagePull"
                            | "CreateContainerConfigError"
                    )
                )
            });
        let failed = status.and_then(|s| s.phase.as_deref()) == Some("Failed") || waiting.is_some();
        // What the worker left in its termination log, from the run that just ended (a
        // crash-looping container is waiting; its last run is in lastState).
        let said = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
                let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                Termination::parse(terminated.or(last)?.message.as_deref()?)
            })
            .next();
        let message = match (waiting, &said) {
            (Some(w), Some(t)) => Some(format!(
                "{} ({}: {})",
                t.message,
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            )),
            (Some(w), None) => Some(format!(
                "{}: {}",
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            )),
            (None, Some(t)) if failed => Some(t.message.clone()),
            _ => status.and_then(|s| s.message.clone()),
        };
        Self {
            ready,
            failed,
            reason: said.filter(|_| failed).map(|t| t.reason),
            message,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub sfu: Option<PodObservation>,
    pub compositor: Option<PodObservation>,
    /// Why the SFU pod is not created yet (its load balancer has no address, say).
    pub sfu_waiting: Option<String>,
}

pub const SFU_READY: &str = "SfuReady";
pub const COMPOSITOR_READY: &str = "CompositorReady";
pub const DESTINATIONS_HEALTHY: &str = "DestinationsHealthy";

/// The next status. Destination health, guests and recording are reported by the workers and
/// carried over from `b.status`; the phase and conditions are derived here.
pub fn compute(b: &Broadcast, observed: &Observed, now: &Time) -> BroadcastStatus {
    let prev = b.status.clone().unwrap_or_default();
    let desired = desired_workloads(b);
    let ready = |o: &Option<PodObservation>| o.as_ref().is_some_and(|p| p.ready);
    let failed = [&observed.sfu, &observed.compositor]
        .into_iter()
        .flatten()
        .find(|p| p.failed);

    let phase = if b.spec.state == DesiredState::Ended {
        if observed.sfu.is_some() || observed.compositor.is_some() {
            Phase::Ending
        } else {
            Phase::Ended
        }
    } else if failed.is_some() {
        Phase::Failed
    } else if !ready(&observed.sfu) {
        Phase::Pending
    } else if desired.compositor.is_some() && !ready(&observed.compositor) {
        Phase::Starting
    } else if b.spec.state == DesiredState::Live {
        Phase::Live
    } else {
        Phase::Backstage
    };

    let generation = b.metadata.generation;
    let pod_condition =
        |kind: &str, needed: bool, o: &Option<PodObservation>| -> (bool, String, String) {
            match (needed, o) {
                (false, _) => (
                    false,
                    "NotRequired".into(),
                    format!("{kind} does not run in this state"),
                ),
                (true, None) => (
                    false,
                    "Creating".into(),
                    format!("{kind} pod does not exist yet"),
                ),
                (true, Some(p)) if p.failed => (
                    false,
                    p.reason.clone().unwrap_or_else(|| "Failed".into()),
                    p.message
                        .clone()
                        .unwrap_or_else(|| format!("{kind} pod failed")),
                ),
                (true, Some(p)) if p.ready => (true, "Ready".into(), format!("{kind} is ready")),
                (true, Some(p)) => (
                    false,
                    "NotReady".into(),
                    p.message
                        .clone()
                        .unwrap_or_else(|| format!("{kind} is starting")),
                ),
            }
        };
    let (sfu_ok, sfu_reason, sfu_msg) = match (&observed.sfu_waiting, &observed.sfu) {
        (Some(why), None) if desired.sfu.is_some() => {
            (false, "WaitingForAddress".into(), why.clone())
        }
        _ => pod_condition("SFU", desired.sfu.is_some(), &observed.sfu),
    };
    let (comp_ok, comp_reason, comp_msg) = pod_condition(
        "compositor",
        desired.compositor.is_some(),
        &observed.compositor,
    );
    let live_dests = prev
        .destinations
        .iter()
        .filter(|d| d.state == DestinationState::Live)
        .count();
    let unhealthy: Vec<&str> = prev
        .destinations
        .iter()
        .filter(|d| {
            matches!(
                d.state,
                DestinationState::Failed | DestinationState::Retrying
            )
        })
        .map(|d| d.name.as_str())
        .collect();
    let (dest_status, dest_reason, dest_msg) = if b.spec.state != DesiredState::Live {
        (
            "Unknown",
            "NotLive".to_owned(),
            "destinations are only used while live".to_owned(),
        )
    } else if !unhealthy.is_empty() {
        (
            "False",
            "DestinationsFailing".to_owned(),
            format!("not sending: {}", unhealthy.join(", ")),
        )
    } else if prev.destinations.is_empty() {
        (
            "Unknown",
            "NoReports".to_owned(),
            "no destination has reported yet".to_owned(),
        )
    } else {
        (
            "True",
            "AllLive".to_owned(),
            format!("{live_dests} destinations live"),
        )
    };

    let condition = |type_: &str, status: &str, reason: String, message: String| {
        // A condition keeps its transition time until its status actually changes.
        let since = prev
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason,
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let tf = |ok: bool| if ok { "True" } else { "False" };
    let conditions = vec![
        condition(SFU_READY, tf(sfu_ok), sfu_reason, sfu_msg),
        condition(COMPOSITOR_READY, tf(comp_ok), comp_reason, comp_msg),
        condition(DESTINATIONS_HEALTHY, dest_status, dest_reason, dest_msg),
    ];
    let message = failing(&conditions).map(|c| format!("{}: {}", c.reason, c.message));
    BroadcastStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions,
        message,
        live_destinations: Some(live_dests as i32),
        ..prev
    }
}

/// The first condition that says something is wrong, as opposed to not done yet.
fn failing(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| {
        c.status == "False" && !matches!(c.reason.as_str(), "Creating" | "NotReady" | "NotRequired")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use castyard_crd::DestinationStatus;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }
    fn ready() -> Option<PodObservation> {
        Some(PodObservation {
            ready: true,
            ..Default::default()
        })
    }
    fn starting() -> Option<PodObservation> {
        Some(PodObservation::default())
    }
    fn cond<'a>(s: &'a BroadcastStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn phases_follow_the_pods() {
        let backstage = Broadcast::test();
        let live = Broadcast::test().live();
        let cases = [
            (&backstage, Observed::default(), Phase::Pending),
            (
                &backstage,
                Observed {
                    sfu: starting(),
                    compositor: None,
                    ..Default::default()
                },
                Phase::Pending,
            ),
            (
                &backstage,
                Observed {
                    sfu: ready(),
                    compositor: None,
                    ..Default::default()
                },
                Phase::Backstage,
            ),
            (
                &live,
                Observed {
                    sfu: ready(),
                    compositor: None,
                    ..Default::default()
                },
                Phase::Starting,
            ),
            (
                &live,
                Observed {
                    sfu: ready(),
                    compositor: starting(),
                    ..Default::default()
                },
                Phase::Starting,
            ),
            (
                &live,
                Observed {
                    sfu: ready(),
                    compositor: ready(),
                    ..Default::default()
                },
                Phase::Live,
            ),
        ];
        for (b, o, want) in cases {
            assert_eq!(compute(b, &o, &at(0)).phase, Some(want), "{o:?}");
        }
        let ended = Broadcast::test().live().ended();
        assert_eq!(
            compute(
                &ended,
                &Observed {
                    sfu: ready(),
                    compositor: ready(),
                    ..Default::default()
                },
                &at(0)
            )
            .phase,
            Some(Phase::Ending)
        );
        assert_eq!(
            compute(&ended, &Observed::default(), &at(0)).phase,
            Some(Phase::Ended)
        );
        let recording = Broadcast::test().recording();
        assert_eq!(
            compute(
                &recording,
                &Observed {
                    sfu: ready(),
                    compositor: None,
                    ..Default::default()
                },
                &at(0)
            )
            .phase,
            Some(Phase::Starting)
        );
    }

    #[test]
    fn a_crash_looping_worker_is_failed_with_its_reason() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "status": {"phase": "Running", "containerStatuses": [{"name": "compositor", "ready": false, "restartCount": 5, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}}}]}
        }))
        .unwrap();
        let comp = PodObservation::from_pod(&pod);
        assert!(comp.failed && !comp.ready);
        let s = compute(
            &Broadcast::test().live(),
            &Observed {
                sfu: ready(),
                compositor: Some(comp),
                ..Default::default()
            },
            &at(0),
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        let c = cond(&s, COMPOSITOR_READY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Failed"));
        assert!(c.message.contains("CrashLoopBackOff"));
    }

    #[test]
    fn conditions_keep_their_time_until_they_change() {
        let mut b = Broadcast::test().live();
        b.metadata.generation = Some(4);
        let first = compute(
            &b,
            &Observed {
                sfu: ready(),
                compositor: starting(),
                ..Default::default()
            },
            &at(100),
        );
        assert_eq!(first.observed_generation, Some(4));
        assert_eq!(cond(&first, SFU_READY).last_transition_time, at(100));
        b.status = Some(first);
        let second = compute(
            &b,
            &Observed {
                sfu: ready(),
                compositor: ready(),
                ..Default::default()
            },
            &at(200),
        );
        assert_eq!(
            cond(&second, SFU_READY).last_transition_time,
            at(100),
            "unchanged"
        );
        assert_eq!(
            cond(&second, COMPOSITOR_READY).last_transition_time,
            at(200),
            "changed"
        );
        assert!(
            second
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn destination_health_comes_from_the_workers_reports() {
        let mut b = Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a/live")
            .with_destination("tw", "rtmp://b/app");
        let both = Observed {
            sfu: ready(),
            compositor: ready(),
            ..Default::default()
        };
        assert_eq!(
            cond(&compute(&b, &both, &at(0)), DESTINATIONS_HEALTHY).status,
            "Unknown"
        );
        let report = |name: &str, state| DestinationStatus {
            name: name.into(),
            state,
            last_error: None,
            error_kind: None,
            retries: 0,
            bitrate_kbps: 4500,
        };
        b.status = Some(BroadcastStatus {
            destinations: vec![
                report("yt", DestinationState::Live),
                report("tw", DestinationState::Retrying),
            ],
            ..Default::default()
        });
        let s = compute(&b, &both, &at(0));
        let c = cond(&s, DESTINATIONS_HEALTHY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "DestinationsFailing")
        );
        assert!(c.message.contains("tw"));
        assert_eq!(s.live_destinations, Some(1));
        assert_eq!(s.destinations.len(), 2, "worker reports are carried over");
        b.status.as_mut().unwrap().destinations[1].state = DestinationState::Live;
        assert_eq!(
            cond(&compute(&b, &both, &at(0)), DESTINATIONS_HEALTHY).status,
            "True"
        );
    }
}
