//! The isolation program on crafted packets (BPF_PROG_TEST_RUN): no
//! interface is touched, only maps pinned under a private bpffs directory.

use std::net::Ipv4Addr;

use dataplane::datapath::Datapath;
use dataplane::datapath::endpoints::EndpointEntry;
use dataplane::datapath::programs::PROG_VETH_INGRESS;

/// tcx verdicts.
const NEXT: i32 = -1;
const DROP: i32 = 2;
/// ifindex the test-run skb arrives on (loopback).
const LO: u32 = 1;

fn frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x02, 0x42, 0, 0, 0, 1, 0x02, 0x42, 0, 0, 0, 2, 0x08, 0x00];
    // IPv4 header, ICMP, no options; checksums do not matter to this program.
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    f
}

struct Pins(std::path::PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn drops(dp: &Datapath, reason: &str) -> u64 {
    dp.metrics.read().expect("metrics").iter().filter(|r| r.reason.name() == reason).map(|r| r.packets).sum()
}

/// The veth program's verdict on `frame`.
fn verdict(dp: &Datapath, frame: &[u8]) -> i32 {
    dp.programs.test_run(PROG_VETH_INGRESS, frame).expect("BPF_PROG_TEST_RUN").0
}

#[test]
fn isolation_verdicts_on_crafted_packets() {
    assert!(
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n"),
        "this test loads BPF programs: run it as root (cargo xtask test)"
    );
    let pins = Pins(std::path::PathBuf::from(format!("/sys/fs/bpf/dataplane-unit-{}", std::process::id())));
    let dp =
        Datapath::load(&pins.0, Default::default()).expect("load BPF (needs root, bpffs, a kernel with tcx)");
    dp.endpoints
        .set_subnet("10.1.0.0/24".parse().expect("net"), 1, Ipv4Addr::new(10, 1, 0, 1), 0)
        .expect("subnet 1");
    dp.endpoints
        .set_subnet("10.2.0.0/24".parse().expect("net"), 2, Ipv4Addr::new(10, 2, 0, 1), 0)
        .expect("subnet 2");

    // Not an endpoint yet: nothing is judged.
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [10, 2, 0, 2])), NEXT);

    let ep = EndpointEntry {
        ifindex: LO,
        net_num: 1,
        ip: Ipv4Addr::new(10, 1, 0, 2),
        mac: [2, 0x42, 10, 1, 0, 2],
        flags: 0,
    };
    dp.endpoints.set(ep).expect("endpoint");
    let before = drops(&dp, "POLICY_NETWORK_ISOLATION");
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [10, 2, 0, 2])), DROP, "other network");
    assert_eq!(drops(&dp, "POLICY_NETWORK_ISOLATION"), before + 1, "drop not counted");
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [10, 1, 0, 3])), NEXT, "same network");
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [10, 2, 0, 1])), NEXT, "other gateway is the host");
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [192, 0, 2, 9])), NEXT, "outside every network");
    let mut arp = frame([10, 1, 0, 2], [10, 2, 0, 2]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(verdict(&dp, &arp), NEXT, "non-IP is not judged here");
    // (A truncated IPv4 header, counted as INVALID_PACKET, cannot be fed
    // through BPF_PROG_TEST_RUN: the kernel refuses such an skb with EINVAL.)
    // Removing the other network's subnet lifts the drop.
    dp.endpoints.remove_subnet("10.2.0.0/24".parse().expect("net")).expect("remove subnet");
    assert_eq!(verdict(&dp, &frame([10, 1, 0, 2], [10, 2, 0, 2])), NEXT);
}
