//! Where browsers send an SFU's media: learned from its applied Service, given to its pod.
//!
//! The SFU puts one ICE candidate in its SDP. Its own pod IP and container port are right
//! only on the host network; through a NodePort browsers reach the node's IP and the port the
//! API server allocated, through a LoadBalancer the balancer's address. Both are known only
//! once the Service exists, so the Service is applied first and the pod built from its reply.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};

use crate::config::{OperatorConfig, UdpStrategy};

/// What the operator knows of an SFU's public media address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advertise {
    /// Known. `ip: None` means the IP of the node the pod lands on (`status.hostIP`).
    At { ip: Option<IpAddr>, port: u16 },
    /// A LoadBalancer that reports a DNS name (AWS's NLB) rather than an IP: ICE candidates
    /// take IPs only, so it is resolved before the pod is built.
    Resolve { host: String, port: u16 },
    /// Not yet: the reason goes into the SfuReady condition and the pod waits.
    Waiting(String),
}

/// The SFU's media address, from the operator's strategy and the Service as the API server
/// returned it (with its allocated nodePort and load-balancer status).
pub fn sfu_advertise(cfg: &OperatorConfig, media_port: u16, svc: &Service) -> Advertise {
    let fixed = cfg.sfu_advertise_ip;
    let name = svc.metadata.name.as_deref().unwrap_or("the SFU's");
    match cfg.udp {
        // The pod's IP is the node's.
        UdpStrategy::HostNetwork { .. } => Advertise::At {
            ip: fixed,
            port: media_port,
        },
        UdpStrategy::NodePort => {
            let node_port = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("media"))
                .and_then(|p| p.node_port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            match node_port {
                Some(port) => Advertise::At { ip: fixed, port },
                None => {
                    Advertise::Waiting(format!("Service {name} has no node port for media yet"))
                }
            }
        }
        UdpStrategy::LoadBalancer => {
            if fixed.is_some() {
                return Advertise::At {
                    ip: fixed,
                    port: media_port,
                };
            }
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first());
            match ingress {
                Some(i) if i.ip.is_some() => match i.ip.as_deref().unwrap_or("").parse() {
                    Ok(ip) => Advertise::At {
                        ip: Some(ip),
                        port: media_port,
                    },
                    Err(_) => Advertise::Waiting(format!(
                        "Service {name}'s load balancer reports {:?}, which is not an IP",
                        i.ip.as_deref().unwrap_or("")
                    )),
                },
                Some(i) if i.hostname.is_some() => Advertise::Resolve {
                    host: i.hostname.clone().unwrap_or_default(),
                    port: media_port,
                },
                _ => Advertise::Waiting(format!("LoadBalancer Service {name} has no address yet")),
            }
        }
    }
}

/// Turns a load balancer's DNS name into an IP (IPv4 first: the one browsers most often
/// reach); anything else passes through.
pub async fn resolve(adv: Advertise) -> Advertise {
    let Advertise::Resolve { host, port } = adv else {
        return adv;
    };
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                Some(a) => Advertise::At {
                    ip: Some(a.ip()),
                    port,
                },
                None => Advertise::Waiting(format!("{host} resolves to no address")),
            }
        }
        Err(e) => Advertise::Waiting(format!("cannot resolve the load balancer {host}: {e}")),
    }
}

/// Gives the SFU pod its advertised address (the worker's `--advertise-ip/--advertise-port`
/// as environment). Env is fixed for a pod's life, which is what the SFU needs too: its
/// candidate is in every session it has negotiated.
pub fn advertise_on(pod: &mut Pod, ip: Option<IpAddr>, port: u16) {
    let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) else {
        return;
    };
    let env = c.env.get_or_insert_with(Vec::new);
    env.push(match ip {
        Some(ip) => EnvVar {
            name: "CASTYARD_ADVERTISE_IP".into(),
            value: Some(ip.to_string()),
            ..Default::default()
        },
        None => crate::build::field_env("CASTYARD_ADVERTISE_IP", "status.hostIP"),
    });
    env.push(EnvVar {
        name: "CASTYARD_ADVERTISE_PORT".into(),
        value: Some(port.to_string()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };

    fn service(node_port: Option<i32>, ingress: Option<LoadBalancerIngress>) -> Service {
        Service {
            metadata: kube::api::ObjectMeta {
                name: Some("show-sfu".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    ServicePort {
                        name: Some("signalling".into()),
                        port: 7880,
                        node_port: Some(31000),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("media".into()),
                        port: 7882,
                        node_port,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: ingress.map(|i| vec![i]),
                }),
                ..Default::default()
            }),
        }
    }

    fn cfg(udp: UdpStrategy, fixed: Option<&str>) -> OperatorConfig {
        OperatorConfig {
            udp,
            sfu_advertise_ip: fixed.map(|f| f.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_port_is_the_nodes_ip_and_the_allocated_media_port() {
        let c = cfg(UdpStrategy::NodePort, None);
        assert_eq!(
            sfu_advertise(&c, 7882, &service(Some(30123), None)),
            Advertise::At {
                ip: None,
                port: 30123
            }
        );
        // The signalling port's nodePort is not the media one.
        assert!(matches!(
            sfu_advertise(&c, 7882, &service(None, None)),
            Advertise::Waiting(m) if m.contains("show-sfu")
        ));
        let c = cfg(UdpStrategy::NodePort, Some("203.0.113.9"));
        assert_eq!(
            sfu_advertise(&c, 7882, &service(Some(30123), None)),
            Advertise::At {
                ip: Some("203.0.113.9".parse().unwrap()),
                port: 30123
            }
        );
    }

    #[test]
    fn a_load_balancer_waits_for_its_address() {
        let c = cfg(UdpStrategy::LoadBalancer, None);
        assert!(matches!(
            sfu_advertise(&c, 7882, &service(Some(30123), None)),
            Advertise::Waiting(m) if m.contains("no address yet")
        ));
        let ip = LoadBalancerIngress {
            ip: Some("198.51.100.4".into()),
            ..Default::default()
        };
        assert_eq!(
            sfu_advertise(&c, 7882, &service(Some(30123), Some(ip))),
            Advertise::At {
                ip: Some("198.51.100.4".parse().unwrap()),
                port: 7882
            }
        );
        let name = LoadBalancerIngress {
            hostname: Some("lb.example".into()),
            ..Default::default()
        };
        assert_eq!(
            sfu_advertise(&c, 7882, &service(Some(30123), Some(name))),
            Advertise::Resolve {
                host: "lb.example".into(),
                port: 7882
            }
        );
        // A configured address wins over the balancer's.
        let c = cfg(UdpStrategy::LoadBalancer, Some("203.0.113.9"));
        assert_eq!(
            sfu_advertise(&c, 7882, &service(None, None)),
            Advertise::At {
                ip: Some("203.0.113.9".parse().unwrap()),
                port: 7882
            }
        );
    }

    #[test]
    fn host_network_advertises_the_pod_itself() {
        let c = cfg(
            UdpStrategy::HostNetwork {
                first_port: 40000,
                last_port: 40999,
            },
            None,
        );
        assert_eq!(
            sfu_advertise(&c, 40100, &service(None, None)),
            Advertise::At {
                ip: None,
                port: 40100
            }
        );
    }

    #[tokio::test]
    async fn a_load_balancer_name_is_resolved_or_waited_for() {
        let at = resolve(Advertise::Resolve {
            host: "localhost".into(),
            port: 7882,
        })
        .await;
        assert!(
            matches!(at, Advertise::At { ip: Some(ip), port: 7882 } if ip.is_loopback()),
            "{at:?}"
        );
        let bad = resolve(Advertise::Resolve {
            host: "no-such-host.invalid".into(),
            port: 7882,
        })
        .await;
        assert!(matches!(bad, Advertise::Waiting(m) if m.contains("no-such-host.invalid")));
    }

    #[test]
    fn the_pod_gets_the_address_as_env() {
        let mut pod =
            crate::build::build(&castyard_crd::Broadcast::test(), &OperatorConfig::default())
                .unwrap()
                .pods
                .remove(0);
        advertise_on(&mut pod, None, 30123);
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        let ip = env
            .iter()
            .find(|e| e.name == "CASTYARD_ADVERTISE_IP")
            .unwrap();
        assert_eq!(
            ip.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.hostIP"
        );
        let port = env
            .iter()
            .find(|e| e.name == "CASTYARD_ADVERTISE_PORT")
            .unwrap();
        assert_eq!(port.value.as_deref(), Some("30123"));
    }
}
