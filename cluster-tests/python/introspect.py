"""A generic gRPC client, in the manner of grpcurl: it knows nothing of
Sluice's .proto files. It lists the services of the node at ADDR through
server reflection, builds request types from the descriptors the server
returns, calls CreateQueue and ListQueues with them, and checks health.
Prints one JSON object."""

import json
import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def unary(channel, pool, service, method, **fields):
    svc = pool.FindServiceByName(service)
    m = svc.FindMethodByName(method)
    request_type = message_factory.GetMessageClass(m.input_type)
    response_type = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return call(request_type(**fields), timeout=10)


def main(addr, queue):
    channel = grpc.insecure_channel(addr)
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    pool = DescriptorPool(db)
    created = unary(channel, pool, "sluice.v1.Queues", "CreateQueue", queue_name=queue)
    listed = unary(channel, pool, "sluice.v1.Queues", "ListQueues")
    methods = [m.name for m in pool.FindServiceByName("sluice.v1.Queues").methods]
    health = health_pb2_grpc.HealthStub(channel)
    overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    queues = health.Check(
        health_pb2.HealthCheckRequest(service="sluice.v1.Queues"), timeout=5
    )
    print(
        json.dumps(
            {
                "services": services,
                "queue_methods": methods,
                "created_url": created.queue_url,
                "listed": list(listed.queue_names),
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(overall.status),
                "queues_health": health_pb2.HealthCheckResponse.ServingStatus.Name(
                    queues.status
                ),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
