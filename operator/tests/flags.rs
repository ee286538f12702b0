//! Bad operator flags are refused with a message naming the flag, before any cluster is contacted.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_castyard-operator"))
        .args(args)
        // A config that cannot be read: a flag error must come first, and nothing is contacted.
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn each_bad_flag_is_named_in_its_error() {
    for (args, says) in [
        (
            &["--sfu-resources", r#"{"limits": "lots"}"#][..],
            "--sfu-resources must be a JSON ResourceRequirements object",
        ),
        (
            &["--compositor-resources", "2 cores"],
            "--compositor-resources must be a JSON ResourceRequirements object",
        ),
        (
            &["--tolerations", r#"{"key": "x"}"#],
            "--tolerations must be a JSON array of Tolerations",
        ),
        (
            &["--node-selector", "zone"],
            "--node-selector takes key=value",
        ),
        (
            &["--udp-strategy", "host-network", "--host-port-range", "500"],
            "--host-port-range must be FIRST-LAST",
        ),
        (
            &[
                "--udp-strategy",
                "host-network",
                "--host-port-range",
                "600-500",
            ],
            "--host-port-range is empty",
        ),
        (
            &["--udp-strategy", "public-ip"],
            "invalid value 'public-ip'",
        ),
        (&["--concurrency", "0"], "--concurrency"),
        (
            &["--sfu-advertise-ip", "media.example.com"],
            "--sfu-advertise-ip \"media.example.com\" is not an IP address",
        ),
    ] {
        let err = refused(args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("Kubernetes config"), "{args:?}: {err}");
    }
}

#[test]
fn good_flags_get_as_far_as_the_cluster_config() {
    let err = refused(&[
        "--sfu-resources",
        r#"{"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}"#,
        "--udp-strategy",
        "host-network",
        "--host-port-range",
        "40000-40099",
        "--node-selector",
        "castyard.dev/media=true",
        "--sfu-advertise-ip",
        "203.0.113.9",
    ]);
    assert!(err.contains("reading the Kubernetes config"), "{err}");
}
