"""Check over Envoy's plain-HTTP ext_authz protocol (``http_service``; Istio
``envoyExtAuthzHttp``): ``view`` reads a check request into the request view, ``answer``
renders a decision as the HTTP answer Envoy expects, ``protocol`` is the listener (llhttp on
the engine's event loop). The decision itself is the check pipeline's, as over gRPC."""
