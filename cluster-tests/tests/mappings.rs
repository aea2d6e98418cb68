//! Event source mappings through the API on three nodes: the registry
//! (create, validate, list, update, delete).

use std::collections::HashMap;

use cluster_tests::{python_function, serial, Cluster};
use sluice_client::sluice_proto::v1 as pb;

const APP: &str = "def handler(event, context):\n    return len(event['Records'])\n";

#[tokio::test]
async fn mappings_are_validated_listed_updated_and_deleted() {
    let _serial = serial().await;
    let c = Cluster::start(3, &[]);
    let client = c.client_from(1);
    let code = tempfile::tempdir().unwrap();
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: "count".into(),
            handler: "app.handler".into(),
            zip_file: python_function(code.path(), APP),
            ..Default::default()
        })
        .await
        .unwrap();
    client.create_queue("jobs", HashMap::new()).await.unwrap();
    client
        .create_queue(
            "jobs.fifo",
            HashMap::from([("FifoQueue".into(), "true".into())]),
        )
        .await
        .unwrap();
    client
        .create_stream(pb::CreateStreamRequest {
            stream_name: "clicks".into(),
            shard_count: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let sqs = |q: &str| format!("arn:aws:sqs:us-east-1:000000000000:{q}");
    let kinesis = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks";

    let queue = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "count".into(),
            event_source_arn: sqs("jobs"),
            batch_size: Some(50),
            maximum_batching_window_in_seconds: Some(2),
            set_function_response_types: true,
            function_response_types: vec!["ReportBatchItemFailures".into()],
            set_filters: true,
            filters: vec![r#"{"body": {"kind": ["order"]}}"#.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queue.state, "Enabled");
    assert_eq!(queue.batch_size, 50);
    assert_eq!(
        queue.function_arn,
        "arn:aws:lambda:us-east-1:000000000000:function:count"
    );
    assert_eq!(queue.function_response_types, ["ReportBatchItemFailures"]);
    let stream = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "arn:aws:lambda:us-east-1:000000000000:function:count".into(),
            event_source_arn: kinesis.into(),
            starting_position: "TRIM_HORIZON".into(),
            parallelization_factor: Some(2),
            bisect_batch_on_function_error: Some(true),
            maximum_retry_attempts: Some(2),
            on_failure_destination: Some(sqs("jobs")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stream.batch_size, 100);
    assert_eq!(stream.starting_position, "TRIM_HORIZON");

    // Bad input names its field and changes nothing.
    let refused = [
        (
            pb::EventSourceMappingRequest {
                function_name: "count".into(),
                event_source_arn: sqs("jobs.fifo"),
                batch_size: Some(11),
                ..Default::default()
            },
            "batch_size",
        ),
        (
            pb::EventSourceMappingRequest {
                function_name: "count".into(),
                event_source_arn: "arn:aws:sns:us-east-1:000000000000:t".into(),
                ..Default::default()
            },
            "event_source_arn",
        ),
        (
            pb::EventSourceMappingRequest {
                function_name: "count".into(),
                event_source_arn: sqs("jobs.fifo"),
                set_filters: true,
                filters: vec!["{not json".into()],
                ..Default::default()
            },
            "filters[0]",
        ),
    ];
    for (req, field) in refused {
        let e = client.create_event_source_mapping(req).await.unwrap_err();
        assert_eq!(e.code(), Some("InvalidParameterValue"), "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let missing = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "count".into(),
            event_source_arn: sqs("nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(tonic::Code::NotFound), "{missing}");
    let twice = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "count".into(),
            event_source_arn: sqs("jobs"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Some("ResourceConflictException"));
    assert_eq!(
        c.client_from(2)
            .list_event_source_mappings("count", "")
            .await
            .unwrap()
            .len(),
        2
    );
    let by_source = client
        .list_event_source_mappings("", kinesis)
        .await
        .unwrap();
    assert_eq!(by_source.len(), 1);
    assert_eq!(by_source[0].uuid, stream.uuid);

    // Updates change what they name and keep the rest.
    let off = client
        .update_event_source_mapping(pb::EventSourceMappingRequest {
            uuid: queue.uuid.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(off.state, "Disabled");
    assert_eq!(off.batch_size, 50);
    assert_eq!(off.filters, queue.filters);
    let e = client
        .update_event_source_mapping(pb::EventSourceMappingRequest {
            uuid: stream.uuid.clone(),
            maximum_record_age_in_seconds: Some(10),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maximum_record_age_s"), "{e}");

    client
        .delete_event_source_mapping(&queue.uuid)
        .await
        .unwrap();
    let gone = client
        .get_event_source_mapping(&queue.uuid)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("ResourceNotFoundException"));
    // The function takes its mappings with it.
    client.delete_function("count").await.unwrap();
    assert!(client
        .list_event_source_mappings("", "")
        .await
        .unwrap()
        .is_empty());
}
