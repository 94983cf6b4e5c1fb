"""Asks a gRPC server about itself through server reflection with grpcio-reflection, an
implementation independent of the server's own (tonic-reflection). Run by
tests/tests/e2e.rs with the venv's Python (scripts/setup.sh installs grpcio and
grpcio-reflection there).

Usage: reflect.py HOST:PORT v1|v1alpha

Prints one JSON object:
  {"api": ..., "services": [listed service names],
   "file": the file that defines imagesearch.v1.ImageSearch,
   "methods": [that service's methods], "dependencies": [the files it imports]}

v1alpha goes through grpcio-reflection's own client, ProtoReflectionDescriptorDatabase.
grpcio-reflection ships no v1 client: v1 sends the same messages (the v1 and v1alpha protocols
are wire-identical) on the v1 method, /grpc.reflection.v1.ServerReflection/ServerReflectionInfo.
Any failure exits non-zero with the reason on stderr.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SYMBOL = "imagesearch.v1.ImageSearch"
TIMEOUT_S = 30
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def service_of(file_proto):
    """The service SYMBOL names in a FileDescriptorProto, or None."""
    package, _, name = SYMBOL.rpartition(".")
    if file_proto.package != package:
        return None
    return next((s for s in file_proto.service if s.name == name), None)


def describe(api, services, file_proto):
    service = service_of(file_proto)
    if service is None:
        sys.exit(f"{api}: {file_proto.name} does not define {SYMBOL}")
    return {
        "api": api,
        "services": sorted(services),
        "file": file_proto.name,
        "methods": [m.name for m in service.method],
        "dependencies": list(file_proto.dependency),
    }


def via_v1alpha(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = list(db.get_services())
    file_proto = db.FindFileContainingSymbol(SYMBOL)
    # Every import resolves too (raises KeyError when the server does not know one).
    for dependency in file_proto.dependency:
        db.FindFileByName(dependency)
    return describe("v1alpha", services, file_proto)


def via_v1(channel):
    call = channel.stream_stream(
        V1_METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    def ask(**fields):
        request = reflection_pb2.ServerReflectionRequest(**fields)
        answers = list(call(iter([request]), timeout=TIMEOUT_S))
        if len(answers) != 1:
            sys.exit(f"v1: {len(answers)} answers to one request {fields}")
        answer = answers[0]
        if answer.WhichOneof("message_response") == "error_response":
            sys.exit(f"v1: error answer to {fields}: {answer.error_response}")
        return answer

    services = [s.name for s in ask(list_services="").list_services_response.service]
    files = []
    for raw in ask(file_containing_symbol=SYMBOL).file_descriptor_response.file_descriptor_proto:
        file_proto = descriptor_pb2.FileDescriptorProto()
        file_proto.ParseFromString(raw)
        files.append(file_proto)
    defining = [f for f in files if service_of(f) is not None]
    if len(defining) != 1:
        sys.exit(f"v1: {len(defining)} of the files answered for {SYMBOL} define it: {[f.name for f in files]}")
    return describe("v1", services, defining[0])


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("v1", "v1alpha"):
        sys.exit("usage: reflect.py HOST:PORT v1|v1alpha")
    target, api = sys.argv[1], sys.argv[2]
    # Loopback only: never through a proxy named in the environment.
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        result = via_v1alpha(channel) if api == "v1alpha" else via_v1(channel)
    finally:
        channel.close()
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
