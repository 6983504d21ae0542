//! What the cluster benchmark reads around a workload: the CPU time of its own
//! process and of the nats-servers, and the messages and bytes through the servers.

use std::time::Instant;

use crate::cpu::cpu_ns;
use crate::nats::NatsCluster;

/// CPU time used so far: by this process (the nodes and their clients) and by the
/// nats-servers.
pub struct Cpu {
    pub own_ns: u64,
    pub nats_ns: u64,
}

impl Cpu {
    pub fn read(nats: &NatsCluster) -> Cpu {
        Cpu {
            own_ns: cpu_ns(std::process::id()),
            nats_ns: nats
                .servers
                .iter()
                .filter_map(|server| server.pid())
                .map(cpu_ns)
                .sum(),
        }
    }

    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            own_ns: self.own_ns - before.own_ns,
            nats_ns: self.nats_ns - before.nats_ns,
        }
    }
}

/// Messages and bytes the nats-servers took in and sent out so far (clients' and
/// routes' together), from each server's `/varz`.
#[derive(Default, serde::Deserialize)]
pub struct Traffic {
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Traffic {
    pub async fn read(nats: &NatsCluster) -> Traffic {
        let http = crate::client();
        let mut sum = Traffic::default();
        for server in &nats.servers {
            let varz: Traffic = http
                .get(format!("http://127.0.0.1:{}/varz", server.monitor))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            sum.in_msgs += varz.in_msgs;
            sum.out_msgs += varz.out_msgs;
            sum.in_bytes += varz.in_bytes;
            sum.out_bytes += varz.out_bytes;
        }
        sum
    }

    pub fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            in_msgs: self.in_msgs - before.in_msgs,
            out_msgs: self.out_msgs - before.out_msgs,
            in_bytes: self.in_bytes - before.in_bytes,
            out_bytes: self.out_bytes - before.out_bytes,
        }
    }
}

/// Microseconds an Ed25519 signature and a check take here (ed25519-dalek, the
/// node's own library), over a message the size of a command group's root.
pub fn ed25519_costs() -> (f64, f64) {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    const ROUNDS: u32 = 2_000;
    let key = SigningKey::from_bytes(&[7; 32]);
    let message = [3u8; 52];
    let started = Instant::now();
    let mut signature = key.sign(&message);
    for round in 0..ROUNDS {
        signature = key.sign(&[&message[..], &round.to_le_bytes()].concat());
    }
    let sign_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    let signed = [&message[..], &(ROUNDS - 1).to_le_bytes()].concat();
    let verifying = key.verifying_key();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        verifying.verify(&signed, &signature).unwrap();
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    (sign_us, verify_us)
}
