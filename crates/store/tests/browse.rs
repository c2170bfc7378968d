//! Browsing reads (the web UI's): runs filtered and paged by keyset, and a
//! log read from its end, stopping at a gap.

mod common;

use std::collections::BTreeMap;

use gantry_store::{BrowseStore, LogStore, NewRun, RunPage, RunStore, StackRecord, StackStore};
use gantry_wire::run::{RunState, RunType};

fn task(pool_id: &str) -> NewRun {
    NewRun {
        pool_id: pool_id.into(),
        run_type: RunType::Task,
        command: vec!["true".into()],
        env: BTreeMap::new(),
        image: None,
    }
}

#[tokio::test]
async fn runs_filter_by_pool_stack_state_and_type_and_page_newest_first() {
    let (_dir, store) = common::store().await;
    let a = common::pool(&store, "a", common::key("fa")).await;
    let b = common::pool(&store, "b", common::key("fb")).await;
    let stack = store
        .create_stack(
            &StackRecord {
                name: "web".into(),
                pool_id: b.id.clone(),
                tool: "terraform".into(),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap();
    let mut on_a = Vec::new();
    for now in 0..7 {
        on_a.push(store.insert_run(&task(&a.id), now).await.unwrap().id);
    }
    let first = store
        .insert_stack_run(&stack, RunType::Tracked, &[], 10)
        .await
        .unwrap();
    let second = store
        .insert_stack_run(&stack, RunType::Proposed, &[], 11)
        .await
        .unwrap();
    store.request_stop(&on_a[0], 20).await.unwrap(); // CANCELED

    let page = |page: RunPage| {
        let store = &store;
        async move {
            store
                .page_runs(&page)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_a: Vec<String> = on_a.iter().rev().cloned().collect();
    let pool_a = RunPage {
        pool_id: Some(a.id.clone()),
        limit: 3,
        ..RunPage::default()
    };
    assert_eq!(page(pool_a.clone()).await, newest_a[..3]);
    let next = RunPage {
        before: Some(newest_a[2].clone()),
        ..pool_a.clone()
    };
    assert_eq!(page(next).await, newest_a[3..6]);
    let last = RunPage {
        before: Some(newest_a[5].clone()),
        ..pool_a.clone()
    };
    assert_eq!(page(last).await, newest_a[6..]);
    assert_eq!(
        page(RunPage {
            stack_id: Some(stack.id.clone()),
            ..RunPage::default()
        })
        .await,
        [second.id.clone(), first.id.clone()]
    );
    assert_eq!(
        page(RunPage {
            run_type: Some(RunType::Proposed),
            ..RunPage::default()
        })
        .await,
        vec![second.id.clone()]
    );
    assert_eq!(
        page(RunPage {
            state: Some(RunState::Canceled),
            ..RunPage::default()
        })
        .await,
        vec![on_a[0].clone()]
    );
    let active = page(RunPage {
        pool_id: Some(a.id.clone()),
        active_only: true,
        ..RunPage::default()
    })
    .await;
    assert_eq!(active.len(), 6);
    assert!(!active.contains(&on_a[0]));
    assert!(page(RunPage {
        before: Some("no-such-run".into()),
        ..RunPage::default()
    })
    .await
    .is_empty());
}

#[tokio::test]
async fn a_log_tail_walks_back_from_the_end_and_stops_at_a_gap() {
    let (_dir, store) = common::store().await;
    let pool = common::pool(&store, "p", common::key("fp")).await;
    let run = store.insert_run(&task(&pool.id), 1).await.unwrap();
    let claimed = store
        .claim_runs(&pool.id, "worker", 1, 60_000, 2)
        .await
        .unwrap();
    let lease = claimed[0].lease_id.clone().unwrap();
    for seq in (0..10).chain(11..20) {
        let data = vec![b'a' + seq as u8; 1000];
        store
            .put_log_chunk(&run.id, &lease, seq, &data)
            .await
            .unwrap();
    }
    let seqs =
        |chunks: Vec<gantry_store::LogChunk>| chunks.iter().map(|c| c.seq).collect::<Vec<_>>();
    // The end: about 3,000 bytes back, in order.
    let tail = store.read_log_tail(&run.id, None, 3000).await.unwrap();
    assert_eq!(seqs(tail.clone()), [17, 18, 19]);
    assert_eq!(tail[0].data[0], b'a' + 17);
    // Before chunk 13: stops at the gap (10 was never stored).
    assert_eq!(
        seqs(
            store
                .read_log_tail(&run.id, Some(12), 100_000)
                .await
                .unwrap()
        ),
        [11, 12]
    );
    assert_eq!(
        seqs(store.read_log_tail(&run.id, Some(9), 1).await.unwrap()),
        [9]
    );
    assert!(store
        .read_log_tail("other", None, 1000)
        .await
        .unwrap()
        .is_empty());
}
