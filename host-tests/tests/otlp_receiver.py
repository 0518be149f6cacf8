"""A loopback OTLP/gRPC logs receiver for the tests (host-tests/tests/it/envoy_otlp.rs).

Serves opentelemetry.proto.collector.logs.v1.LogsService/Export on 127.0.0.1 (a free port), prints
{"port": N} once it listens, then one JSON line per LogRecord received: its body, attributes and the resource's
attributes. Stops when stdin closes (the test ends). Uses the OTLP protobufs that xds-protos ships and grpcio
(envoy/requirements.txt), with a generic handler instead of generated service stubs. xds-protos carries an older
OTLP schema in which ResourceLogs field 2 is `instrumentation_library_logs` (now `scope_logs`, same number and
wire shape), and ScopeLogs field 2 is `logs` (now `log_records`), so both names are read.
"""

import json
import sys
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, kind)
    return MessageToDict(v)


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def export(request, _context):
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        fields = resource_logs.DESCRIPTOR.fields_by_name
        scopes = resource_logs.scope_logs if "scope_logs" in fields else resource_logs.instrumentation_library_logs
        for scope_logs in scopes:
            named = scope_logs.DESCRIPTOR.fields_by_name
            for record in scope_logs.log_records if "log_records" in named else scope_logs.logs:
                line = {
                    "resource": resource,
                    "time_unix_nano": record.time_unix_nano,
                    "body": value(record.body),
                    "attributes": attributes(record.attributes),
                }
                print(json.dumps(line), flush=True)
    return logs.ExportLogsServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=logs.ExportLogsServiceRequest.FromString,
                response_serializer=logs.ExportLogsServiceResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
