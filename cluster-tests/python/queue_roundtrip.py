"""A client in another language: generates Python stubs from Sluice's .proto
files with grpcio-tools, then creates a queue, sends a message with an
attribute, receives it and deletes it against the node at ADDR. Prints one
JSON object with what it saw.

usage: queue_roundtrip.py PROTO_DIR OUT_DIR ADDR
"""

import json
import sys

from grpc_tools import protoc


def generate(proto_dir, out_dir):
    # queues.proto imports errors.proto (MessageError).
    for f in ["sluice/v1/errors.proto", "sluice/v1/queues.proto"]:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_dir}",
                f"--python_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                f"{proto_dir}/{f}",
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {f} with {code}")


def main(proto_dir, out_dir, addr):
    generate(proto_dir, out_dir)
    sys.path.insert(0, out_dir)
    import grpc
    from sluice.v1 import queues_pb2 as q
    from sluice.v1 import queues_pb2_grpc as qg

    stub = qg.QueuesStub(grpc.insecure_channel(addr))
    created = stub.CreateQueue(
        q.CreateQueueRequest(queue_name="py-orders", attributes={"VisibilityTimeout": "60"}),
        timeout=20,
    )
    sent = stub.SendMessage(
        q.SendMessageRequest(
            queue_name="py-orders",
            message_body="hello from python",
            message_attributes={
                "kind": q.MessageAttributeValue(data_type="String", string_value="greeting")
            },
        ),
        timeout=20,
    )
    got = stub.ReceiveMessage(
        q.ReceiveMessageRequest(
            queue_name="py-orders",
            max_number_of_messages=10,
            wait_time_seconds=5,
            message_system_attribute_names=["All"],
            message_attribute_names=["All"],
        ),
        timeout=20,
    )
    m = got.messages[0]
    stub.DeleteMessage(
        q.DeleteMessageRequest(queue_name="py-orders", receipt_handle=m.receipt_handle),
        timeout=20,
    )
    after = stub.GetQueueAttributes(
        q.GetQueueAttributesRequest(queue_name="py-orders"), timeout=20
    )
    # A bad request comes back with the gRPC code and the field in the message.
    try:
        stub.SendMessage(q.SendMessageRequest(queue_name="py-orders", message_body=""), timeout=20)
        error = None
    except grpc.RpcError as e:
        error = {"code": e.code().name, "details": e.details()}
    print(
        json.dumps(
            {
                "queue_url": created.queue_url,
                "sent_id": sent.message_id,
                "md5_sent": sent.md5_of_message_body,
                "received_id": m.message_id,
                "body": m.body,
                "md5_received": m.md5_of_body,
                "kind": m.message_attributes["kind"].string_value,
                "receive_count": m.attributes["ApproximateReceiveCount"],
                "left": after.attributes["ApproximateNumberOfMessages"],
                "in_flight": after.attributes["ApproximateNumberOfMessagesNotVisible"],
                "error": error,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
