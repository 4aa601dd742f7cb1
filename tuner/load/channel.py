"""One gRPC channel to a Triton server and the raw methods the load calls on it.

Requests are serialized once (`request.RequestPlan`), so the load methods
take and return bytes: no serializer on the way out, no parsing on the way
in (the engine parses the responses it checks). Only ModelStatistics, called
once per window, goes through protobuf.
"""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2

from tuner.server.connection import Connection

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
STATS_METHOD = "/inference.GRPCInferenceService/ModelStatistics"
STATS_TIMEOUT_S = 5.0


class LoadChannel:
    """A gRPC channel and its raw method callables, for one model; open it in the event loop that uses it.

    After `open()`:
      infer(payload, timeout=, metadata=)          ModelInfer, unary: serialized request in, raw response bytes out
      stream(requests, timeout=None, metadata=)    ModelStreamInfer, bidirectional: an async iterator of
                                                   serialized requests in, raw response bytes out
      metadata                                     the request headers to pass to both (None: none)
    The engine binds `infer` and `metadata` once per point, never per request.
    """

    def __init__(self, connection: Connection, model: str, version: str = ""):
        self.connection = connection
        self.model = model
        self.version = version
        self.channel: grpc.aio.Channel | None = None
        self.metadata: tuple[tuple[str, str], ...] | None = None
        self.infer = None
        self.stream = None
        self._stats = None
        self._stats_request = service_pb2.ModelStatisticsRequest(name=model, version=version)
        self._all_stats_request = service_pb2.ModelStatisticsRequest()  # every loaded model

    async def open(self) -> "LoadChannel":
        self.channel = self.connection.aio_channel()
        self.metadata = self.connection.metadata() or None
        self.infer = self.channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
        self.stream = self.channel.stream_stream(STREAM_METHOD, request_serializer=None,
                                                 response_deserializer=None)
        self._stats = self.channel.unary_unary(
            STATS_METHOD,
            request_serializer=service_pb2.ModelStatisticsRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStatisticsResponse.FromString,
        )
        return self

    async def close(self) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await channel.close()

    async def statistics(self, all_models: bool = False) -> service_pb2.ModelStatisticsResponse | None:
        """The model's statistics (`all_models`: every loaded model's, in one call, e.g. an ensemble's
        steps beside it); None when the call fails (a breakdown is "not available", never a failed point)."""
        request = self._all_stats_request if all_models else self._stats_request
        try:
            return await self._stats(request, timeout=STATS_TIMEOUT_S, metadata=self.metadata)
        except grpc.aio.AioRpcError:
            return None
