//! The lease rules that keep an apply from being lost or doubled, on a real
//! SQLite file: a stack run whose lease runs out while APPLYING becomes
//! LOST and keeps its stack; its worker coming back resumes it; leases get
//! a full period after a pause; `planned` fits only a plan phase and is
//! idempotent; a claim starts with a clean stop flag; the state an apply
//! could not save is taken from its lease holder only; and a finish's
//! missing-chunk list is bounded by what is stored.

mod common;

use std::time::Duration;

use gantry_store::SqlStore;
use gantry_store::{
    HeldLeaseRef, LockResult, LogStore, NewStateVersion, RunRecord, RunStore, StackRecord,
    StackStore, StateStore, StoreError,
};
use gantry_wire::run::{RunState, RunType};

const LEASE: i64 = 30_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: SqlStore,
    pool_id: String,
    stack: StackRecord,
}

async fn fixture() -> Fixture {
    let (dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("fp")).await;
    let stack = store
        .create_stack(
            &StackRecord {
                name: "web".into(),
                pool_id: pool.id.clone(),
                tool: "terraform".into(),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        pool_id: pool.id,
        stack,
    }
}

impl Fixture {
    async fn claim(&self, worker: &str, now: i64) -> RunRecord {
        let mut claimed = self
            .store
            .claim_runs(&self.pool_id, worker, 1, now + LEASE, now)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "one run to claim");
        claimed.remove(0)
    }

    /// A destroy run, claimed and moved to APPLYING (a destroy applies
    /// right after its plan, under the same lease).
    async fn applying(&self, worker: &str, now: i64) -> RunRecord {
        let run = self
            .store
            .insert_stack_run(&self.stack, RunType::Destroy, &[], now)
            .await
            .unwrap();
        let claimed = self.claim(worker, now).await;
        assert_eq!(claimed.id, run.id);
        let lease = claimed.lease_id.clone().unwrap();
        self.store
            .report_state(&run.id, &lease, RunState::Applying, now)
            .await
            .unwrap();
        self.store.find_run(&run.id).await.unwrap().unwrap()
    }

    async fn state_of(&self, run_id: &str) -> RunState {
        self.store.find_run(run_id).await.unwrap().unwrap().state
    }
}

fn held(run: &RunRecord) -> HeldLeaseRef {
    HeldLeaseRef {
        run_id: run.id.clone(),
        lease_id: run.lease_id.clone().unwrap(),
    }
}

fn state(serial: i64, lineage: &str, body: &str) -> NewStateVersion {
    NewStateVersion {
        serial,
        lineage: lineage.into(),
        resources: 1,
        sha256: format!("sha-{body}"),
        data: body.as_bytes().to_vec(),
        run_id: None,
    }
}

#[tokio::test]
async fn an_apply_whose_lease_runs_out_is_lost_keeps_its_stack_and_resumes_when_its_worker_returns()
{
    let f = fixture().await;
    let run = f.applying("w1", 10).await;
    let lease = run.lease_id.clone().unwrap();
    f.store
        .lock_state(&f.stack.id, "tf-lock", "{}", Some(&run.id), 10)
        .await
        .unwrap();
    let next = f
        .store
        .insert_stack_run(&f.stack, RunType::Tracked, &[], 20)
        .await
        .unwrap();
    assert_eq!(next.state, RunState::Queued);

    let expired = f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].state, RunState::Lost);
    assert!(
        expired[0].reason.as_deref().unwrap().contains("--force"),
        "the reason says what an operator can do: {:?}",
        expired[0].reason
    );
    // The stack stays the LOST run's: its lock, its queue, its credential's lease.
    assert!(f.store.state_lock(&f.stack.id).await.unwrap().is_some());
    assert_eq!(f.state_of(&next.id).await, RunState::Queued);
    assert!(f
        .store
        .claim_runs(&f.pool_id, "w2", 5, 1_000_000, 10 + LEASE + 2)
        .await
        .unwrap()
        .is_empty());
    // A LOST run is not reaped again.
    assert!(f.store.expire_leases(10_000_000).await.unwrap().is_empty());

    // Its worker is back: the same lease resumes it, another is refused.
    let stranger = HeldLeaseRef {
        run_id: run.id.clone(),
        lease_id: "not-the-lease".into(),
    };
    let renewal = f
        .store
        .renew_leases("w1", &[held(&run), stranger], 2_000_000, 1_000)
        .await
        .unwrap();
    assert_eq!(renewal.resumed, vec![run.id.clone()]);
    assert_eq!(renewal.abandon, vec![run.id.clone()]);
    assert_eq!(f.state_of(&run.id).await, RunState::Applying);
    let transitions = f.store.run_transitions(&run.id).await.unwrap();
    let states: Vec<RunState> = transitions.iter().map(|t| t.state).collect();
    assert_eq!(
        &states[states.len() - 2..],
        &[RunState::Lost, RunState::Applying]
    );

    // And it finishes normally, releasing the stack to the next run.
    f.store
        .finish_run(
            &run.id,
            &lease,
            &gantry_store::RunEnd {
                state: RunState::Finished,
                exit_code: Some(0),
                reason: None,
            },
            1_001,
        )
        .await
        .unwrap();
    assert!(f.store.state_lock(&f.stack.id).await.unwrap().is_none());
    assert_eq!(f.state_of(&next.id).await, RunState::Ready);
}

/// A partition: the worker's heartbeat is stuck on a dead connection while
/// its apply's end arrives on a fresh one. The finish itself is the
/// worker's return, and the timeline says so.
#[tokio::test]
async fn a_lost_run_finished_by_its_lease_before_any_heartbeat_records_its_worker_back() {
    let f = fixture().await;
    let run = f.applying("w1", 10).await;
    let lease = run.lease_id.clone().unwrap();
    let expired = f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(expired[0].state, RunState::Lost);

    let end = gantry_store::RunEnd {
        state: RunState::Finished,
        exit_code: Some(0),
        reason: None,
    };
    let finished = f
        .store
        .finish_run(&run.id, &lease, &end, 1_000_000)
        .await
        .unwrap();
    assert_eq!(finished.state, RunState::Finished);
    assert_eq!(finished.reason, None, "the LOST reason is gone");
    let transitions = f.store.run_transitions(&run.id).await.unwrap();
    let tail: Vec<(RunState, Option<&str>)> = transitions[transitions.len() - 3..]
        .iter()
        .map(|t| (t.state, t.reason.as_deref()))
        .collect();
    assert_eq!(tail[0].0, RunState::Lost);
    assert_eq!(
        tail[1..],
        [
            (
                RunState::Applying,
                Some("its worker is back: the apply goes on")
            ),
            (RunState::Finished, None)
        ]
    );
    // A retry of that finish is a success, and records nothing more.
    f.store
        .finish_run(&run.id, &lease, &end, 1_000_001)
        .await
        .unwrap();
    assert_eq!(
        f.store.run_transitions(&run.id).await.unwrap().len(),
        transitions.len()
    );
}

#[tokio::test]
async fn plans_and_task_runs_whose_lease_runs_out_fail_as_worker_lost() {
    let f = fixture().await;
    let plan = f
        .store
        .insert_stack_run(&f.stack, RunType::Tracked, &[], 10)
        .await
        .unwrap();
    f.claim("w1", 10).await;
    let expired = f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(expired[0].id, plan.id);
    assert_eq!(expired[0].state, RunState::Failed);
    assert!(expired[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("worker lost"));
}

#[tokio::test]
async fn after_a_pause_every_lease_gets_a_full_period_before_it_is_reaped() {
    let f = fixture().await;
    let run = f.applying("w1", 10).await;
    // The control plane was down from 100 to 100 s later: the lease ran out.
    let back = 100_000;
    assert_eq!(f.store.extend_leases(back + LEASE).await.unwrap(), 1);
    assert!(f.store.expire_leases(back).await.unwrap().is_empty());
    assert!(f
        .store
        .expire_leases(back + LEASE - 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.state_of(&run.id).await, RunState::Applying);
    // Still unheard a full period later: now it is judged.
    let expired = f.store.expire_leases(back + LEASE + 1).await.unwrap();
    assert_eq!(expired[0].state, RunState::Lost);
    // A lease already further out is left alone.
    assert_eq!(f.store.extend_leases(5).await.unwrap(), 0);
}

#[tokio::test]
async fn planned_ends_only_a_plan_phase_and_a_retry_of_it_is_a_success() {
    let f = fixture().await;
    let run = f
        .store
        .insert_stack_run(&f.stack, RunType::Tracked, &[], 10)
        .await
        .unwrap();
    let claimed = f.claim("w1", 10).await;
    let lease = claimed.lease_id.clone().unwrap();
    f.store.put_workspace(&run.id, &lease, b"ws").await.unwrap();
    // PREPARING is not a plan phase.
    let err = f
        .store
        .park_unconfirmed(&run.id, &lease, 3, 11)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("PLANNING")),
        "{err}"
    );
    f.store
        .report_state(&run.id, &lease, RunState::Planning, 12)
        .await
        .unwrap();
    let parked = f
        .store
        .park_unconfirmed(&run.id, &lease, 3, 13)
        .await
        .unwrap();
    assert_eq!(parked.state, RunState::Unconfirmed);
    assert_eq!(parked.log_base, 3);
    // The answer was lost; the worker says it again: same result, no double base.
    let again = f
        .store
        .park_unconfirmed(&run.id, &lease, 3, 14)
        .await
        .unwrap();
    assert_eq!(again.log_base, 3);
    // Another lease may not.
    assert!(matches!(
        f.store
            .park_unconfirmed(&run.id, "other", 3, 14)
            .await
            .unwrap_err(),
        StoreError::LeaseLost
    ));
}

#[tokio::test]
async fn a_stop_asked_during_the_plan_does_not_stop_the_confirmed_apply() {
    let f = fixture().await;
    let run = f
        .store
        .insert_stack_run(&f.stack, RunType::Tracked, &[], 10)
        .await
        .unwrap();
    let lease = f.claim("w1", 10).await.lease_id.unwrap();
    f.store
        .report_state(&run.id, &lease, RunState::Planning, 11)
        .await
        .unwrap();
    f.store.put_workspace(&run.id, &lease, b"ws").await.unwrap();
    // The user's stop lands just as the plan is reported done.
    f.store.request_stop(&run.id, 12).await.unwrap();
    f.store
        .park_unconfirmed(&run.id, &lease, 1, 13)
        .await
        .unwrap();
    f.store.confirm_run(&run.id, 14).await.unwrap();
    let apply = f.claim("w1", 15).await;
    assert_eq!(apply.state, RunState::Applying);
    assert!(!apply.stop_requested);
    assert!(f.store.stop_requests("w1").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_state_an_apply_could_not_save_is_taken_from_its_lease_holder_only() {
    let f = fixture().await;
    f.store
        .put_state(&f.stack.id, None, &state(1, "L", "one"), 5)
        .await
        .unwrap();
    let run = f.applying("w1", 10).await;
    let lease = run.lease_id.clone().unwrap();
    f.store
        .lock_state(&f.stack.id, "tf-lock", "{}", Some(&run.id), 10)
        .await
        .unwrap();
    f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(f.state_of(&run.id).await, RunState::Lost);

    assert!(matches!(
        f.store
            .put_recovered_state(&run.id, "not-the-lease", &state(2, "L", "two"), 50_000)
            .await
            .unwrap_err(),
        StoreError::LeaseLost
    ));
    let wrong_lineage = f
        .store
        .put_recovered_state(&run.id, &lease, &state(2, "OTHER", "two"), 50_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong_lineage, StoreError::Conflict(m) if m.contains("lineage")),
        "{wrong_lineage}"
    );
    let older = f
        .store
        .put_recovered_state(&run.id, &lease, &state(0, "L", "zero"), 50_000)
        .await
        .unwrap_err();
    assert!(matches!(older, StoreError::Conflict(_)), "{older}");

    let saved = f
        .store
        .put_recovered_state(&run.id, &lease, &state(2, "L", "two"), 50_000)
        .await
        .unwrap();
    assert_eq!((saved.version, saved.serial), (2, 2));
    // Uploaded again (the answer was lost): no new version.
    let again = f
        .store
        .put_recovered_state(&run.id, &lease, &state(2, "L", "two"), 50_001)
        .await
        .unwrap();
    assert_eq!(again.version, 2);
    let (_, data) = f.store.current_state(&f.stack.id).await.unwrap().unwrap();
    assert_eq!(data, b"two");
}

#[tokio::test]
async fn an_operator_gives_up_on_a_lost_run_which_frees_the_stack() {
    let f = fixture().await;
    let run = f.applying("w1", 10).await;
    f.store
        .lock_state(&f.stack.id, "tf-lock", "{}", Some(&run.id), 10)
        .await
        .unwrap();
    let next = f
        .store
        .insert_stack_run(&f.stack, RunType::Proposed, &[], 20)
        .await
        .unwrap();
    assert!(f.store.lost_run(&f.stack.id).await.unwrap().is_none());
    f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(
        f.store.lost_run(&f.stack.id).await.unwrap().unwrap().id,
        run.id
    );

    let ended = f
        .store
        .give_up_lost_run(&f.stack.id, "given up", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, RunState::Failed);
    assert_eq!(ended.reason.as_deref(), Some("given up"));
    assert!(f.store.state_lock(&f.stack.id).await.unwrap().is_none());
    assert_eq!(f.state_of(&next.id).await, RunState::Ready);
    assert!(matches!(
        f.store.unlock_state(&f.stack.id, "", true).await.unwrap(),
        LockResult::NotLocked
    ));
    // The worker coming back now is told to abandon it.
    let renewal = f
        .store
        .renew_leases("w1", &[held(&run)], 200_000, 70_000)
        .await
        .unwrap();
    assert_eq!(renewal.abandon, vec![run.id.clone()]);
}

#[tokio::test]
async fn a_finish_lists_a_bounded_number_of_missing_chunks_whatever_count_it_claims() {
    let f = fixture().await;
    let run = f.applying("w1", 10).await;
    let lease = run.lease_id.clone().unwrap();
    for seq in [0, 1, 3, 7] {
        f.store
            .put_log_chunk(&run.id, &lease, seq, b"x")
            .await
            .unwrap();
    }
    assert_eq!(
        f.store
            .missing_log_chunks(&run.id, 0, 9, 100)
            .await
            .unwrap(),
        vec![2, 4, 5, 6, 8]
    );
    assert_eq!(
        f.store.missing_log_chunks(&run.id, 2, 9, 2).await.unwrap(),
        vec![2, 4]
    );
    // A huge claimed count costs no more than the limit.
    let started = std::time::Instant::now();
    let missing = f
        .store
        .missing_log_chunks(&run.id, 0, u64::MAX, 1000)
        .await
        .unwrap();
    assert_eq!(missing.len(), 1000);
    assert_eq!(&missing[..5], &[2, 4, 5, 6, 8]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_lease_that_made_a_log_may_complete_it_after_the_run_ended() {
    let f = fixture().await;
    f.store
        .insert_stack_run(&f.stack, RunType::Proposed, &[], 10)
        .await
        .unwrap();
    let run = f.claim("w1", 10).await;
    let lease = run.lease_id.clone().unwrap();
    f.store
        .put_log_chunk(&run.id, &lease, 0, b"a")
        .await
        .unwrap();
    f.store.expire_leases(10 + LEASE + 1).await.unwrap();
    assert_eq!(f.state_of(&run.id).await, RunState::Failed);
    // A restarted launcher uploads what it had spooled.
    f.store
        .put_log_chunk(&run.id, &lease, 1, b"b")
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .put_log_chunk(&run.id, "another", 2, b"c")
            .await
            .unwrap_err(),
        StoreError::LeaseLost
    ));
    let chunks = f.store.read_log_chunks(&run.id, 0, 1 << 20).await.unwrap();
    assert_eq!(chunks.len(), 2);
}
