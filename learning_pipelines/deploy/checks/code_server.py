"""The check of the gRPC code server: it answers and loaded the code location without an error."""

from __future__ import annotations

import socket

from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._grpc.client import DagsterGrpcClient
from dagster._serdes import deserialize_value
from dagster._utils.error import SerializableErrorInfo

from learning_pipelines.deploy.checks.session import CONNECT_TIMEOUT_S, Outcome, Session, first_line


def check_code_location(session: Session) -> Outcome:
    host, port = session.target.code_server
    remedy = ("start the code server (`learning-pipelines stack start`, or `dagster code-server start -m "
              f"learning_pipelines.definitions -h {host} -p {port}`)" + session.logs("code_server.log"))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return Outcome(False, f"nothing answers at {host}:{port} ({error.strerror or error})", remedy)
    try:
        response = deserialize_value(DagsterGrpcClient(host=host, port=port).list_repositories())
    except DagsterUserCodeUnreachableError as error:
        return Outcome(False, f"the code server at {host}:{port} does not answer: {session.reason(error)}", remedy)
    if isinstance(response, SerializableErrorInfo):
        root = response
        while root.cause is not None:  # Dagster's wrapper first, the error of the code itself last
            root = root.cause
        message = first_line(response.message) or response.cls_name
        if root is not response:
            cause = first_line(root.message)
            message += f" ... {cause if cause.startswith(root.cls_name or '?') else f'{root.cls_name}: {cause}'}"
        return Outcome(False, f"the code location failed to load: {session.scrub(message)}",
                       "fix the error, then restart the code server; `dagster definitions validate -m "
                       "learning_pipelines.definitions` shows it in full" + session.logs("code_server.log"))
    names = ", ".join(symbol.repository_name for symbol in response.repository_symbols)
    return Outcome(True, f"{host}:{port} serves {len(response.repository_symbols)} repository(ies): {names}")
