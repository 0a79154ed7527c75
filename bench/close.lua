-- Every request on a new connection (Connection: close): a TLS handshake per request.
wrk.headers["Connection"] = "close"
