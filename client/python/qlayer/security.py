"""TLS, mutual TLS and bearer tokens for qlayer.Client (the qlayer-server
flags --tls-cert/--tls-key, --tls-client-ca and --auth-token-file).

    c = qlayer.Client("qlayer.example:50051", tls_ca="ca.pem",
                      tls_cert="client.pem", tls_key="client.key",
                      auth_token_file="/run/secrets/qlayer-token")

PEM arguments take a file path (str / os.PathLike) or the PEM bytes. The
token rides on gRPC call credentials ("authorization: Bearer <token>" on
every call), which gRPC sends only over TLS: a token without TLS raises
ValueError rather than going unsent or in the clear.
"""

import os

import grpc


def _pem(value, what):
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as f:
            data = f.read()
        if b"-----BEGIN " not in data:
            raise ValueError(f"{what} {os.fspath(value)}: not a PEM file")
        return data
    raise TypeError(f"{what}: a path or PEM bytes, not {type(value).__name__}")


def read_token_file(path):
    """The first non-blank, non-'#' line of `path` (the qlayer-server format)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line
    raise ValueError(f"auth_token_file {os.fspath(path)}: no token in the file")


def channel_credentials(*, tls=False, tls_ca=None, tls_cert=None, tls_key=None,
                        tls_server_name=None, auth_token=None, auth_token_file=None):
    """(grpc.ChannelCredentials or None for plaintext, extra channel options)."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together: give both or neither")
    if auth_token is not None and auth_token_file is not None:
        raise ValueError("give auth_token or auth_token_file, not both")
    if auth_token_file is not None:
        auth_token = read_token_file(auth_token_file)
    tls = tls or any(v is not None for v in (tls_ca, tls_cert, tls_server_name))
    if not tls:
        if auth_token:
            raise ValueError("a bearer token needs TLS (tls_ca= or tls=True): gRPC sends "
                             "call credentials only over TLS")
        return None, []
    creds = grpc.ssl_channel_credentials(root_certificates=_pem(tls_ca, "tls_ca"),
                                         private_key=_pem(tls_key, "tls_key"),
                                         certificate_chain=_pem(tls_cert, "tls_cert"))
    if auth_token:
        creds = grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(auth_token))
    options = []
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    return creds, options
