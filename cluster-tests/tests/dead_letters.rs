//! Dead letters and redrive on a real cluster, driven by the leader's
//! housekeeper: over-received messages reach the dead-letter queue, and a
//! move task brings them back.

use std::time::Duration;

use cluster_tests::{
    create_queue_with_dlq, elected_cluster, receive_until_empty, receive_with_attributes, wait_for,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

async fn count(client: &Client, queue: &str, attribute: &str) -> u64 {
    client
        .get_queue_attributes(queue, &[attribute])
        .await
        .unwrap()[attribute]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn over_received_messages_reach_the_dlq_and_a_move_task_returns_them() {
    let (_serial, c, _) = elected_cluster(3, &[]).await;
    let client = c.client();
    create_queue_with_dlq(&client, "orders", "orders-dlq", 2, &[]).await;
    for i in 0..20 {
        client
            .send_body("orders", &format!("order-{i}"))
            .await
            .unwrap();
    }
    let receive_all = |vt: i32| {
        let client = client.clone();
        async move {
            receive_until_empty(&client, "orders", vt, false)
                .await
                .len()
        }
    };
    // Two failed deliveries each (visibility 0 makes them visible again at
    // once; receive each batch once with a long timeout to count them).
    for _ in 0..2 {
        let mut seen = 0;
        while seen < 20 {
            let r = client
                .receive_from("orders", 10, Some(1), Some(5))
                .await
                .unwrap();
            seen += r.messages.len();
        }
    }
    // The third receive moves them; the housekeeper delivers them.
    wait_for(Duration::from_secs(20), "20 messages in the DLQ", || {
        let client = client.clone();
        async move {
            let _ = receive_all(30).await;
            (count(&client, "orders-dlq", "ApproximateNumberOfMessages").await == 20).then_some(())
        }
    })
    .await;
    assert_eq!(
        client
            .list_dead_letter_source_queues("orders-dlq")
            .await
            .unwrap(),
        vec!["orders".to_string()]
    );
    let dead = receive_with_attributes(&client, "orders-dlq", 1, Some(0), None)
        .await
        .unwrap();
    assert_eq!(
        dead.messages[0].attributes["DeadLetterQueueSourceArn"],
        "arn:aws:sqs:us-east-1:000000000000:orders"
    );

    let handle = client
        .start_message_move_task(pb::StartMessageMoveTaskRequest {
            source_arn: "arn:aws:sqs:us-east-1:000000000000:orders-dlq".into(),
            destination_arn: None,
            max_number_of_messages_per_second: None,
        })
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "the move task to finish", || {
        let client = client.clone();
        async move {
            let tasks = client
                .list_message_move_tasks("arn:aws:sqs:us-east-1:000000000000:orders-dlq", 1)
                .await
                .ok()?;
            (tasks[0].status == "COMPLETED").then_some(tasks)
        }
    })
    .await;
    let tasks = client
        .list_message_move_tasks("arn:aws:sqs:us-east-1:000000000000:orders-dlq", 1)
        .await
        .unwrap();
    assert_eq!(tasks[0].task_handle, handle);
    assert_eq!(tasks[0].approximate_number_of_messages_moved, 20);
    wait_for(
        Duration::from_secs(20),
        "20 messages back in orders",
        || {
            let client = client.clone();
            async move {
                (count(&client, "orders", "ApproximateNumberOfMessages").await == 20).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        count(&client, "orders-dlq", "ApproximateNumberOfMessages").await,
        0
    );
}
