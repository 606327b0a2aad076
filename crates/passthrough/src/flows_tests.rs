use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

const ROOMY: Limits = Limits {
    max_flows: 100,
    per_ip: 100,
};

fn put(t: &mut FlowTable<()>, cid: &[u8], port: u16, limits: Limits) -> Result<u64, Refused> {
    t.insert(
        cid,
        addr(port),
        0,
        (),
        FlowShared::new(addr(port), 0),
        limits,
    )
    .map(|p| p.id)
}

#[test]
fn every_cid_of_a_flow_finds_it_and_removal_forgets_them() {
    let mut t = FlowTable::default();
    let id = put(&mut t, &[1; 8], 1, ROOMY).expect("placed");
    assert!(t.add_cid(id, &[2; 5]));
    assert_eq!(t.by_cid(&[1; 8]), Some(id));
    assert_eq!(t.by_short(&[2, 2, 2, 2, 2, 9, 9], 20), Some((id, 5)));
    assert_eq!(
        t.by_short(&[2, 2, 2, 2, 2, 9, 9], 4),
        None,
        "longer than routed"
    );
    let flow = t.remove(id).expect("flow");
    assert!(flow.shared.stop.is_cancelled());
    assert_eq!(t.by_cid(&[1; 8]), None);
    assert_eq!(t.by_short(&[2; 8], 20), None);
    assert!(t.is_empty());
}

#[test]
fn cids_per_flow_are_bounded_and_never_stolen() {
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, ROOMY).expect("a");
    let b = put(&mut t, &[2; 8], 2, ROOMY).expect("b");
    assert!(!t.add_cid(b, &[1; 8]), "a's CID stays a's");
    assert_eq!(put(&mut t, &[1; 8], 3, ROOMY), Err(Refused::Taken));
    for i in 0..20u8 {
        t.add_cid(a, &[100 + i; 8]);
    }
    let held = (0..20u8)
        .filter(|i| t.by_cid(&[100 + i; 8]).is_some())
        .count();
    assert_eq!(held, MAX_CIDS_PER_FLOW - 1);
    assert_eq!(put(&mut t, &[3; 21], 4, ROOMY), Err(Refused::BadCid));
}

#[test]
fn a_full_table_evicts_the_oldest_half_open_flow_else_refuses() {
    let limits = Limits {
        max_flows: 2,
        per_ip: 10,
    };
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, limits).expect("a");
    let b = put(&mut t, &[2; 8], 2, limits).expect("b");
    t.mark_answered(a);
    let placed = t
        .insert(&[3; 8], addr(3), 0, (), FlowShared::new(addr(3), 0), limits)
        .expect("c evicts b");
    assert_eq!(placed.evicted.map(|f| f.id), Some(b));
    t.mark_answered(placed.id);
    assert_eq!(put(&mut t, &[4; 8], 4, limits), Err(Refused::Full));
    assert_eq!(t.len(), 2);
}

#[test]
fn per_ip_cap_counts_live_flows() {
    let limits = Limits {
        max_flows: 100,
        per_ip: 2,
    };
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, limits).expect("a");
    put(&mut t, &[2; 8], 2, limits).expect("b");
    assert_eq!(put(&mut t, &[3; 8], 3, limits), Err(Refused::PerIp));
    t.remove(a);
    put(&mut t, &[3; 8], 3, limits).expect("room again");
}

#[test]
fn idle_flows_are_reaped() {
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, ROOMY).expect("a");
    let b = put(&mut t, &[2; 8], 2, ROOMY).expect("b");
    t.get(b).expect("b").shared.touch(5_000);
    assert_eq!(t.reap(6_000, 2_000), 1);
    assert!(t.get(a).is_none());
    assert!(t.get(b).is_some());
}

#[test]
fn a_moved_source_is_reported_once() {
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, ROOMY).expect("a");
    let f = t.get_mut(a).expect("a");
    assert!(!f.seen_from(addr(1), 10));
    assert!(f.seen_from(addr(9), 11));
    assert!(!f.seen_from(addr(9), 12));
    assert_eq!(f.shared.client(), addr(9));
}

#[test]
fn backlogs_are_bounded_per_flow_and_released() {
    let mut t = FlowTable::default();
    let a = put(&mut t, &[1; 8], 1, ROOMY).expect("a");
    assert_eq!(t.keep(a, &[0; 1200], 2), Kept::Yes);
    assert_eq!(t.keep(a, &[0; 1200], 2), Kept::Yes);
    assert_eq!(t.keep(a, &[0; 1200], 2), Kept::BacklogFull);
    assert_eq!(t.backlog_bytes(), 2400);
    t.mark_answered(a);
    assert_eq!(t.backlog_bytes(), 0);
    let b = put(&mut t, &[2; 8], 2, ROOMY).expect("b");
    assert_eq!(
        t.keep(b, &vec![0; MAX_BACKLOG_BYTES + 1], 2),
        Kept::OverBudget
    );
    assert_eq!(t.keep(b, &[0; 100], 2), Kept::Yes);
    t.remove(b);
    assert_eq!(t.backlog_bytes(), 0);
}
